//! A global allocator that counts the largest single allocation made while it is armed,
//! for the `pipeline` fuzz target and its corpus replay test (`tests/fuzz_corpus.rs`
//! includes this file): no request may make the server allocate more at once than the
//! negotiated limits allow (`smbdirect_server::fuzz::ALLOC_LIMIT`).
//!
//! It never fails an allocation itself (panicking inside the allocator aborts without a
//! useful message); `disarm` reports the largest request over the limit, and the caller
//! panics with it. With `SMBDIRECT_FUZZ_ALLOC_ABORT=1` set when `arm` is called, an
//! allocation over the limit aborts on the spot instead, so the crash backtrace
//! (libFuzzer prints one on SIGABRT) shows who allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct CappedAlloc;

static ARMED: AtomicBool = AtomicBool::new(false);
static ABORT: AtomicBool = AtomicBool::new(false);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static WORST: AtomicUsize = AtomicUsize::new(0);

impl CappedAlloc {
    fn note(size: usize) {
        if ARMED.load(Ordering::Relaxed) && size > LIMIT.load(Ordering::Relaxed) {
            if ABORT.load(Ordering::Relaxed) {
                std::process::abort();
            }
            WORST.fetch_max(size, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is passed unchanged to the system allocator, whose contract is the
// same; the bookkeeping above touches only atomics and never allocates.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: same layout as our caller gave us (GlobalAlloc::alloc's contract).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (we hand out only its blocks).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        // SAFETY: `ptr`/`layout` came from `System` (as in `dealloc`); `new_size` is our
        // caller's, under GlobalAlloc::realloc's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting allocations larger than `limit` bytes.
pub fn arm(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
    WORST.store(0, Ordering::Relaxed);
    ABORT.store(std::env::var_os("SMBDIRECT_FUZZ_ALLOC_ABORT").is_some_and(|v| v == "1"), Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
}

/// Stops counting; returns the largest allocation over the limit since `arm`, if any.
pub fn disarm() -> Option<usize> {
    ARMED.store(false, Ordering::Relaxed);
    Some(WORST.swap(0, Ordering::Relaxed)).filter(|&w| w > 0)
}
