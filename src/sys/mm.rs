//! A shared memory mapping of one page of a file.

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;

/// The first page of a file, mapped shared (every process mapping the file
/// sees every write), read and written as one atomic 64-bit counter.
pub(crate) struct SharedCounter {
    map: *mut AtomicU64,
}

// SAFETY: the mapping is only accessed through atomics and lives as long as
// the value.
unsafe impl Send for SharedCounter {}
// SAFETY: as above.
unsafe impl Sync for SharedCounter {}

const PAGE: usize = 4096;

impl SharedCounter {
    /// Maps the first page of `f`, which must be at least a page long.
    pub fn map(f: &File) -> io::Result<SharedCounter> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        // SAFETY: a new shared mapping of a file of at least PAGE bytes, at an
        // address the kernel chooses; unmapped in Drop.
        let p = unsafe {
            mmap(
                std::ptr::null_mut(),
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                f,
                0,
            )
        }?;
        Ok(SharedCounter { map: p.cast() })
    }

    pub fn get(&self) -> &AtomicU64 {
        self.word(0)
    }

    /// Number of 64-bit words in the page.
    pub const WORDS: usize = PAGE / 8;

    /// The page's `i`th 64-bit word (`i < WORDS`).
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < Self::WORDS);
        // SAFETY: a live, page-aligned mapping of PAGE bytes: word i is in
        // it and aligned for an AtomicU64.
        unsafe { &*self.map.add(i) }
    }
}

impl Drop for SharedCounter {
    fn drop(&mut self) {
        // SAFETY: the mapping made in map(), unused from here on.
        let _ = unsafe { rustix::mm::munmap(self.map.cast(), PAGE) };
    }
}
