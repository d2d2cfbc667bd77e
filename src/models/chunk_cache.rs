//! Keeps a few freed interpreter stack chunks for reuse, in every model.
//!
//! CPython (3.11+) runs a thread's or a greenlet's frames on "data stack"
//! chunks of 16 KiB and more, which it takes from and gives back to its arena
//! allocator, `mmap` and `munmap` by default. A handler that starts on an
//! empty stack takes a chunk and frees it when it returns: under `-g` and
//! greenlets every event runs in a new greenlet, and in the thread model on
//! a pool thread with no Python frame of its own, so each event cost an
//! `mmap`, an `munmap` (a TLB flush on every core running one of the
//! process's threads) and the page faults of touching fresh memory: more
//! than any other single step of an event (the thread model spent 4.6 % of
//! its CPU in `munmap` alone). Wrapping the arena allocator with a small
//! cache of freed blocks up to [`MAX_CACHED_SIZE`] turns that into a list
//! push and pop; obmalloc's own arenas (1 MiB) still go straight to the
//! original allocator, and at most [`MAX_CACHED`] blocks are kept. The server
//! installs it when it starts (`server/mod.rs`, `start`), whatever the model.
//!
//! Every block, cached or not, comes from the original allocator, so a block
//! allocated before the wrapper was installed may be freed through it and
//! the other way round.

use std::ffi::c_void;
use std::sync::{Mutex, Once, OnceLock};

use pyo3::prelude::*;

/// Blocks kept at most (16 KiB each, typically: 1 MiB in all): one per
/// event in flight at 64 connections.
const MAX_CACHED: usize = 64;
/// Larger blocks are not cached.
const MAX_CACHED_SIZE: usize = 64 * 1024;

/// CPython's `PyObjectArenaAllocator` (cpython/objimpl.h, unchanged since
/// 3.4; not in the limited API, hence declared here).
#[repr(C)]
#[derive(Clone, Copy)]
struct ArenaAllocator {
    ctx: *mut c_void,
    alloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize)>,
}

unsafe extern "C" {
    fn PyObject_GetArenaAllocator(allocator: *mut ArenaAllocator);
    fn PyObject_SetArenaAllocator(allocator: *mut ArenaAllocator);
}

/// The allocator the wrapper passes on to.
struct Original(ArenaAllocator);
// SAFETY: the allocator's context pointer is CPython's (null for the default
// allocator); its functions may be called from any thread that may allocate.
unsafe impl Send for Original {}
// SAFETY: as above; it is never changed once stored.
unsafe impl Sync for Original {}

static ORIGINAL: OnceLock<Original> = OnceLock::new();

/// Freed blocks: (address, size).
static CACHE: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn cache() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

unsafe extern "C" fn cached_alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size <= MAX_CACHED_SIZE {
        let mut cached = cache();
        if let Some(i) = cached.iter().rposition(|&(_, s)| s == size) {
            return cached.swap_remove(i).0 as *mut c_void;
        }
    }
    match ORIGINAL.get() {
        Some(Original(ArenaAllocator {
            ctx,
            alloc: Some(alloc),
            ..
        })) => {
            // SAFETY: the original allocator, called as CPython would.
            unsafe { alloc(*ctx, size) }
        }
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn cached_free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if ptr.is_null() {
        return;
    }
    if size <= MAX_CACHED_SIZE {
        let mut cached = cache();
        if cached.len() < MAX_CACHED {
            cached.push((ptr as usize, size));
            return;
        }
    }
    if let Some(Original(ArenaAllocator {
        ctx,
        free: Some(free),
        ..
    })) = ORIGINAL.get()
    {
        // SAFETY: `ptr` came from the original allocator with this `size`
        // (cached blocks are never split or resized).
        unsafe { free(*ctx, ptr, size) }
    }
}

static INSTALL: Once = Once::new();

/// Whether the caching wrapper is installed (for tests: it is from the
/// server's start on).
#[pyfunction]
pub fn stack_chunks_cached() -> bool {
    ORIGINAL.get().is_some()
}

/// Installs the caching wrapper around CPython's arena allocator (once per
/// process; later calls do nothing).
pub fn install(_py: Python<'_>) {
    INSTALL.call_once(|| {
        let mut original = ArenaAllocator {
            ctx: std::ptr::null_mut(),
            alloc: None,
            free: None,
        };
        // SAFETY: the GIL is held (`_py`), as these calls require; the
        // struct is a valid `PyObjectArenaAllocator` to fill in.
        unsafe { PyObject_GetArenaAllocator(&mut original) };
        if original.alloc.is_none() || original.free.is_none() {
            return;
        }
        cache().reserve_exact(MAX_CACHED);
        // The original must be in place before the wrapper can be called.
        if ORIGINAL.set(Original(original)).is_err() {
            return;
        }
        let mut wrapper = ArenaAllocator {
            ctx: std::ptr::null_mut(),
            alloc: Some(cached_alloc),
            free: Some(cached_free),
        };
        // SAFETY: the GIL is held; CPython copies the struct.
        unsafe { PyObject_SetArenaAllocator(&mut wrapper) };
    });
}
