//! A global allocator that counts live heap bytes and their peak, for tests that bound
//! what code allocates: the decoders' fuzz tests (`crates/net/tests/fuzz.rs`,
//! `crates/algos/tests/codec_fuzz.rs`) and the pool's scale test
//! (`crates/algos/tests/pool_scale.rs`). A test file includes it by path
//! (`#[path = "../../../test-support/counting_alloc.rs"] mod counting_alloc;`), which makes
//! it that test binary's global allocator.
#![allow(dead_code)] // each test file uses its own part

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Counts every allocation into [`LIVE`] and [`PEAK`] (`realloc` goes through `alloc`
/// and `dealloc`).
pub struct Counting;

/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most of [`LIVE`] since [`peak_of`] last reset it.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by a test while it measures: the counts are the whole process's.
pub static MEASURING: Mutex<()> = Mutex::new(());

/// Peak bytes allocated while running `f`, above what was live before.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}
