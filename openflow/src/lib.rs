//! OpenFlow 1.3 with the Open vSwitch extensions.
//!
//! Owns: wire types and their codec (no I/O), the `ovs-ofctl` text syntax, and a thin
//! tokio connection layer. Knows nothing about Kubernetes or Switchyard's pipeline.
//!
//! Layers, from the bottom:
//! - [`Field`], [`MatchField`], [`Match`]: OXM/NXM match fields with OVS's header choices;
//! - [`Action`], [`Instruction`]: standard and Nicira actions;
//! - [`Message`] and one type per message kind ([`FlowMod`], [`GroupMod`],
//!   [`MultipartRequest`]...), encoded with [`Message::encode`] and decoded with
//!   [`Message::decode`], pure functions over bytes;
//! - [`conn`]: a tokio connection to a switch (or a listener for switches), with xid
//!   correlation, echo keepalive, multipart reassembly and bundles.

#![warn(missing_docs)]

pub mod action;
pub mod conn;
mod error;
pub mod field;
pub mod instruction;
pub mod matching;
pub mod message;
pub mod port;
pub mod text;
mod wire;

pub use action::{
    Action, Controller2, Ct, CtZone, HashFields, Learn, LearnSpec, LearnSrc, Multipath,
    MultipathAlgorithm, Nat, NatKind, NxEnum, Subfield,
};
pub use conn::{Connection, Listener};
pub use error::{Error, Result};
pub use field::{Field, OxmHeader, Prerequisite};
pub use instruction::Instruction;
pub use matching::{Match, MatchField};
pub use message::{
    AggregateStats, Bucket, BundleAdd, BundleControl, BundleCtrlType, ErrorMsg, ExperimenterMsg,
    FeaturesReply, FlowMod, FlowModCommand, FlowMonitorRequest, FlowRemoved, FlowStats,
    FlowStatsRequest, FlowUpdate, FlowUpdateEvent, FlowUpdateFull, GroupDesc, GroupMod,
    GroupModCommand, GroupStats, GroupType, Header, Hello, Message, MeterBand, MeterMod,
    MeterModCommand, MonitorExt, MultipartReply, MultipartReplyBody, MultipartRequest,
    MultipartRequestBody, PacketIn, PacketIn2, PacketOut, PortDesc, PortReason, PortStats,
    PortStatus, Role, SwitchConfig, SwitchDesc, TableStats,
};

/// The OpenFlow version this crate speaks: 0x04, OpenFlow 1.3.
pub const OFP_VERSION: u8 = 0x04;

/// The README's examples are compiled (and the pure-codec one run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
