//! The controller crate's one error type.

/// What went wrong in the controller, the demo or the CLI. Each message says what failed and
/// with what input, so an operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command (ip, ovs-vsctl, ethtool ...) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr, or why it could not start.
        detail: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The local demo could not be built or run.
    #[error("demo: {0}")]
    Demo(String),
    /// A connectivity probe could not run (not: a probe that ran and failed).
    #[error("probe: {0}")]
    Probe(String),
    /// A listener could not be opened.
    #[error("cannot listen for {what} on {target}: {source}")]
    Listen {
        /// What the listener is for (`CNI`, `OpenFlow`).
        what: &'static str,
        /// The address.
        target: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The source of Kubernetes objects stopped delivering changes.
    #[error("the source of Kubernetes objects ended")]
    SourceEnded,
    /// One of the controller's long-running tasks stopped.
    #[error("{0} stopped")]
    TaskStopped(&'static str),
    /// A node's OVSDB connection went away in the middle of a change.
    #[error("node {node}: OVSDB connection lost")]
    OvsdbLost {
        /// The node.
        node: String,
    },
    /// The controller's configuration (command line) is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// Talking OVSDB to a node failed.
    #[error("node {node}: OVSDB: {source}")]
    Ovsdb {
        /// The node.
        node: String,
        /// The client's error (boxed: it is large, and errors are the rare path).
        source: Box<ovsdb::Error>,
    },
    /// Talking OpenFlow to a node failed.
    #[error("node {node}: OpenFlow: {source}")]
    OpenFlow {
        /// The node.
        node: String,
        /// The connection's or codec's error (boxed, like the OVSDB one).
        source: Box<openflow::Error>,
    },
    /// The Kubernetes source failed.
    #[error(transparent)]
    Source(#[from] crate::source::Error),
    /// An address could not be allocated or restored.
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
}
