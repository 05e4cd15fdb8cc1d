//! The OpenFlow 1.3 message set: [`Message`] unifies one type per message kind (h2
//! style, one file per kind) and owns the 8-byte `ofp_header` codec. No I/O here.

pub mod bundle;
pub mod error_msg;
pub mod flow_mod;
pub mod flow_monitor;
pub mod group;
pub mod meter;
pub mod multipart;
pub mod packet;
pub mod packet_in2;
pub mod port_status;
pub mod switch;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::field::{NX_EXPERIMENTER, ONF_EXPERIMENTER};
use crate::wire::{Reader, patch_len16};
use crate::{Error, OFP_VERSION, Result};

pub use bundle::{BundleAdd, BundleControl, BundleCtrlType};
pub use error_msg::ErrorMsg;
pub use flow_mod::{FlowMod, FlowModCommand};
pub use flow_monitor::{
    FlowMonitorRequest, FlowUpdate, FlowUpdateEvent, FlowUpdateFull, MonitorExt,
};
pub use group::{Bucket, GroupDesc, GroupMod, GroupModCommand, GroupStats, GroupType};
pub use meter::{MeterBand, MeterMod, MeterModCommand};
pub use multipart::{
    AggregateStats, FlowStats, FlowStatsRequest, MultipartReply, MultipartReplyBody,
    MultipartRequest, MultipartRequestBody, PortStats, SwitchDesc, TableStats,
};
pub use packet::{FlowRemoved, PacketIn, PacketOut};
pub use packet_in2::PacketIn2;
pub use port_status::{PortDesc, PortReason, PortStatus};
pub use switch::{ExperimenterMsg, FeaturesReply, Hello, Role, SwitchConfig};

/// Experimenter id and type of a flow monitor control message.
fn put_monitor_header(out: &mut BytesMut, ext: MonitorExt, onf_type: u32, nx_type: u32) {
    match ext {
        MonitorExt::Onf => {
            out.put_u32(ONF_EXPERIMENTER);
            out.put_u32(onf_type);
        }
        MonitorExt::Nicira => {
            out.put_u32(NX_EXPERIMENTER);
            out.put_u32(nx_type);
        }
    }
}

/// Length of `struct ofp_header`.
pub const HEADER_LEN: usize = 8;

/// OFPT_* message type numbers of OpenFlow 1.3.
pub mod ofpt {
    #![allow(missing_docs)]
    pub const HELLO: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const ECHO_REQUEST: u8 = 2;
    pub const ECHO_REPLY: u8 = 3;
    pub const EXPERIMENTER: u8 = 4;
    pub const FEATURES_REQUEST: u8 = 5;
    pub const FEATURES_REPLY: u8 = 6;
    pub const GET_CONFIG_REQUEST: u8 = 7;
    pub const GET_CONFIG_REPLY: u8 = 8;
    pub const SET_CONFIG: u8 = 9;
    pub const PACKET_IN: u8 = 10;
    pub const FLOW_REMOVED: u8 = 11;
    pub const PORT_STATUS: u8 = 12;
    pub const PACKET_OUT: u8 = 13;
    pub const FLOW_MOD: u8 = 14;
    pub const GROUP_MOD: u8 = 15;
    pub const MULTIPART_REQUEST: u8 = 18;
    pub const MULTIPART_REPLY: u8 = 19;
    pub const BARRIER_REQUEST: u8 = 20;
    pub const BARRIER_REPLY: u8 = 21;
    pub const ROLE_REQUEST: u8 = 24;
    pub const ROLE_REPLY: u8 = 25;
    pub const METER_MOD: u8 = 29;
}

/// `struct ofp_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol version (0x04 for OpenFlow 1.3).
    pub version: u8,
    /// OFPT_* type.
    pub msg_type: u8,
    /// Length of the whole message, header included.
    pub length: u16,
    /// Transaction id.
    pub xid: u32,
}

impl Header {
    /// Parses the first 8 bytes of a message.
    pub fn parse(b: &[u8]) -> Result<Header> {
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated {
                what: "ofp_header",
                needed: HEADER_LEN,
                available: b.len(),
            });
        }
        let h = Header {
            version: b[0],
            msg_type: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        };
        if usize::from(h.length) < HEADER_LEN {
            return Err(Error::BadLength {
                what: "ofp_header",
                length: h.length.into(),
                reason: "shorter than the 8-byte header itself",
            });
        }
        Ok(h)
    }
}

