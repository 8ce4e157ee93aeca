//! One writer at a time in an output directory (docs/outputs.md, "One process per run
//! directory").
//!
//! `fedpace run`, `resume`, `server`, `tune`, `study` and the Python package's
//! `fedpace.run` hold an exclusive lock (`flock(2)`, through [`std::fs::File::try_lock`])
//! on the output directory itself while they write it. A second writer on the same
//! directory — a `resume` typed while the run still goes, a `run --force` over it, a
//! second `fedpace.run` from another thread — is refused before it touches a file,
//! instead of both writing `metrics.jsonl` and leaving interleaved and duplicated lines.
//! The kernel drops the lock when the process ends, however it ends (`kill -9`
//! included), so no stale lock is ever left to clean up.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Held for as long as the run writes its directory; dropping it releases the lock.
pub struct RunLock {
    _dir: std::fs::File,
    /// The directory, when [`lock`] created it: removed again on drop if still empty, so
    /// that a command stopped before it wrote anything (a server stopped while waiting
    /// for its clients) leaves nothing behind.
    created: Option<PathBuf>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some(dir) = &self.created {
            // Fails, leaving it, unless it is empty.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Locks `dir` for this writer (creating it when `create`). Refused with
/// [`Error::Setup`] naming the directory when another writer holds it, in this process
/// or another. A directory that does not exist (and is not to be created), or a path
/// that is not a directory, is not locked: the caller's own check reports it. On a file
/// system without locks (some network mounts) nothing is locked.
pub fn lock(dir: &Path, create: bool) -> Result<Option<RunLock>> {
    if dir.exists() && !dir.is_dir() {
        return Ok(None);
    }
    let created = (create && !dir.exists()).then(|| dir.to_path_buf());
    if create {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Setup(format!("{}: cannot create: {e}", dir.display())))?;
    } else if !dir.is_dir() {
        return Ok(None);
    }
    let file = std::fs::File::open(dir)
        .map_err(|e| Error::Setup(format!("{}: cannot open: {e}", dir.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(RunLock {
            _dir: file,
            created,
        })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Setup(format!(
            "{}: another fedpace run is writing this directory (a run, a resume, a server, a \
             search, a study or a `fedpace.run` in Python); wait for it to end, or stop it \
             first (Ctrl-C leaves what it finished, to resume from)",
            dir.display()
        ))),
        // No locks on this file system: run unlocked, as before there were any.
        Err(std::fs::TryLockError::Error(_)) => Ok(None),
    }
}

/// Takes `dir` for a new run: locks it ([`lock`], creating it), then claims it
/// ([`crate::files::claim_out_dir`]: empty, or an earlier run there replaced with
/// `force`). The lock comes first, so a directory another writer holds is refused before
/// anything in it is read or removed.
pub fn claim(dir: &Path, force: bool, what: &str) -> Result<Option<RunLock>> {
    let lock = lock(dir, true)?;
    crate::files::claim_out_dir(dir, force, what)?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let first = lock(&dir, true).unwrap();
        assert!(first.is_some());
        // Refused in the same process too (a second `fedpace.run` from another thread).
        let e = lock(&dir, false).err().expect("refused");
        assert!(e.is_usage());
        let e = e.to_string();
        assert!(
            e.contains("another fedpace run is writing this directory"),
            "{e}"
        );
        drop(first);
        // Created by the lock and left empty: removed with it.
        assert!(!dir.exists());
        let again = lock(&dir, true).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        drop(again);
        assert!(dir.join("metrics.jsonl").exists());
        assert!(lock(&dir, false).unwrap().is_some());
        assert!(lock(&tmp.path().join("absent"), false).unwrap().is_none());
        // A file where the directory should be: left to the caller's own check.
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(lock(&file, true).unwrap().is_none());
    }
}
