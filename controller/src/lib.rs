//! The Switchyard controller: Kubernetes objects in, every node's Open vSwitch reconciled.
//!
//! Data flows one way: `source` (Kubernetes objects) → `model` (validated) → `compiler`
//! (per-node flows, a pure function) and `switch_config` (per-node OVSDB rows, pure) →
//! `reconcile`/`switch_flows` (the difference, sent in one bundle) — driven by `controller`,
//! the only module with long-running tasks. `demo` builds a local cluster around it.

pub mod compiler;
pub mod controller;
pub mod demo;
mod error;
pub mod ipam;
pub mod model;
pub mod pipeline;
pub mod reconcile;
pub mod source;
pub mod switch_config;
pub mod switch_flows;

pub use error::Error;
