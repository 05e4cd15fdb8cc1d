//! The Switchyard CNI plugin and the pod-attach protocol it speaks with the controller.
//!
//! - [`api`]: the pod-attach protocol (request/reply types, the blocking client, the host
//!   veth naming rule). The controller depends on this crate for these types only.
//! - [`plugin`]: the CNI plugin itself (CNI SPEC.md 1.0.0/1.1.0), as a function of its
//!   environment and stdin; `src/main.rs` is a thin wrapper around [`plugin::execute`].
//! - [`link`]: the netlink work on the veth pair, each step on a thread inside the right
//!   network namespace.
//! - [`offload`]: `ethtool -K IF tx off` as an ioctl (the userspace datapath needs it).
//! - [`timing`]: the phase-timing line on stderr (`SWITCHYARD_CNI_TIMING=1`).
//! - [`Error`]: the crate's one error type, with its CNI error code ([`Error::cni_code`]).
//!
//! Only `api` is meant for the controller; the rest is the plugin's machinery, public so it
//! can be tested and reused (e.g. by a demo that plays the container runtime).

#![warn(missing_docs)]

pub mod api;
mod error;
pub mod link;
pub mod offload;
pub mod plugin;
pub mod timing;

pub use error::{Error, code};

/// CNI versions this plugin speaks (CNI SPEC.md, "Version"). The ADD result follows the
/// configuration's version: `ips[].version` for 0.3.x/0.4.0 (1.0.0 removed it), interface
/// `mtu` from 1.1.0 on; CHECK needs 0.4.0, STATUS and GC 1.1.0.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
