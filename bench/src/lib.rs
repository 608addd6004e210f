//! The benchmark harness of mpcvit.
//!
//! - [`relay`]: a userspace TCP relay that emulates a link (one-way delay
//!   and bandwidth per direction) between party 0 and party 1, needing no
//!   privileges, and counts what crossed it.
//! - [`procs`]: free ports, child processes, `/proc` readers (CPU seconds,
//!   peak resident memory).
//! - [`heads`]: head tables at a given μ for random-weight models.
//! - [`report`]: the CSV rows benchmarks append, and the Markdown tables
//!   and SVG figures of `bench/results/`.

pub mod heads;
pub mod procs;
pub mod relay;
pub mod report;

pub use relay::{Link, LinkSpec, Relay, RelayStats};
