//! Per-thread heap accounting, so a fuzz case's allocations can be held to a budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting the live and peak heap bytes of each thread that has asked for
/// it (the thread running a fuzz case). Install it in a test binary to hold cases to their
/// [`super::AllocBudget`]; without it budgets are not checked.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: detnas_core::mutate::TrackingAlloc = detnas_core::mutate::TrackingAlloc;
/// ```
///
/// Memory is counted by the thread that allocates it: a case's work done on other threads
/// (thread pools of a native library) is not counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrackingAlloc;

#[derive(Clone, Copy)]
struct Counters {
    on: bool,
    live: i64,
    peak: i64,
}

thread_local! {
    // Const-initialised and without a destructor: usable from inside the allocator at any time.
    static COUNTERS: Cell<Counters> = const { Cell::new(Counters { on: false, live: 0, peak: 0 }) };
}

fn count(bytes: i64) {
    let _ = COUNTERS.try_with(|c| {
        let mut v = c.get();
        if v.on {
            v.live += bytes;
            v.peak = v.peak.max(v.live);
            c.set(v);
        }
    });
}

fn size(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

// SAFETY: every call is forwarded unchanged to `System`; only thread-local counters are updated.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(size(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(size(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) };
        count(-size(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(size(new_size) - size(layout.size()));
        }
        p
    }
}

/// Starts counting the calling thread's allocations from zero. `false` when [`TrackingAlloc`] is
/// not the global allocator (nothing is counted then).
pub(super) fn start() -> bool {
    COUNTERS.with(|c| c.set(Counters { on: true, live: 0, peak: 0 }));
    let probe = std::hint::black_box(vec![0u8; 64]);
    let counted = COUNTERS.with(|c| c.get().peak) >= 64;
    drop(probe);
    COUNTERS.with(|c| c.set(Counters { on: true, live: 0, peak: 0 }));
    counted
}

/// Stops counting and returns the peak live bytes since [`start`].
pub(super) fn stop() -> u64 {
    COUNTERS.with(|c| {
        let v = c.get();
        c.set(Counters { on: false, live: 0, peak: 0 });
        u64::try_from(v.peak).unwrap_or(0)
    })
}
