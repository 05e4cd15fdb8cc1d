//! The Switchyard CNI plugin and the pod-attach protocol it speaks with the controller.
//!
//! - [`api`]: the pod-attach protocol (request/reply types, the blocking client, the host
//!   veth naming rule). The controller depends on this crate for these types only.
//! - [`Error`]: the crate's one error type, with its CNI error code ([`Error::cni_code`]).

#![warn(missing_docs)]

pub mod api;
mod error;
pub mod link;
mod offload;
pub mod plugin;

pub use error::{Error, code};

/// CNI versions this plugin speaks (CNI SPEC.md, "Version"): the results it prints follow
/// the 1.x result format, which is a superset of the 0.3.x/0.4.0 one for what we return.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
