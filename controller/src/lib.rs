//! The Switchyard controller: Kubernetes objects in, every node's Open vSwitch reconciled.
//!
//! Data flows one way: `source` (object deltas) → `state` (the one owner of the validated
//! model, addresses and attachments; versioned change sets) → `features` (the flows of one
//! owner on one node, pure) and `switch_config` (a node's OVSDB rows, pure) → `realise` (the
//! difference, in dependency order) — sent by each node's `agent`. `controller` wires the
//! tasks; `cni_server` answers the CNI shim. (The local demo is its own crate, demo/.)

pub mod admin;
pub mod agent;
pub mod audit;
pub mod cli;
pub mod cni_server;
pub mod controller;
mod error;
pub mod features;
pub mod ids;
pub mod ipam;
pub mod leader;
pub mod listen;
pub mod model;
pub mod node_certificate;
pub mod node_setup;
pub mod pipeline;
pub mod pkcs10;
pub mod policy;
pub mod realise;
pub mod reject;
pub mod signer;
pub mod source;
pub mod state;
pub mod switch_config;
pub mod telemetry;
pub mod trace;

pub use error::Error;
