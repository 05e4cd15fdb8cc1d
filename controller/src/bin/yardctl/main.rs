//! `yardctl`: the operator's CLI. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod ofctl;
mod ovsdb_cmd;

#[derive(Parser)]
#[command(name = "yardctl", version, about = "Switchyard operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// OpenFlow switch management, in the syntax of `ovs-ofctl -O OpenFlow13`.
    Ofctl(ofctl::Args),
    /// OVSDB client commands (RFC 7047).
    Ovsdb(ovsdb_cmd::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("yardctl: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ofctl(args) => ofctl::run(args).await,
            Command::Ovsdb(args) => ovsdb_cmd::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("yardctl: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
