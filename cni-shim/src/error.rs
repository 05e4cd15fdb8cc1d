//! The crate's one error type, and its mapping onto CNI error codes (CNI SPEC.md, "Error").
//!
//! Every message names what failed and with what input: an operator reads these in kubelet
//! events at 3 a.m.

/// Everything that can go wrong in the shim or in a call to the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request could not be encoded as JSON (a bug, not an input problem).
    #[error("cannot encode request to the controller as JSON: {0}")]
    Encode(String),
    /// The `controller` address is neither `unix:PATH` nor `tcp:HOST:PORT`.
    #[error("invalid controller address {controller:?}: {reason}")]
    ControllerAddress {
        /// The address as configured.
        controller: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting to, writing to or reading from the controller failed.
    #[error("controller {controller} unreachable ({what}): {source}")]
    Controller {
        /// The address as configured.
        controller: String,
        /// The step that failed: "connect", "send request", "read reply", ...
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The controller did not answer within the configured timeout.
    #[error("controller {controller} did not answer in time")]
    ControllerTimeout {
        /// The address as configured.
        controller: String,
    },
    /// The controller closed the connection before sending a full reply line.
    #[error("controller {controller} closed the connection before a full reply (got {partial:?})")]
    ControllerClosed {
        /// The address as configured.
        controller: String,
        /// Whatever arrived before the close.
        partial: String,
    },
    /// The controller's reply is not a valid [`crate::api::Reply`].
    #[error("controller {controller} sent an invalid reply ({reason}): {reply:?}")]
    ControllerReply {
        /// The address as configured.
        controller: String,
        /// The JSON decoder's complaint.
        reason: String,
        /// The reply line as received.
        reply: String,
    },
    /// The controller answered with an error (unknown pod, no address left, ...).
    #[error("controller refused {op} for {pod}: {msg} ({details})")]
    ControllerRefused {
        /// The request kind: "add", "del", "check", "status".
        op: &'static str,
        /// `namespace/pod` (or the node for status).
        pod: String,
        /// The CNI code the controller chose.
        code: u32,
        /// The controller's message.
        msg: String,
        /// The controller's details.
        details: String,
    },
    /// The controller answered Ok without the pod network an ADD or CHECK needs.
    #[error("controller answered {op} for {pod} without a pod network")]
    ControllerNoNetwork {
        /// The request kind.
        op: &'static str,
        /// `namespace/pod`.
        pod: String,
    },
    /// A required CNI environment variable is not set.
    #[error("environment variable {0} is required but not set")]
    MissingEnv(&'static str),
    /// A CNI environment variable is set but unusable.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Standard input could not be read.
    #[error("cannot read the network configuration from stdin: {0}")]
    ReadStdin(std::io::Error),
    /// The network configuration on stdin is not valid JSON.
    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(String),
    /// The network configuration is JSON but misses or misuses a field.
    #[error("invalid network configuration: field {field:?}: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration asks for a CNI version this plugin does not speak.
    #[error("CNI version {0:?} is not supported (supported: {supported})", supported = crate::SUPPORTED_VERSIONS.join(", "))]
    IncompatibleVersion(String),
    /// The container's network namespace cannot be opened or entered.
    #[error("network namespace {path:?} cannot be used ({what}): {source}")]
    Netns {
        /// The namespace path from CNI_NETNS.
        path: String,
        /// The step: "open", "enter", "return to the node namespace".
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A netlink operation on an interface failed.
    #[error("netlink: cannot {what} {iface}: {reason}")]
    Netlink {
        /// The operation: "create veth", "set address on", ...
        what: &'static str,
        /// The interface (and namespace, where it matters).
        iface: String,
        /// The kernel's or the library's error text.
        reason: String,
    },
    /// Turning tx checksum offload off failed.
    #[error("cannot turn tx checksum offload off on {iface}: {source}")]
    Offload {
        /// The interface.
        iface: String,
        /// The ioctl's error.
        source: std::io::Error,
    },
    /// CHECK found the interface different from what the controller holds.
    #[error("check failed for {iface}: {reason}")]
    CheckMismatch {
        /// The interface inspected.
        iface: String,
        /// What differs.
        reason: String,
    },
    /// STATUS: the controller cannot take pods now (or cannot be asked).
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// The controller reply contains a value the shim cannot apply (a malformed MAC, ...).
    #[error("controller sent an unusable {field}: {value:?}")]
    BadPodNetwork {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// CNI well-known error codes (CNI SPEC.md, section "Error"), plus the plugin-specific ones
/// this plugin uses: 100–109. The controller's own codes start at 110 and are passed through
/// unchanged, so a code tells which side failed.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like CNI_COMMAND, CNI_CONTAINERID, etc.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (e.g. failed to read network config bytes from stdin).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (the controller is unreachable or slow).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (cannot serve ADD requests).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific: the pod's network namespace cannot be opened or entered.
    pub const NETNS: u32 = 100;
    /// Plugin-specific: a netlink or ioctl operation failed.
    pub const LINK: u32 = 101;
    /// Plugin-specific: the controller broke the protocol (bad reply, closed early).
    pub const CONTROLLER_PROTOCOL: u32 = 102;
    /// Plugin-specific: CHECK found the interface differs from the controller's record.
    pub const CHECK_MISMATCH: u32 = 103;
    /// Plugin-specific: the controller refused and gave a code below 100 that the spec does not
    /// define for plugins; passed on as this.
    pub const CONTROLLER_REFUSED: u32 = 104;
}

impl Error {
    /// The CNI error code this error is reported with.
    pub fn cni_code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) => code::INCOMPATIBLE_VERSION,
            Error::MissingEnv(_) | Error::InvalidEnv { .. } => code::INVALID_ENV,
            Error::Decode(_) => code::DECODE_FAILURE,
            Error::ReadStdin(_) => code::IO_FAILURE,
            Error::InvalidConfig { .. } | Error::ControllerAddress { .. } => code::INVALID_CONFIG,
            Error::Controller { .. } | Error::ControllerTimeout { .. } => code::TRY_AGAIN_LATER,
            Error::ControllerClosed { .. }
            | Error::ControllerReply { .. }
            | Error::ControllerNoNetwork { .. }
            | Error::BadPodNetwork { .. }
            | Error::Encode(_) => code::CONTROLLER_PROTOCOL,
            Error::ControllerRefused { code, .. } => match *code {
                // Codes the spec lets any plugin use; anything else below 100 is reserved.
                1..=7 | 11 | 100.. => *code,
                _ => code::CONTROLLER_REFUSED,
            },
            Error::Netns { .. } => code::NETNS,
            Error::Netlink { .. } | Error::Offload { .. } => code::LINK,
            Error::CheckMismatch { .. } => code::CHECK_MISMATCH,
            Error::NotAvailable(_) => code::PLUGIN_NOT_AVAILABLE,
        }
    }
}
