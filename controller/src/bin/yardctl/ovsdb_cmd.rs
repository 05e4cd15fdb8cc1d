//! `yardctl ovsdb`: placeholder until the OVSDB client lands.

/// Arguments of `yardctl ovsdb`.
#[derive(clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> Result<(), String> {
    Err("ovsdb is not implemented yet".into())
}
