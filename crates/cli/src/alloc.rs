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

/// Keeps candle's own CPU thread pool out of the way: fedpace parallelises across clients
/// (and, for the CNN, across `client_threads` chunks run by idle threads of the client
/// pool), so every candle op should run on the thread that calls it.
///
/// candle 0.11 runs element-wise ops on large tensors on a global "barrier pool" of
/// `CANDLE_NUM_THREADS − 1` (default: cores − 1) workers, serialised by one lock, whose
/// caller and workers spin while they wait. With two clients training side by side on two
/// cores, most of the CPU went into that spinning (a W-MLP run: 4.4 s of user time, of
/// which ≈ 70 % in candle's barrier wait; 0.9 s with the pool off, same model bit for
/// bit — element-wise ops give the same values whichever thread computes them).
///
/// Sets `CANDLE_NUM_THREADS=1` (a pool of no workers: ops run inline) unless the user
/// set it.
///
/// Also sets `RAYON_NUM_THREADS` to the number of available cores (rayon's own default)
/// unless the user set it: without it, candle asks `num_cpus::get_physical()` at every
/// matrix product, which parses `/proc/cpuinfo` each time (≈ 13 % of a W-MLP run's CPU
/// time went into the kernel formatting that file).
///
/// Must run before the first candle op and before any other thread exists.
pub fn single_threaded_candle() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}
