//! One process at a time in a run directory (docs/outputs.md, "One process per run
//! directory").
//!
//! `fedpace run`, `resume`, `server`, `tune` and `study` hold an exclusive `flock(2)` on
//! the output directory itself while they write it. A second command on the same directory — a `resume` typed
//! while the run still goes, a `run --force` over it — is refused before it touches a
//! file, instead of both writing `metrics.jsonl` and leaving interleaved and duplicated
//! lines. The kernel drops the lock when the process ends, however it ends (`kill -9`
//! included), so no stale lock is ever left to clean up.

use anyhow::Result;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held for as long as the run writes its directory; dropping it releases the lock.
pub struct RunLock {
    _dir: std::fs::File,
    /// The directory, when [`lock`] created it: removed again on drop if still empty, so
    /// that a command stopped before it wrote anything (a server stopped while waiting
    /// for its clients) leaves nothing behind, as before the lock.
    created: Option<std::path::PathBuf>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some(dir) = &self.created {
            // Fails, leaving it, unless it is empty.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Locks `dir` for this process (creating it when `create`). Refused, as a usage error
/// naming the directory, when another process holds it. A directory that does not exist
/// (and is not to be created), or a path that is not a directory, is not locked: the
/// command's own check reports it.
pub fn lock(dir: &Path, create: bool) -> Result<Option<RunLock>> {
    if dir.exists() && !dir.is_dir() {
        // Not a directory: the command's own check says so, naming the flag.
        return Ok(None);
    }
    let created = (create && !dir.exists()).then(|| dir.to_path_buf());
    if create {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
    } else if !dir.is_dir() {
        return Ok(None);
    }
    let file = std::fs::File::open(dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", dir.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(Some(RunLock {
            _dir: file,
            created,
        }));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(crate::runner::UsageError(format!(
            "{}: another fedpace process (a run, a resume, a server, a search or a study) is \
             writing this directory; wait for it to end, or stop it first (Ctrl-C leaves what \
             it finished, to resume from)",
            dir.display()
        ))
        .into());
    }
    // A file system without locks (some network mounts): run unlocked, as before.
    Ok(None)
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
        let e = lock(&dir, false).err().expect("refused").to_string();
        assert!(e.contains("another fedpace process"), "{e}");
        drop(first);
        // Created by the lock and left empty: removed with it.
        assert!(!dir.exists());
        let again = lock(&dir, true).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        drop(again);
        assert!(dir.join("metrics.jsonl").exists());
        assert!(lock(&dir, false).unwrap().is_some());
        assert!(lock(&tmp.path().join("absent"), false).unwrap().is_none());
        // A file where the directory should be: left to the command's own check.
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(lock(&file, true).unwrap().is_none());
    }
}
