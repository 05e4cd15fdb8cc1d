//! The controller crate's one error type.
//!
//! One enum for the controller and `yardctl`; the protocol crates (`openflow`, `ovsdb`), the
//! CNI plugin, the target parser, the test harness and the demo each have their own, and
//! this one wraps theirs with the node or flag it concerns. `Config` is only for what the
//! operator must change on the command line; everything that fails at run time has its own
//! variant.

/// What went wrong in the controller or the CLI. Each message says what failed and with what
/// input, so an operator can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be opened (the address is in use — another controller? — or
    /// not one of this machine's).
    #[error(
        "cannot listen for {what} on {target}: {source} (is another controller running, or is the address not this machine's?)"
    )]
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
    /// Another controller took over this node's switch: it stole the node's OVSDB lock, or
    /// br-int made it OpenFlow master with a newer generation. This replica writes nothing
    /// more to the node until it leads again (a new term starts new agents).
    #[error(
        "node {node}: another controller has taken over this node's switch ({reason}); this replica writes nothing more to it until it leads again"
    )]
    Fenced {
        /// The node.
        node: String,
        /// What said so.
        reason: String,
    },
    /// A node's OVSDB connection went away in the middle of a change.
    #[error("node {node}: OVSDB connection lost")]
    OvsdbLost {
        /// The node.
        node: String,
    },
    /// The br-int OpenFlow listener could not be opened (`--openflow-listen`): the address
    /// is in use or not this machine's.
    #[error(
        "cannot listen for br-int OpenFlow connections on --openflow-listen {target}: {source} (is another controller running, or is the address not this machine's?)"
    )]
    OpenFlowListen {
        /// The `punix:`/`ptcp:` target.
        target: String,
        /// The listener's error (boxed, like the other OpenFlow ones).
        source: Box<openflow::Error>,
    },
    /// The controller's configuration (a command-line flag) is not usable: the message names
    /// the flag, its value and what would be accepted.
    #[error("configuration: {0}")]
    Config(String),
    /// The admin API or the metrics endpoint: a flag, a listener, or the server.
    #[error("{0}")]
    Admin(#[from] crate::admin::AdminError),
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
