//! The process's allocator policy: memory it frees stays in the process for reuse.
//!
//! A model held in its blocks alone (samd-model's `MatrixForm::Blocks`, the default)
//! widens each matrix to f32 for a prompt's product and frees it after: a few MB a
//! product, hundreds of products a prompt. glibc hands such blocks back to the kernel
//! (mapped on their own when over its threshold, and the heap's top trimmed), so each
//! widening faulted in fresh zeroed pages: a 1,000-token prefill on the 2-core dev
//! machine took 2.2-2.3 s against 1.8-1.9 s over f32 copies, with 1.5 M page faults
//! against 0.8 M. With freed memory kept, it takes as long as over the copies, in half
//! their memory (docs/BENCHMARKS.md).

/// Keeps freed memory in the process: called first thing in `main`, before the threads.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Blocks up to this size come from the heap, not mappings of their own: glibc's
        // own ceiling for its adaptive threshold. SmolLM2's widest layer matrix is 3.5 MB.
        const MMAP_THRESHOLD: i32 = 32 << 20;
        // SAFETY: `mallopt` only sets the allocator's parameters, under its own lock; a
        // value it refuses leaves the default in place, which is only slower.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
