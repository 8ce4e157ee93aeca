//! The run directory on disk: which directory may take a run, and how its files are
//! written (docs/outputs.md).
//!
//! Every final file goes to a temporary file beside it (`.NAME.tmp-PID`), is flushed and
//! fsynced, then renamed over NAME: a kill or a full disk leaves the old file or none,
//! never a truncated one, and the error names the file. `summary.json` is written last
//! and marks a complete (or cleanly interrupted) run.

use crate::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Files fedpace writes in a run directory.
pub const RUN_FILES: [&str; 7] = [
    "config.toml",
    "metrics.jsonl",
    "metrics.csv",
    "clients.csv",
    "model.safetensors",
    "summary.json",
    "report.html",
];
/// Subdirectories fedpace writes in a run directory.
pub const RUN_DIRS: [&str; 2] = ["trace", "tensorboard"];

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Replaces `path` atomically with what `fill` writes to the temporary path it is
/// given: fill, fsync, rename, fsync the directory. On error the temporary file is
/// removed and the message names `path`.
pub fn replace_with(path: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        fill(&tmp)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename itself durable; not every file system allows it.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::Failed(format!("writing {}: {e}", path.display())))
}

/// [`replace_with`] for content streamed into a buffered writer.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    replace_with(path, |tmp| {
        let mut w = BufWriter::new(File::create(tmp)?);
        write(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    })
}

/// [`write_atomic`] for bytes already in memory.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// Whether `dir` holds the output of a fedpace run (its config and metrics).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join("config.toml").is_file() && dir.join("metrics.jsonl").is_file()
}

/// Makes sure `dir` can take a new run without mixing it with anything: it must not
/// exist or be an empty directory. With `force`, an earlier run there is replaced:
/// fedpace's own files ([`RUN_FILES`], [`RUN_DIRS`], temporaries) and the run
/// directories below it (a quickstart's) are removed first; other files are kept.
/// `what` names the directory's origin in errors (`--out`, `[output] dir`).
pub fn claim_out_dir(dir: &Path, force: bool, what: &str) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Setup(format!(
            "{what} {}: exists and is not a directory",
            dir.display()
        )));
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Failed(format!("{what} {}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    if !force {
        let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
        let more = if names.len() > 4 {
            format!(", … {} entries", names.len())
        } else {
            String::new()
        };
        return Err(Error::Setup(format!(
            "{what} {}: not empty ({}{more}); choose a new directory, or pass --force to replace the run in it",
            dir.display(),
            shown.join(", ")
        )));
    }
    for name in &names {
        let p = dir.join(name);
        let ours_file = RUN_FILES.contains(&name.as_str()) || is_temp(name);
        let ours_dir = RUN_DIRS.contains(&name.as_str()) || (p.is_dir() && is_run_dir(&p));
        let removed = if ours_dir && p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else if ours_file && !p.is_dir() {
            std::fs::remove_file(&p)
        } else {
            continue;
        };
        removed.map_err(|e| Error::Failed(format!("--force: removing {}: {e}", p.display())))?;
    }
    Ok(())
}

/// `runs/<name>-<UTC timestamp>`, made unique.
pub fn default_out_dir(name: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = PathBuf::from("runs").join(format!("{name}-{}", utc_stamp(secs)));
    let mut p = base.clone();
    let mut i = 2;
    while p.exists() {
        p = PathBuf::from(format!("{}-{i}", base.display()));
        i += 1;
    }
    p
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_leaves_the_old_file_or_the_new_one_never_a_mix() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("summary.json");
        write_bytes_atomic(&p, b"old").unwrap();
        let e = write_atomic(&p, |w| {
            w.write_all(b"half of the new")?;
            Err(std::io::Error::other("No space left on device"))
        })
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("summary.json") && msg.contains("No space"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "temp removed"
        );
        write_bytes_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn out_dir_must_be_new_or_empty_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("run");
        claim_out_dir(&d, false, "--out").unwrap();
        std::fs::create_dir(&d).unwrap();
        claim_out_dir(&d, false, "--out").unwrap();
        std::fs::write(d.join("model.safetensors"), "precious").unwrap();
        let e = claim_out_dir(&d, false, "--out").unwrap_err().to_string();
        assert!(
            e.contains("not empty (model.safetensors)") && e.contains("--force"),
            "{e}"
        );
        // --force removes a run's files and sub-runs, keeps the user's own.
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(d.join("trace")).unwrap();
        std::fs::write(d.join(".summary.json.tmp-12"), "").unwrap();
        let sub = d.join("uniform");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("config.toml"), "").unwrap();
        std::fs::write(sub.join("metrics.jsonl"), "").unwrap();
        std::fs::create_dir(d.join("data")).unwrap();
        claim_out_dir(&d, true, "--out").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["data", "notes.txt"]);
        let f = tmp.path().join("afile");
        std::fs::write(&f, "").unwrap();
        let e = claim_out_dir(&f, true, "--out").unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
