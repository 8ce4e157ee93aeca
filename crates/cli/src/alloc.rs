//! glibc malloc tuning, applied once at start-up.
//!
//! A local epoch of the CNN allocates and frees tens of MB-sized tensors per step.
//! With glibc's defaults, blocks above the (dynamic) mmap threshold are `mmap`ed and
//! unmapped on every free, and freed heap tops above 128 KiB are trimmed back to the OS,
//! so every step pays page faults and zeroing again (≈ 30 % of a CNN epoch, measured in
//! the kernels crate). Raising both thresholds keeps the memory in the process's heap
//! for reuse. Peak memory is unchanged (the same blocks are live at the peak); resident
//! memory after a peak is simply not returned early.
//!
//! `FEDPACE_MALLOC_TUNING=0` turns the tuning off (to measure its effect).

/// Applies the tuning unless `FEDPACE_MALLOC_TUNING=0`. Returns whether it was applied.
pub fn tune() -> bool {
    if std::env::var_os("FEDPACE_MALLOC_TUNING").is_some_and(|v| v == "0") {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    /// Blocks up to this size come from the heap, not a fresh mmap.
    const MMAP_THRESHOLD: libc::c_int = 256 << 20;
    /// Free memory at the heap top is returned to the OS only past this size.
    const TRIM_THRESHOLD: libc::c_int = 512 << 20;
    // SAFETY: mallopt only changes allocator parameters; it is called before any other
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
