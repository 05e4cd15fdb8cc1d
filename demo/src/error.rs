//! The demo crate's one error type.

/// What went wrong building or running the demo cluster. Each message says what failed and
/// with what input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace, an OVS daemon or a command run in them failed.
    #[error(transparent)]
    Host(#[from] switchyard_testbed::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The demo could not be built or run (the controller, the CNI plugin, a pod or node
    /// that did not come up).
    #[error("demo: {0}")]
    Demo(String),
    /// A connectivity probe could not run (not: a probe that ran and failed).
    #[error("probe: {0}")]
    Probe(String),
}
