//! The integration tests: one binary (one link step), real processes.

mod api;
mod cli;
mod harness;
mod health;
mod isolation;
mod lifecycle;
mod logfiles;
mod observe;
mod order;
mod reliability;
mod reload;
mod top;
