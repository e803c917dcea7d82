//! The `blackhole.toml` configuration: model, loading, validation,
//! discovery. The reference is the README's "Configuration reference".

pub mod diag;
pub mod discovery;
pub mod dotenv;
mod load;
pub mod raw;
pub mod spec;
pub mod value;

pub use diag::{Diagnostic, Location, Severity, SourceText};
pub use discovery::{Account, Discovery, Found, FsDiscovery, Host};
pub use load::{Config, LoadOptions, Loaded, control_socket, load, load_text};
pub use raw::{
    CgroupMode, Condition, IdOrName, LogFormat, ProbeKind, RLIM_INFINITY, RestartPolicy,
    ServiceKind,
};
pub use spec::{Check, Dependency, OrchestratorSpec, Origin, Probe, RestartSpec, ServiceSpec};
pub use value::LogLevel;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
