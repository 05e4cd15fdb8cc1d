//! Session and switch-level messages: HELLO (version bitmap), FEATURES, switch config,
//! ROLE, and generic EXPERIMENTER messages.

use bytes::{BufMut, Bytes, BytesMut};

use crate::Result;
use crate::wire::{Reader, pad8, put_zeros};

/// OFPHET_VERSIONBITMAP.
const OFPHET_VERSIONBITMAP: u16 = 1;

/// OFPT_HELLO. The header's version is the highest the sender supports; the bitmap, when
/// present, lists every version it supports (bit N = wire version N).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The version byte of the HELLO's header.
    pub version: u8,
    /// Version bitmap words (empty: no bitmap element).
    pub version_bitmap: Vec<u32>,
}

impl Hello {
    /// A HELLO offering only OpenFlow 1.3.
    pub fn of13() -> Hello {
        Hello {
            version: crate::OFP_VERSION,
            version_bitmap: vec![1 << crate::OFP_VERSION],
        }
    }

    /// Whether the peer supports `version`: from the bitmap if present, else any version
    /// up to the header's (OpenFlow 1.3 §6.3.1).
    pub fn supports(&self, version: u8) -> bool {
        if self.version_bitmap.is_empty() {
            version <= self.version
        } else {
            let word = usize::from(version / 32);
            self.version_bitmap
                .get(word)
                .is_some_and(|w| w & (1 << (version % 32)) != 0)
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        if !self.version_bitmap.is_empty() {
            let len = 4 + 4 * self.version_bitmap.len();
            out.put_u16(OFPHET_VERSIONBITMAP);
            out.put_u16(len as u16);
            for w in &self.version_bitmap {
                out.put_u32(*w);
            }
            put_zeros(out, pad8(len));
        }
    }

    pub(crate) fn decode_body(version: u8, r: &mut Reader) -> Result<Hello> {
        let mut version_bitmap = Vec::new();
        // Unknown elements are skipped (§7.5.1); a short trailing element is ignored as
        // OVS does, since HELLO must stay lenient for version negotiation to work.
        while r.remaining() >= 4 {
            let t = r.u16("hello element type")?;
            let len = r.u16("hello element length")? as usize;
            if len < 4 || len - 4 > r.remaining() {
                break;
            }
            let mut e = r.sub("hello element", len - 4)?;
            let _ = r.skip("hello element padding", pad8(len).min(r.remaining()));
            if t == OFPHET_VERSIONBITMAP {
                while e.remaining() >= 4 {
                    version_bitmap.push(e.u32("hello version bitmap")?);
                }
            }
        }
        Ok(Hello {
            version,
            version_bitmap,
        })
    }
}

/// OFPT_FEATURES_REPLY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FeaturesReply {
    /// Datapath id (OVS: `other_config:datapath-id`, by default from the bridge MAC).
    pub datapath_id: u64,
    /// Packets the switch can buffer.
    pub n_buffers: u32,
    /// Number of tables.
    pub n_tables: u8,
    /// Auxiliary connection id (0 for the main connection).
    pub auxiliary_id: u8,
    /// OFPC_* capability bits.
    pub capabilities: u32,
}

impl FeaturesReply {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u64(self.datapath_id);
        out.put_u32(self.n_buffers);
        out.put_u8(self.n_tables);
        out.put_u8(self.auxiliary_id);
        put_zeros(out, 2);
        out.put_u32(self.capabilities);
        out.put_u32(0);
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<FeaturesReply> {
        let datapath_id = r.u64("features datapath_id")?;
        let n_buffers = r.u32("features n_buffers")?;
        let n_tables = r.u8("features n_tables")?;
        let auxiliary_id = r.u8("features auxiliary_id")?;
        r.skip("features pad", 2)?;
        let capabilities = r.u32("features capabilities")?;
        r.skip("features reserved", 4)?;
        Ok(FeaturesReply {
            datapath_id,
            n_buffers,
            n_tables,
            auxiliary_id,
            capabilities,
        })
    }
}

/// OFPT_GET_CONFIG_REPLY / OFPT_SET_CONFIG body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SwitchConfig {
    /// OFPC_FRAG_* flags.
    pub flags: u16,
    /// Bytes of a table-miss packet sent to the controller.
    pub miss_send_len: u16,
}

impl SwitchConfig {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.flags);
        out.put_u16(self.miss_send_len);
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<SwitchConfig> {
        Ok(SwitchConfig {
            flags: r.u16("config flags")?,
            miss_send_len: r.u16("config miss_send_len")?,
        })
    }
}

/// Controller role (`enum ofp_controller_role`).
pub mod role {
    /// OFPCR_ROLE_NOCHANGE: query the current role.
    pub const NOCHANGE: u32 = 0;
    /// OFPCR_ROLE_EQUAL.
    pub const EQUAL: u32 = 1;
    /// OFPCR_ROLE_MASTER.
    pub const MASTER: u32 = 2;
    /// OFPCR_ROLE_SLAVE.
    pub const SLAVE: u32 = 3;
}

/// OFPT_ROLE_REQUEST / OFPT_ROLE_REPLY body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Role {
    /// One of [`role`].
    pub role: u32,
    /// Master election generation id.
    pub generation_id: u64,
}

impl Role {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.role);
        put_zeros(out, 4);
        out.put_u64(self.generation_id);
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<Role> {
        let role = r.u32("role")?;
        r.skip("role pad", 4)?;
        Ok(Role {
            role,
            generation_id: r.u64("role generation_id")?,
        })
    }
}

/// OFPT_EXPERIMENTER messages this crate does not model (NXT_*, other ONF types).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExperimenterMsg {
    /// Experimenter id.
    pub experimenter: u32,
    /// Experimenter-defined type.
    pub exp_type: u32,
    /// Body.
    pub data: Bytes,
}
