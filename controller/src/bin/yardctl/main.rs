//! `yardctl`: the operator's CLI. Each subcommand lives in its own module: the controller's
//! admin API (`status`, `pods`, `pod`, `flows`, `diff`, `events`, `trace`), and one switch at
//! a time (`ofctl`, `ovsdb`).
//!
//! Exit codes: 0 done (`diff`: converged); 1 `diff` found differences, or an `ofctl`/`ovsdb`
//! command failed; 2 the command line or a local file is wrong; 3 the admin API cannot be
//! reached; 4 the controller does not have what was named (node, pod) or the request is
//! malformed; 5 the controller could not answer (br-int not connected, not implemented).

use clap::{CommandFactory, Parser, Subcommand};

mod admin_cmd;
mod ofctl;
mod ovsdb_cmd;

#[derive(Parser)]
#[command(
    name = "yardctl",
    version,
    about = "Switchyard operator CLI",
    after_help = "The admin commands reach the controller at --server (env SWITCHYARD_ADMIN, default unix:/run/switchyard/admin.sock).\nExit codes: 0 ok, 1 diff differs / ofctl or ovsdb failed, 2 usage, 3 unreachable, 4 not found, 5 the controller could not answer."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Admin(admin_cmd::AdminCommand),
    /// OpenFlow switch management, in the syntax of `ovs-ofctl -O OpenFlow13`.
    Ofctl(ofctl::Args),
    /// OVSDB client commands (RFC 7047).
    Ovsdb(ovsdb_cmd::Args),
    /// Print a shell completion script (`yardctl completions bash > /etc/bash_completion.d/yardctl`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "yardctl", &mut script);
        // A closed pipe (`| head`) is the reader's choice, not an error.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return std::process::ExitCode::SUCCESS;
    }
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
    runtime.block_on(async {
        let result = match cli.command {
            Command::Admin(command) => {
                return match admin_cmd::run(command).await {
                    Ok(exit) => std::process::ExitCode::from(exit as u8),
                    Err(f) => {
                        eprintln!("yardctl: {}", f.message);
                        std::process::ExitCode::from(f.exit as u8)
                    }
                };
            }
            Command::Ofctl(args) => ofctl::run(args).await,
            Command::Ovsdb(args) => ovsdb_cmd::run(args).await,
            Command::Completions { .. } => Ok(()),
        };
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("yardctl: {message}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
