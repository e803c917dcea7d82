//! The operating-system layer: the only crate of blackhole with `unsafe`.
//!
//! - [`spawn`]: a spawn plan prepared entirely in the parent, and the
//!   fork/exec that carries it out without allocating in the child.
//! - [`spawner`]: the long-lived threads that fork (so that the
//!   parent-death signal is tied to threads that never exit) and the
//!   single reaper that owns every exit status.
//! - [`track`]: knowing every process of a service (cgroup, or process
//!   tree and session when there is no cgroup) and signalling them all.
//! - [`procfs`]: reading `/proc`.
//! - [`system`]: process-wide settings (subreaper, file limits).

pub mod asyncfd;
pub mod filewatch;
pub mod host;
pub mod kernfs;
pub mod notify;
pub mod pipe;
pub mod procfs;
pub mod spawn;
pub mod spawner;
pub mod system;
pub mod track;
pub mod verify;

pub use blackhole_core::machine::ExitStatus;
pub use blackhole_core::signal::Signal;
