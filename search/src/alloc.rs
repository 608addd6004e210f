//! The allocator setting for training.
//!
//! A training step allocates and frees the same megabyte-sized tensor buffers every time.
//! By default mimalloc returns freed memory to the OS after a delay ("purge"); when a step
//! takes longer than that delay (a busy machine), the next step faults every buffer in
//! again, and the kernel zeroes each (huge) page: measured on the dim-96 network, about
//! 700 page faults per step and a third of the process's CPU time in the kernel's page
//! clearing. With purging off, freed buffers are reused and the resident size stays at
//! the step's peak.

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (the `libmimalloc-sys`
/// bindings leave the option constants out and document passing the index).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Turns mimalloc's purging of freed memory off (as `MIMALLOC_PURGE_DELAY=-1` does),
/// unless the environment sets `MIMALLOC_PURGE_DELAY` itself. Call it first in `main`,
/// before any other thread exists; it only matters when mimalloc is the global
/// allocator.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores a number in mimalloc's option table. Its only
    // requirement is that no other thread sets options at the same time, which holds
    // because this runs before the program starts any thread; the allocator reads the
    // option at its next purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}
