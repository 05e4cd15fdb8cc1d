//! The harness's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong setting up or driving a namespace or an OVS sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command (ip, ovs-vsctl, ethtool ...) failed or could not start.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr, or why it could not start.
        detail: String,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A daemon's pidfile does not hold a process id.
    #[error("{}: not a process id: {content:?}", path.display())]
    Pidfile {
        /// The pidfile.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// Something awaited did not happen in time.
    #[error("{what} (waited {} s)", waited.as_secs())]
    Timeout {
        /// What did not happen, with the process or path concerned.
        what: String,
        /// How long it was awaited.
        waited: Duration,
    },
}
