//! Allocator settings for the host's binaries, which use mimalloc as their global allocator.

/// mimalloc's index of `mi_option_purge_delay` (mimalloc.h of the v3 sources that
/// libmimalloc-sys 0.1.49 builds by default; the crate names no constant for it).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory that tensors freed mapped for reuse instead of returning it to the OS after
/// mimalloc's default delay (1 s in mimalloc v3). A training step allocates and frees logits
/// and activations of hundreds of MB at a high rate; returned pages come back zero-filled by
/// the kernel on their next use (a 5×512-token SmolLM2 step ran 1.6× faster than with the 1 s
/// default, 2.3× faster than with 10 ms), at the price of a higher peak (8.0 instead of about
/// 7 GiB there: freed blocks wait for reuse instead of going back). `MIMALLOC_PURGE_DELAY` (or
/// its old name `MIMALLOC_RESET_DELAY`) in the environment still wins. Call first thing in
/// `main`.
pub fn keep_freed_memory() {
    let chosen = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if !chosen {
        // SAFETY: sets a global option value; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_index_is_the_purge_delay() {
        // purge_delay's default in mimalloc v3 is 1000 ms; its neighbours' defaults differ
        // (deprecated_eager_commit_delay 1, use_numa_nodes 0).
        let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
        assert_eq!(get(PURGE_DELAY - 1), 1);
        assert_eq!(get(PURGE_DELAY + 1), 0);
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && std::env::var_os("MIMALLOC_RESET_DELAY").is_none()
        {
            assert_eq!(get(PURGE_DELAY), 1000);
            keep_freed_memory();
            assert_eq!(get(PURGE_DELAY), -1);
        }
    }
}
