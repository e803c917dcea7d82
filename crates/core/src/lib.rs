//! Pure logic of blackhole: everything that can be decided without touching
//! the operating system or a runtime.
//!
//! - [`config`]: the `blackhole.toml` model, its validation (every error at
//!   once, each with file, line and column) and service discovery.
//! - [`machine`]: the service state machine, a pure transition function.
//! - [`backoff`]: restart delays with injected randomness.
//! - [`graph`]: the dependency graph (start order, cycles).
//! - [`diff`]: what a configuration reload changes.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod diff;
pub mod graph;
pub mod machine;
pub mod signal;
