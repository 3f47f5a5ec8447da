//! Running model work on one of rayon's worker threads.
//!
//! The model's maths is a long chain of parallel operations (gemm products split over rayon,
//! the fused ops' `par_chunks`). Issued from a thread outside the pool, every one of them
//! wakes the pool's sleeping workers and puts the caller to sleep until they finish; issued
//! from a worker, the caller takes a share of the work itself and hands the rest to the other
//! workers directly. A SmolLM2 training micro-batch (512 tokens, forward and backward, 2
//! threads) ran about 10 % faster on a worker, measured in one process alternating the two.

/// Runs `work` on one of rayon's worker threads (directly if already on one) and returns
/// its result.
pub fn on_worker<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_some() {
        work()
    } else {
        rayon::scope(|_| work())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_a_worker_and_returns_its_result() {
        assert_eq!(rayon::current_thread_index(), None);
        let inside = on_worker(rayon::current_thread_index);
        assert!(inside.is_some());
        // Nested calls run in place.
        assert_eq!(on_worker(|| on_worker(|| 6 * 7)), 42);
    }
}
