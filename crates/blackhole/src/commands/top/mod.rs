//! `blackhole top`: a live dashboard over the control API.

use crate::cli::TopArgs;
use crate::client::{Client, ClientError};
use crate::code;

pub async fn run(_client: &Client, _args: TopArgs) -> Result<u8, ClientError> {
    eprintln!("blackhole top is not built yet");
    Ok(code::FAILED)
}
