//! Criterion micro-benchmarks of blackhole's hot paths, beside the
//! whole-system harness in `bench/`: line splitting, log formatting, the
//! state machine and status serialisation, each in `benches/`.
//!
//! The library is empty; it exists because a package needs a target, and
//! the benchmarks reach the other crates only through their public APIs.
//! Run them with `cargo bench -p blackhole-microbench`.
#![forbid(unsafe_code)]