/// Any OpenFlow 1.3 message (with the OVS/ONF extensions this crate models).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// OFPT_HELLO.
    Hello(Hello),
    /// OFPT_ERROR.
    Error(ErrorMsg),
    /// OFPT_ECHO_REQUEST with its payload.
    EchoRequest(Bytes),
    /// OFPT_ECHO_REPLY with the request's payload.
    EchoReply(Bytes),
    /// OFPT_EXPERIMENTER not modelled otherwise.
    Experimenter(ExperimenterMsg),
    /// OFPT_FEATURES_REQUEST.
    FeaturesRequest,
    /// OFPT_FEATURES_REPLY.
    FeaturesReply(FeaturesReply),
    /// OFPT_GET_CONFIG_REQUEST.
    GetConfigRequest,
    /// OFPT_GET_CONFIG_REPLY.
    GetConfigReply(SwitchConfig),
    /// OFPT_SET_CONFIG.
    SetConfig(SwitchConfig),
    /// OFPT_PACKET_IN.
    PacketIn(PacketIn),
    /// OFPT_FLOW_REMOVED.
    FlowRemoved(FlowRemoved),
    /// OFPT_PORT_STATUS.
    PortStatus(PortStatus),
    /// OFPT_PACKET_OUT.
    PacketOut(PacketOut),
    /// OFPT_FLOW_MOD.
    FlowMod(FlowMod),
    /// OFPT_GROUP_MOD.
    GroupMod(GroupMod),
    /// OFPT_METER_MOD.
    MeterMod(MeterMod),
    /// OFPT_MULTIPART_REQUEST.
    MultipartRequest(MultipartRequest),
    /// OFPT_MULTIPART_REPLY (one part).
    MultipartReply(MultipartReply),
    /// OFPT_BARRIER_REQUEST.
    BarrierRequest,
    /// OFPT_BARRIER_REPLY.
    BarrierReply,
    /// OFPT_ROLE_REQUEST.
    RoleRequest(Role),
    /// OFPT_ROLE_REPLY.
    RoleReply(Role),
    /// NXT_PACKET_IN2 (sent after [`Message::SetPacketInFormat`] with
    /// [`packet_in2::format::NXT_PACKET_IN2`]).
    PacketIn2(PacketIn2),
    /// NXT_SET_PACKET_IN_FORMAT with one of [`packet_in2::format`].
    SetPacketInFormat(u32),
    /// ONF bundle control (experimenter message in OpenFlow 1.3).
    BundleControl(BundleControl),
    /// ONF bundle add (experimenter message in OpenFlow 1.3).
    BundleAdd(BundleAdd),
    /// ONFT_FLOW_MONITOR_CANCEL (or NXT_): stop the flow monitor `id`.
    FlowMonitorCancel {
        /// Which extension frames it ([`MonitorExt::Onf`] on OpenFlow 1.3).
        ext: MonitorExt,
        /// The monitor's id.
        id: u32,
    },
    /// ONFT_FLOW_MONITOR_PAUSED (or NXT_): the switch stopped sending flow updates because
    /// this connection's send queue is too long.
    FlowMonitorPaused(MonitorExt),
    /// ONFT_FLOW_MONITOR_RESUMED (or NXT_): updates flow again; the switch first re-sends
    /// the changes missed while paused.
    FlowMonitorResumed(MonitorExt),
    /// A message of a known type whose body was encoded ahead of time (see
    /// [`FlowMod::encoded`]): a controller that sends the same flow to many switches, or
    /// keeps its flows encoded, encodes it once. Decoding never produces it.
    Encoded {
        /// OFPT_* type.
        msg_type: u8,
        /// Body after the header.
        body: Bytes,
    },
    /// Any other message type, kept verbatim.
    Unknown {
        /// OFPT_* type.
        msg_type: u8,
        /// Body after the header.
        body: Bytes,
    },
}

macro_rules! from_impls {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Message {
            fn from(x: $t) -> Message {
                Message::$v(x)
            }
        })*
    };
}

