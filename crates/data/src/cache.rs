//! The fetched-data cache is checked on first use, not trusted (docs/data-formats.md,
//! "Fetched data").
//!
//! Every file `fedpace datasets fetch` installs has a pinned SHA-256 ([`crate::fetch`](mod@crate::fetch)).
//! Before a data set is used, each pinned file that is present is hashed and compared;
//! a well-formed but different file is an [`Error::Corrupt`] naming it. What was
//! verified is remembered in a stamp file, `<data_dir>/<name>/.fedpace-verified`, one
//! line per file — pinned hash, size, modification time (ns), relative path — so later
//! uses cost one `stat` per file. A file whose size or time changed is hashed again.
//!
//! Files under other names than the pinned ones (e.g. MNIST as `*.gz`, or extra play
//! files) are a user's own and are used unverified; `data.verify = false` turns the
//! check off for a data set whose pinned names hold the user's own files. A data set
//! holding only some of its pinned files, and no `.gz` copy of the others, is refused:
//! an interrupted first fetch must not leave Shakespeare with fewer plays unnoticed.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// Name of the stamp file inside a data set's directory.
pub const STAMP: &str = ".fedpace-verified";

/// Hex SHA-256 of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The stamp line of a file as it is now: `sha size mtime_ns path`, or `None` when the
/// file system gives no modification time (then nothing is remembered).
fn stamp_line(dir: &Path, rel: &str, sha: &str) -> Option<String> {
    let meta = std::fs::metadata(dir.join(rel)).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{sha} {} {mtime} {rel}", meta.len()))
}

fn read_stamp(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join(STAMP))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Writes the stamp atomically (temporary file + rename). A stamp that cannot be
/// written (a read-only data directory) only means the files are hashed again next
/// time, so that error is not reported.
fn write_stamp(dir: &Path, lines: &BTreeSet<String>) {
    let tmp = dir.join(format!("{STAMP}.tmp-{}", std::process::id()));
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    if std::fs::write(&tmp, body).is_ok() && std::fs::rename(&tmp, dir.join(STAMP)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Checks the pinned files (`(path relative to dir, SHA-256)`) of data set `name` in
/// `dir` as described in the module docs. Returns how many pinned files are present
/// (0: the directory holds the user's own files, or nothing).
pub fn verify(name: &str, dir: &Path, files: &[(&str, &str)]) -> Result<usize> {
    let present: Vec<&(&str, &str)> = files
        .iter()
        .filter(|(f, _)| dir.join(f).is_file())
        .collect();
    if present.is_empty() {
        return Ok(0);
    }
    // A pinned file the user replaced by a gzipped copy of their own is accounted for.
    let missing = files
        .iter()
        .find(|(f, _)| !dir.join(f).is_file() && !dir.join(format!("{f}.gz")).is_file());
    if let Some((missing, _)) = missing {
        return Err(Error::format(
            dir,
            format!(
                "{} of the {} files of {name} (missing: {missing}); an interrupted fetch? \
                 run `fedpace datasets fetch {name}`",
                present.len(),
                files.len()
            ),
        ));
    }
    let stamp = read_stamp(dir);
    let mut kept = stamp.clone();
    for (rel, sha) in present.iter().copied() {
        let line = stamp_line(dir, rel, sha);
        if line.as_ref().is_some_and(|l| stamp.contains(l)) {
            continue;
        }
        let path = dir.join(rel);
        let got = sha256_file(&path)?;
        if got != *sha {
            return Err(Error::Corrupt {
                path: path.display().to_string(),
                got,
                expected: sha.to_string(),
                dataset: name.to_string(),
            });
        }
        // Forget older lines for this file, remember this one.
        kept.retain(|l| !l.ends_with(&format!(" {rel}")));
        kept.extend(line);
    }
    if kept != stamp {
        write_stamp(dir, &kept);
    }
    Ok(present.len())
}

/// Records `files` (just verified, e.g. by a fetch) in `dir`'s stamp.
pub fn remember(dir: &Path, files: &[(&str, &str)]) {
    let mut lines = read_stamp(dir);
    for (rel, sha) in files {
        lines.retain(|l| !l.ends_with(&format!(" {rel}")));
        lines.extend(stamp_line(dir, rel, sha));
    }
    write_stamp(dir, &lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optdigits::sha256_hex;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fedpace-cache-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    #[test]
    fn a_wrong_file_under_a_pinned_name_is_an_error_naming_it() {
        let d = tmpdir("wrong");
        std::fs::write(d.join("a"), b"abc").unwrap();
        std::fs::write(d.join("sub/b"), b"xyz").unwrap();
        let files = [("a", sha256_hex(b"abc")), ("sub/b", sha256_hex(b"xy"))];
        let files: Vec<(&str, &str)> = files.iter().map(|(f, s)| (*f, s.as_str())).collect();
        let e = verify("toy", &d, &files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: SHA-256 3608bca1", d.join("sub/b").display())),
            "{e}"
        );
        assert!(
            e.contains("run `fedpace datasets fetch toy` to replace it"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn verified_files_are_remembered_until_they_change() {
        let d = tmpdir("stamp");
        std::fs::write(d.join("a"), b"abc").unwrap();
        let sha = sha256_hex(b"abc");
        let files = [("a", sha.as_str())];
        assert_eq!(verify("toy", &d, &files).unwrap(), 1);
        let stamp = std::fs::read_to_string(d.join(STAMP)).unwrap();
        assert!(
            stamp.starts_with(&format!("{sha} 3 ")) && stamp.ends_with(" a\n"),
            "{stamp}"
        );
        // Remembered: same size and time are trusted without hashing (shown by
        // swapping in other bytes of the same length and restoring the time).
        let t = std::fs::metadata(d.join("a")).unwrap().modified().unwrap();
        std::fs::write(d.join("a"), b"xyz").unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("a"))
            .unwrap();
        f.set_modified(t).unwrap();
        drop(f);
        verify("toy", &d, &files).unwrap();
        // Changed content (other size) is hashed again and caught.
        std::fs::write(d.join("a"), b"abcd").unwrap();
        assert!(matches!(
            verify("toy", &d, &files),
            Err(Error::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn own_files_pass_unverified_but_a_partial_set_is_refused() {
        let d = tmpdir("partial");
        let files = [("a", sha256_hex(b"abc")), ("b", "11".to_string())];
        let files: Vec<(&str, &str)> = files.iter().map(|(f, s)| (*f, s.as_str())).collect();
        assert_eq!(verify("toy", &d, &files).unwrap(), 0);
        std::fs::write(d.join("a"), b"abc").unwrap();
        let e = verify("toy", &d, &files).unwrap_err().to_string();
        assert!(e.contains("1 of the 2 files of toy (missing: b)"), "{e}");
        // The user's own gzipped copy of `b` stands in for it (used unverified).
        std::fs::write(d.join("b.gz"), b"mine").unwrap();
        assert_eq!(verify("toy", &d, &files).unwrap(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
