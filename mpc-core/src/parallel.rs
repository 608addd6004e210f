//! Data parallelism of the local kernels: the ring matrix product
//! ([`crate::ring::matmul_acc`], in bands of rows) and DCF evaluation
//! ([`crate::dcf::eval_batch_stopping`], in chunks of points), on rayon's
//! current pool. The pool is the process's choice (the servers' `--threads`
//! builds the global one; a test may `install` its own); one thread runs
//! everything in place. Results never depend on the number of threads:
//! every part writes its own outputs, and ring sums are exact.

/// Inner-loop steps (multiply-adds, tree levels) below which a kernel
/// stays on the calling thread: handing a part to another thread costs a
/// few microseconds, about 2^17 multiply-adds. (The crate's unit tests
/// split from 64 steps on, so that their small inputs take the parallel
/// paths.)
pub const MIN_WORK: usize = if cfg!(test) { 64 } else { 1 << 17 };

/// Into how many parts to split `work` steps that come in `pieces`
/// indivisible pieces: 1 on a one-thread pool or for small work, else up
/// to one part per thread.
pub fn parts(work: usize, pieces: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads <= 1 || work < 2 * MIN_WORK {
        return 1;
    }
    threads.min(pieces).min(work / MIN_WORK).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_work_and_one_thread_stay_whole() {
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| parts(1 << 30, 64)), 1);
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        assert_eq!(four.install(|| parts(MIN_WORK, 64)), 1);
        assert_eq!(four.install(|| parts(1 << 30, 64)), 4);
        assert_eq!(four.install(|| parts(1 << 30, 3)), 3);
        assert_eq!(four.install(|| parts(3 * MIN_WORK, 64)), 3);
    }
}
