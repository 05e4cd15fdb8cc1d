//! The `switchyard-cni` executable: the container runtime runs it per CNI SPEC.md with
//! `CNI_*` variables and the network configuration on stdin; see [`switchyard_cni::plugin`].

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let outcome = switchyard_cni::plugin::execute(&var, &mut std::io::stdin().lock());
    let mut stdout = std::io::stdout().lock();
    // If stdout is gone the runtime cannot read anything anyway; the exit code still speaks.
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    if outcome.exit_code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