from_impls! {
    Hello => Hello,
    ErrorMsg => Error,
    ExperimenterMsg => Experimenter,
    FeaturesReply => FeaturesReply,
    PacketIn => PacketIn,
    PacketIn2 => PacketIn2,
    FlowRemoved => FlowRemoved,
    PortStatus => PortStatus,
    PacketOut => PacketOut,
    FlowMod => FlowMod,
    GroupMod => GroupMod,
    MeterMod => MeterMod,
    MultipartRequest => MultipartRequest,
    MultipartReply => MultipartReply,
    BundleControl => BundleControl,
    BundleAdd => BundleAdd,
}

impl Message {
    /// The OFPT_* type this message is sent as.
    pub fn msg_type(&self) -> u8 {
        use Message::*;
        match self {
            Hello(_) => ofpt::HELLO,
            Error(_) => ofpt::ERROR,
            EchoRequest(_) => ofpt::ECHO_REQUEST,
            EchoReply(_) => ofpt::ECHO_REPLY,
            Experimenter(_)
            | BundleControl(_)
            | BundleAdd(_)
            | PacketIn2(_)
            | SetPacketInFormat(_)
            | FlowMonitorCancel { .. }
            | FlowMonitorPaused(_)
            | FlowMonitorResumed(_) => ofpt::EXPERIMENTER,
            FeaturesRequest => ofpt::FEATURES_REQUEST,
            FeaturesReply(_) => ofpt::FEATURES_REPLY,
            GetConfigRequest => ofpt::GET_CONFIG_REQUEST,
            GetConfigReply(_) => ofpt::GET_CONFIG_REPLY,
            SetConfig(_) => ofpt::SET_CONFIG,
            PacketIn(_) => ofpt::PACKET_IN,
            FlowRemoved(_) => ofpt::FLOW_REMOVED,
            PortStatus(_) => ofpt::PORT_STATUS,
            PacketOut(_) => ofpt::PACKET_OUT,
            FlowMod(_) => ofpt::FLOW_MOD,
            GroupMod(_) => ofpt::GROUP_MOD,
            MeterMod(_) => ofpt::METER_MOD,
            MultipartRequest(_) => ofpt::MULTIPART_REQUEST,
            MultipartReply(_) => ofpt::MULTIPART_REPLY,
            BarrierRequest => ofpt::BARRIER_REQUEST,
            BarrierReply => ofpt::BARRIER_REPLY,
            RoleRequest(_) => ofpt::ROLE_REQUEST,
            RoleReply(_) => ofpt::ROLE_REPLY,
            Encoded { msg_type, .. } | Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// Appends the complete message (header with `xid` and computed length, body).
    ///
    /// Takes `BytesMut` rather than any `BufMut` because lengths are back-patched once
    /// the nested structures are written (as h2 does for its frames).
    pub fn encode(&self, xid: u32, out: &mut BytesMut) -> Result<()> {
        use Message::*;
        let start = out.len();
        let version = match self {
            Hello(h) => h.version,
            _ => OFP_VERSION,
        };
        out.put_u8(version);
        out.put_u8(self.msg_type());
        out.put_u16(0);
        out.put_u32(xid);
        match self {
            Hello(h) => h.encode_body(out),
            Error(e) => e.encode(out),
            EchoRequest(b) | EchoReply(b) => out.put_slice(b),
            Experimenter(e) => {
                out.put_u32(e.experimenter);
                out.put_u32(e.exp_type);
                out.put_slice(&e.data);
            }
            FeaturesRequest | GetConfigRequest | BarrierRequest | BarrierReply => {}
            FeaturesReply(f) => f.encode_body(out),
            GetConfigReply(c) | SetConfig(c) => c.encode_body(out),
            PacketIn(p) => p.encode_body(out)?,
            FlowRemoved(f) => f.encode_body(out)?,
            PortStatus(p) => p.encode_body(out),
            PacketOut(p) => p.encode_body(out)?,
            FlowMod(f) => f.encode_body(out)?,
            GroupMod(g) => g.encode_body(out)?,
            MeterMod(m) => m.encode_body(out)?,
            MultipartRequest(m) => m.encode_body(out)?,
            MultipartReply(m) => m.encode_body(out)?,
            RoleRequest(r) | RoleReply(r) => r.encode_body(out),
            PacketIn2(p) => {
                out.put_u32(NX_EXPERIMENTER);
                out.put_u32(packet_in2::NXT_PACKET_IN2);
                p.encode_body(out)?;
            }
            SetPacketInFormat(f) => {
                out.put_u32(NX_EXPERIMENTER);
                out.put_u32(packet_in2::NXT_SET_PACKET_IN_FORMAT);
                out.put_u32(*f);
            }
            BundleControl(b) => {
                out.put_u32(ONF_EXPERIMENTER);
                out.put_u32(bundle::ONF_ET_BUNDLE_CONTROL);
                b.encode_body(out);
            }
            BundleAdd(b) => {
                out.put_u32(ONF_EXPERIMENTER);
                out.put_u32(bundle::ONF_ET_BUNDLE_ADD_MESSAGE);
                b.encode_body(out)?;
            }
            FlowMonitorCancel { ext, id } => {
                put_monitor_header(
                    out,
                    *ext,
                    flow_monitor::ONFT_FLOW_MONITOR_CANCEL,
                    flow_monitor::NXT_FLOW_MONITOR_CANCEL,
                );
                out.put_u32(*id);
            }
            FlowMonitorPaused(ext) => {
                put_monitor_header(
                    out,
                    *ext,
                    flow_monitor::ONFT_FLOW_MONITOR_PAUSED,
                    flow_monitor::NXT_FLOW_MONITOR_PAUSED,
                );
            }
            FlowMonitorResumed(ext) => {
                put_monitor_header(
                    out,
                    *ext,
                    flow_monitor::ONFT_FLOW_MONITOR_RESUMED,
                    flow_monitor::NXT_FLOW_MONITOR_RESUMED,
                );
            }
            Encoded { body, .. } | Unknown { body, .. } => out.put_slice(body),
        }
        let len = out.len() - start;
        patch_len16(out, start + 2, len, "OpenFlow message")
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, xid: u32) -> Result<Bytes> {
        let mut out = BytesMut::with_capacity(64);
        self.encode(xid, &mut out)?;
        Ok(out.freeze())
    }

    /// Decodes one complete message from the front of `buf`, consuming exactly its
    /// length; returns its xid and the message. Fails (without panicking) on truncation,
    /// impossible lengths, or any malformed nested structure.
    pub fn decode<B: Buf>(buf: &mut B) -> Result<(u32, Message)> {
        if buf.remaining() < HEADER_LEN {
            return Err(Error::Truncated {
                what: "ofp_header",
                needed: HEADER_LEN,
                available: buf.remaining(),
            });
        }
        // Peek at the length without consuming, so an incomplete message leaves `buf`
        // untouched. Bytes, BytesMut and &[u8] are contiguous; a chained buffer whose first
        // chunk is shorter than the header is rejected rather than half consumed.
        let chunk = buf.chunk();
        if chunk.len() < HEADER_LEN {
            return Err(Error::bad_value(
                "input buffer",
                "the 8-byte header must be contiguous in the first chunk",
            ));
        }
        let length = usize::from(Header::parse(&chunk[..HEADER_LEN])?.length);
        if buf.remaining() < length {
            return Err(Error::Truncated {
                what: "OpenFlow message",
                needed: length,
                available: buf.remaining(),
            });
        }
        let mut r = Reader::new(buf.copy_to_bytes(length));
        Self::decode_one(&mut r)
    }

    /// Decodes one message from a reader positioned at its header.
    pub(crate) fn decode_one(r: &mut Reader) -> Result<(u32, Message)> {
        let hb = r.array::<HEADER_LEN>("ofp_header")?;
        let h = Header::parse(&hb)?;
        let mut body = r.sub("OpenFlow message body", usize::from(h.length) - HEADER_LEN)?;
        // HELLO and ERROR must be understood whatever the version, for negotiation.
        if h.version != OFP_VERSION && h.msg_type != ofpt::HELLO && h.msg_type != ofpt::ERROR {
            return Err(Error::BadVersion { version: h.version });
        }
        let b = &mut body;
        let msg = match h.msg_type {
            ofpt::HELLO => Message::Hello(switch::Hello::decode_body(h.version, b)?),
            ofpt::ERROR => Message::Error(ErrorMsg::decode(b)?),
            ofpt::ECHO_REQUEST => Message::EchoRequest(b.rest()),
            ofpt::ECHO_REPLY => Message::EchoReply(b.rest()),
            ofpt::EXPERIMENTER => {
                let experimenter = b.u32("experimenter id")?;
                let exp_type = b.u32("experimenter type")?;
                match (experimenter, exp_type) {
                    (ONF_EXPERIMENTER, bundle::ONF_ET_BUNDLE_CONTROL) => {
                        Message::BundleControl(BundleControl::decode_body(b)?)
                    }
                    (ONF_EXPERIMENTER, bundle::ONF_ET_BUNDLE_ADD_MESSAGE) => {
                        Message::BundleAdd(BundleAdd::decode_body(b)?)
                    }
                    (NX_EXPERIMENTER, packet_in2::NXT_PACKET_IN2) => {
                        Message::PacketIn2(PacketIn2::decode_body(b)?)
                    }
                    (NX_EXPERIMENTER, packet_in2::NXT_SET_PACKET_IN_FORMAT) => {
                        Message::SetPacketInFormat(b.u32("packet-in format")?)
                    }
                    (ONF_EXPERIMENTER, flow_monitor::ONFT_FLOW_MONITOR_CANCEL) => {
                        Message::FlowMonitorCancel {
                            ext: MonitorExt::Onf,
                            id: b.u32("flow monitor cancel id")?,
                        }
                    }
                    (NX_EXPERIMENTER, flow_monitor::NXT_FLOW_MONITOR_CANCEL) => {
                        Message::FlowMonitorCancel {
                            ext: MonitorExt::Nicira,
                            id: b.u32("flow monitor cancel id")?,
                        }
                    }
                    (ONF_EXPERIMENTER, flow_monitor::ONFT_FLOW_MONITOR_PAUSED) if b.is_empty() => {
                        Message::FlowMonitorPaused(MonitorExt::Onf)
                    }
                    (NX_EXPERIMENTER, flow_monitor::NXT_FLOW_MONITOR_PAUSED) if b.is_empty() => {
                        Message::FlowMonitorPaused(MonitorExt::Nicira)
                    }
                    (ONF_EXPERIMENTER, flow_monitor::ONFT_FLOW_MONITOR_RESUMED) if b.is_empty() => {
                        Message::FlowMonitorResumed(MonitorExt::Onf)
                    }
                    (NX_EXPERIMENTER, flow_monitor::NXT_FLOW_MONITOR_RESUMED) if b.is_empty() => {
                        Message::FlowMonitorResumed(MonitorExt::Nicira)
                    }
                    _ => Message::Experimenter(ExperimenterMsg {
                        experimenter,
                        exp_type,
                        data: b.rest(),
                    }),
                }
            }
            ofpt::FEATURES_REQUEST => Message::FeaturesRequest,
            ofpt::FEATURES_REPLY => Message::FeaturesReply(FeaturesReply::decode_body(b)?),
            ofpt::GET_CONFIG_REQUEST => Message::GetConfigRequest,
            ofpt::GET_CONFIG_REPLY => Message::GetConfigReply(SwitchConfig::decode_body(b)?),
            ofpt::SET_CONFIG => Message::SetConfig(SwitchConfig::decode_body(b)?),
            ofpt::PACKET_IN => Message::PacketIn(PacketIn::decode_body(b)?),
            ofpt::FLOW_REMOVED => Message::FlowRemoved(FlowRemoved::decode_body(b)?),
            ofpt::PORT_STATUS => Message::PortStatus(PortStatus::decode_body(b)?),
            ofpt::PACKET_OUT => Message::PacketOut(PacketOut::decode_body(b)?),
            ofpt::FLOW_MOD => Message::FlowMod(FlowMod::decode_body(b)?),
            ofpt::GROUP_MOD => Message::GroupMod(GroupMod::decode_body(b)?),
            ofpt::METER_MOD => Message::MeterMod(MeterMod::decode_body(b)?),
            ofpt::MULTIPART_REQUEST => Message::MultipartRequest(MultipartRequest::decode_body(b)?),
            ofpt::MULTIPART_REPLY => Message::MultipartReply(MultipartReply::decode_body(b)?),
            ofpt::BARRIER_REQUEST => Message::BarrierRequest,
            ofpt::BARRIER_REPLY => Message::BarrierReply,
            ofpt::ROLE_REQUEST => Message::RoleRequest(Role::decode_body(b)?),
            ofpt::ROLE_REPLY => Message::RoleReply(Role::decode_body(b)?),
            t => Message::Unknown {
                msg_type: t,
                body: b.rest(),
            },
        };
        Ok((h.xid, msg))
    }
}
