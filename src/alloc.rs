//! Heap settings for processes that move large buffers.
//!
//! glibc serves an allocation above its mmap threshold (128 KiB at start,
//! raised as large blocks are freed) with a fresh mapping: each chunk-sized
//! buffer freed goes back to the kernel, and the next one is faulted in and
//! zeroed again, page by page. In a profile of a 1 GiB backup, page faults
//! and page clearing were about a tenth of the storage servers' CPU.
//! Keeping such buffers on the heap lets the next message reuse them.

/// Largest allocation kept on the heap: above every chunk, message and
/// block buffer (chunks are at most 2 MiB, the chunker's blocks 8 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 16 << 20;

/// Free memory at the top of a heap that is kept rather than returned: a
/// few transfers' worth of buffers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Extra room taken each time a heap grows, so that a burst of buffers
/// does not grow it one system call at a time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 16 << 20;

/// Keep chunk-sized buffers on the heap (glibc on Linux; elsewhere this does
/// nothing). Call first in `main`, before any thread starts.
pub fn keep_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before other threads exist, with valid parameters and values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}
