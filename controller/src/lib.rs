//! The Switchyard controller: Kubernetes sources, model, flow compiler, reconciler.

pub mod source;
pub mod ipam;
pub mod model;
pub mod pipeline;
