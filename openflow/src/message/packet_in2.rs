//! Nicira packet-in extensions: NXT_SET_PACKET_IN_FORMAT (ask for NXT_PACKET_IN2) and
//! NXT_PACKET_IN2, the property-based packet-in that carries `controller2` userdata and
//! the continuation of a paused pipeline (include/openflow/nicira-ext.h,
//! lib/ofp-packet.c).

use bytes::{BufMut, Bytes, BytesMut};

use crate::matching::{Match, MatchField};
use crate::wire::{Reader, pad8, patch_len16, put_zeros};
use crate::{Error, Result};

/// NXT_SET_PACKET_IN_FORMAT subtype.
pub const NXT_SET_PACKET_IN_FORMAT: u32 = 16;
/// NXT_PACKET_IN2 subtype.
pub const NXT_PACKET_IN2: u32 = 30;

/// Packet-in formats for NXT_SET_PACKET_IN_FORMAT (`enum nx_packet_in_format`).
pub mod format {
    /// NXPIF_STANDARD: OFPT_PACKET_IN.
    pub const STANDARD: u32 = 0;
    /// NXPIF_NXT_PACKET_IN: the old Nicira packet-in.
    pub const NXT_PACKET_IN: u32 = 1;
    /// NXPIF_NXT_PACKET_IN2: [`super::PacketIn2`].
    pub const NXT_PACKET_IN2: u32 = 2;
}

mod nxpint {
    pub const PACKET: u16 = 0;
    pub const FULL_LEN: u16 = 1;
    pub const BUFFER_ID: u16 = 2;
    pub const TABLE_ID: u16 = 3;
    pub const COOKIE: u16 = 4;
    pub const REASON: u16 = 5;
    pub const METADATA: u16 = 6;
    pub const USERDATA: u16 = 7;
    pub const CONTINUATION: u16 = 8;
}

/// NXT_PACKET_IN2. Absent properties are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PacketIn2 {
    /// The packet (possibly truncated).
    pub packet: Bytes,
    /// Full length when `packet` is truncated.
    pub full_len: Option<u32>,
    /// Buffer id, if buffered.
    pub buffer_id: Option<u32>,
    /// Table of the flow that sent it.
    pub table_id: Option<u8>,
    /// Cookie of the flow that sent it.
    pub cookie: Option<u64>,
    /// OFPR_* reason.
    pub reason: Option<u8>,
    /// Packet metadata (in_port, registers, conntrack state...).
    pub metadata: Match,
    /// `userdata` of the `controller2` action.
    pub userdata: Option<Bytes>,
    /// Opaque continuation of a paused pipeline (`controller(pause)`).
    pub continuation: Option<Bytes>,
}

fn prop(out: &mut BytesMut, t: u16, value: &[u8]) -> Result<()> {
    let start = out.len();
    out.put_u16(t);
    out.put_u16(0);
    out.put_slice(value);
    let len = out.len() - start;
    patch_len16(out, start + 2, len, "packet_in2 property")?;
    put_zeros(out, pad8(len));
    Ok(())
}

impl PacketIn2 {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        // Property order and padding as lib/ofp-packet.c writes them (be64 properties
        // carry 4 bytes of padding before the value).
        prop(out, nxpint::PACKET, &self.packet)?;
        if let Some(v) = self.full_len {
            prop(out, nxpint::FULL_LEN, &v.to_be_bytes())?;
        }
        if let Some(v) = self.buffer_id {
            prop(out, nxpint::BUFFER_ID, &v.to_be_bytes())?;
        }
        if let Some(v) = self.table_id {
            prop(out, nxpint::TABLE_ID, &[v])?;
        }
        if let Some(v) = self.cookie {
            let mut b = [0u8; 12];
            b[4..].copy_from_slice(&v.to_be_bytes());
            prop(out, nxpint::COOKIE, &b)?;
        }
        if let Some(v) = self.reason {
            prop(out, nxpint::REASON, &[v])?;
        }
        let mut md = BytesMut::new();
        for mf in self.metadata.iter() {
            mf.encode(&mut md)?;
        }
        prop(out, nxpint::METADATA, &md)?;
        if let Some(v) = &self.userdata {
            prop(out, nxpint::USERDATA, v)?;
        }
        if let Some(v) = &self.continuation {
            prop(out, nxpint::CONTINUATION, v)?;
        }
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<PacketIn2> {
        let mut p = PacketIn2::default();
        while !r.is_empty() {
            let t = r.u16("packet_in2 property type")?;
            let len = r.u16("packet_in2 property length")? as usize;
            if len < 4 {
                return Err(Error::BadLength {
                    what: "packet_in2 property",
                    length: len,
                    reason: "shorter than its 4-byte header",
                });
            }
            let mut v = r.sub("packet_in2 property value", len - 4)?;
            // The last property's padding may be cut short by a sender; tolerate that.
            r.skip("packet_in2 property padding", pad8(len).min(r.remaining()))?;
            let be64 = |v: &mut Reader| -> Result<u64> {
                if v.remaining() == 12 {
                    v.skip("packet_in2 be64 padding", 4)?;
                }
                v.u64("packet_in2 be64 property")
            };
            match t {
                nxpint::PACKET => p.packet = v.rest(),
                nxpint::FULL_LEN => p.full_len = Some(v.u32("packet_in2 full_len")?),
                nxpint::BUFFER_ID => p.buffer_id = Some(v.u32("packet_in2 buffer_id")?),
                nxpint::TABLE_ID => p.table_id = Some(v.u8("packet_in2 table_id")?),
                nxpint::COOKIE => p.cookie = Some(be64(&mut v)?),
                nxpint::REASON => p.reason = Some(v.u8("packet_in2 reason")?),
                nxpint::METADATA => {
                    let mut m = Match::new();
                    while !v.is_empty() {
                        let mf = MatchField::decode(&mut v)?;
                        m.insert(mf)?;
                    }
                    p.metadata = m;
                }
                nxpint::USERDATA => p.userdata = Some(v.rest()),
                nxpint::CONTINUATION => p.continuation = Some(v.rest()),
                // Unknown properties without the "required" bit are skipped.
                _ => {}
            }
        }
        Ok(p)
    }
}
