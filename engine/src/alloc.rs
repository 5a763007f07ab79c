//! Process-wide heap settings for large tensors (glibc; no-ops elsewhere).

/// Keeps freed tensor buffers in the process instead of returning them to the kernel.
///
/// candle allocates a fresh buffer per op; glibc serves blocks above its mmap threshold (at most
/// 32 MiB) with a fresh `mmap` and unmaps them on free, so every large activation of the VAE
/// (up to ~1 GB) and the DiT's 32 MiB attention scores are page-faulted and zeroed by the kernel
/// again on each use. With mmap disabled and a high trim threshold, they are recycled from the
/// heap: VAE decode -36%, DiT step -3..5% on the 2-core box (engine/PERF.md). Process-wide and
/// glibc-only (a no-op elsewhere); the peak RSS then stays reserved. Call it once at start-up
/// (the bench and the CLI do).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4.
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: mallopt only changes allocator parameters; it takes the arena lock itself.
        unsafe {
            mallopt(-1, i32::MAX);
            mallopt(-4, 0);
        }
    }
}

/// Hands memory freed so far back to the kernel (glibc `malloc_trim`; a no-op elsewhere).
/// Loading converts and packs weights through temporary buffers; with [`tune_allocator`]'s
/// settings the heap would otherwise keep them resident after a model is built.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only returns free heap pages; it takes the arena locks itself.
        unsafe {
            malloc_trim(0);
        }
    }
}
