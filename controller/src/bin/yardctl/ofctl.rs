//! `yardctl ofctl`: placeholder until the OpenFlow text syntax lands.

/// Arguments of `yardctl ofctl`.
#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> Result<(), String> {
    Err("ofctl is not implemented yet".into())
}
