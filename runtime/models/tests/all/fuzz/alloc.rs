//! The largest single allocation a thread asks for while it is watched: how the GGUF
//! properties check that no count or length a file declares is allocated before the file's
//! bytes back it.
//!
//! The test binary's global allocator is the system's, plus a thread-local record of the
//! largest request (`alloc`, `alloc_zeroed`, the new size of a `realloc`) made by a thread
//! inside [`largest_allocation`]. Other threads, and other tests, are not watched. A request
//! too large to be served still aborts the binary (`handle_alloc_error`), which fails the test
//! run as surely.

// The one `unsafe` of the tests: a `GlobalAlloc` impl, forwarding to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// `Some(largest request so far)` while this thread is watched.
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Notes a request of `size` bytes on a watched thread.
fn record(size: usize) {
    // `try_with`: allocations during thread teardown, after the slot is gone, are not watched.
    let _ = LARGEST.try_with(|largest| {
        if let Some(n) = largest.get() {
            largest.set(Some(n.max(size)));
        }
    });
}

/// `System`, recording request sizes on watched threads.
struct Watching;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract. `record` touches only a const-initialized thread-local `Cell` without a
// destructor: it never allocates, so it cannot re-enter the allocator.
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watching = Watching;

/// Runs `f` and returns what it returned with the largest single allocation, in bytes, this
/// thread asked for meanwhile.
pub(crate) fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let outer = LARGEST.replace(Some(0));
    let out = f();
    let largest = LARGEST.replace(outer).unwrap_or(0);
    // A watch inside another: the outer one saw this one's requests too.
    if let Some(n) = outer {
        LARGEST.set(Some(n.max(largest)));
    }
    (out, largest)
}

#[test]
fn the_largest_request_of_the_watched_thread_is_recorded() {
    let (len, largest) = largest_allocation(|| {
        let v = vec![7u8; 3 << 20];
        std::hint::black_box(&v).len()
    });
    assert_eq!(len, 3 << 20);
    assert!(largest >= 3 << 20, "{largest}");
    // Another thread's requests are not this thread's.
    let ((), largest) = largest_allocation(|| {
        std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 8 << 20])))
            .join()
            .unwrap();
    });
    assert!(largest < 8 << 20, "{largest}");
}
