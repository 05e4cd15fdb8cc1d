//! Actions: the OpenFlow 1.3 standard actions OVS uses and the Nicira (NX) extension
//! actions (experimenter 0x00002320) a Kubernetes pipeline needs, with their codec.
//!
//! Encodings follow what ovs-vswitchd itself sends in OpenFlow 1.3 (lib/ofp-actions.c):
//! `set_field` of a whole field is OFPAT_SET_FIELD with an OXM TLV; a masked `set_field`
//! is NXAST_REG_LOAD2 (OpenFlow 1.3 forbids masks in OFPAT_SET_FIELD); `load:` is
//! NXAST_REG_LOAD; `resubmit(,T)` is NXAST_RESUBMIT_TABLE. Actions this crate does not
//! model decode to [`Action::Experimenter`] / [`Action::Unknown`] and re-encode byte for
//! byte.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::field::{Field, NX_EXPERIMENTER, OXM_CLASS_EXPERIMENTER, OxmHeader};
use crate::matching::MatchField;
use crate::port;
use crate::wire::{Reader, pad8, patch_len16, put_zeros};
use crate::{Error, Result};

/// OpenFlow 1.3 action type numbers (`enum ofp_action_type`).
mod ofpat {
    pub const OUTPUT: u16 = 0;
    pub const PUSH_VLAN: u16 = 17;
    pub const POP_VLAN: u16 = 18;
    pub const SET_QUEUE: u16 = 21;
    pub const GROUP: u16 = 22;
    pub const SET_NW_TTL: u16 = 23;
    pub const DEC_NW_TTL: u16 = 24;
    pub const SET_FIELD: u16 = 25;
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// Nicira action subtypes (include/openflow/nicira-ext.h, lib/ofp-actions.c).
mod nxast {
    pub const RESUBMIT: u16 = 1;
    pub const REG_MOVE: u16 = 6;
    pub const REG_LOAD: u16 = 7;
    pub const NOTE: u16 = 8;
    pub const RESUBMIT_TABLE: u16 = 14;
    pub const OUTPUT_REG: u16 = 15;
    pub const LEARN: u16 = 16;
    pub const MULTIPATH: u16 = 10;
    pub const CONTROLLER: u16 = 20;
    pub const REG_LOAD2: u16 = 33;
    pub const CONJUNCTION: u16 = 34;
    pub const CT: u16 = 35;
    pub const NAT: u16 = 36;
    pub const CONTROLLER2: u16 = 37;
    pub const CT_CLEAR: u16 = 43;
    pub const RESUBMIT_TABLE_CT: u16 = 44;
}

/// A bit range of a field, as in `NXM_NX_REG0[8..15]` (`ofs` = 8, `n_bits` = 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subfield {
    /// The field.
    pub field: Field,
    /// Offset of the lowest bit.
    pub ofs: u16,
    /// Number of bits (at least 1).
    pub n_bits: u16,
}

impl Subfield {
    /// The whole field (`NXM_NX_REG0[]`).
    pub fn whole(field: Field) -> Subfield {
        Subfield {
            field,
            ofs: 0,
            n_bits: field.nxm_bits() as u16,
        }
    }

    /// Bits `start..=end` of the field (`NXM_NX_REG0[start..end]`).
    pub fn range(field: Field, start: u16, end: u16) -> Subfield {
        Subfield {
            field,
            ofs: start,
            n_bits: end.saturating_sub(start) + 1,
        }
    }

    fn check(&self, what: &'static str) -> Result<()> {
        if !self.field.is_valid() {
            return Err(Error::bad_value(
                what,
                format!("{:?} does not exist", self.field),
            ));
        }
        let bits = self.field.nxm_bits();
        if self.n_bits == 0 || usize::from(self.ofs) + usize::from(self.n_bits) > bits {
            return Err(Error::bad_value(
                what,
                format!(
                    "{}[{}..{}] does not fit in the field's {} bits",
                    self.field,
                    self.ofs,
                    i32::from(self.ofs) + i32::from(self.n_bits) - 1,
                    bits
                ),
            ));
        }
        Ok(())
    }

    /// `ofs << 6 | (n_bits - 1)`, the packed form of NXAST_REG_LOAD and friends.
    fn ofs_nbits(&self, what: &'static str) -> Result<u16> {
        self.check(what)?;
        if self.n_bits > 64 || self.ofs > 0x3ff {
            return Err(Error::bad_value(
                what,
                format!(
                    "{}: ofs {} / n_bits {} do not fit the packed ofs_nbits form",
                    self.field, self.ofs, self.n_bits
                ),
            ));
        }
        Ok((self.ofs << 6) | (self.n_bits - 1))
    }

    fn from_ofs_nbits(field: Field, v: u16) -> Subfield {
        Subfield {
            field,
            ofs: v >> 6,
            n_bits: (v & 0x3f) + 1,
        }
    }
}

/// Where `ct` takes its zone from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtZone {
    /// A constant zone (`zone=5`); 0 is the default zone.
    Value(u16),
    /// A 16-bit subfield (`zone=NXM_NX_REG0[0..15]`).
    Field(Subfield),
}

impl Default for CtZone {
    fn default() -> CtZone {
        CtZone::Value(0)
    }
}

/// Direction of a `nat` inside `ct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// `nat(src=...)`: source NAT.
    Src,
    /// `nat(dst=...)`: destination NAT.
    Dst,
}

/// The `nat` action, only valid inside `ct` (NXAST_NAT). With no `kind`, it applies the
/// NAT already recorded for the connection (`ct(nat)`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat {
    /// Source or destination NAT; `None` reuses the connection's existing NAT.
    pub kind: Option<NatKind>,
    /// Lowest address of the range.
    pub addr_min: Option<IpAddr>,
    /// Highest address of the range (same family as `addr_min`).
    pub addr_max: Option<IpAddr>,
    /// Lowest L4 port.
    pub port_min: Option<u16>,
    /// Highest L4 port.
    pub port_max: Option<u16>,
    /// `persistent` flag.
    pub persistent: bool,
    /// `hash` port selection.
    pub hash: bool,
    /// `random` port selection.
    pub random: bool,
}

/// The `ct` action (NXAST_CT): send the packet through the connection tracker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ct {
    /// `commit`: create the connection entry.
    pub commit: bool,
    /// `force`: with commit, replace an existing entry in the opposite direction.
    pub force: bool,
    /// Conntrack zone.
    pub zone: CtZone,
    /// `table=N`: recirculate to this table after tracking; `None` continues the pipeline
    /// untracked-state (the action list goes on).
    pub table: Option<u8>,
    /// Application layer gateway (`alg=ftp` is 21, `tftp` 69); 0 for none.
    pub alg: u16,
    /// `nat(...)`.
    pub nat: Option<Nat>,
    /// `exec(...)`: actions applied to the connection (set_field of ct_mark / ct_label).
    pub actions: Vec<Action>,
}

/// Where a `learn` spec takes its value from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LearnSrc {
    /// From a subfield of the packet being processed.
    Field(Subfield),
    /// An immediate value, big-endian, `2 * ceil(n_bits / 16)` bytes as on the wire
    /// (use [`LearnSrc::value`] to build one from an integer).
    Value(Bytes),
}

impl LearnSrc {
    /// An immediate value for a destination of `n_bits` bits.
    pub fn value(v: u128, n_bits: u16) -> LearnSrc {
        let len = 2 * usize::from(n_bits).div_ceil(16);
        let all = v.to_be_bytes();
        let bytes = if len <= 16 {
            Bytes::copy_from_slice(&all[16 - len..])
        } else {
            let mut b = vec![0u8; len - 16];
            b.extend_from_slice(&all);
            Bytes::from(b)
        };
        LearnSrc::Value(bytes)
    }
}

/// One `flow_mod_spec` of `learn`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LearnSpec {
    /// The learned flow matches `dst` against `src` (`NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[]`,
    /// or `NXM_OF_VLAN_TCI[0..11]` alone, where src = dst).
    Match {
        /// Value source.
        src: LearnSrc,
        /// Field of the learned flow's match.
        dst: Subfield,
    },
    /// The learned flow loads `src` into `dst` (`load:NXM_NX_REG0[]->NXM_NX_REG1[]`).
    Load {
        /// Value source.
        src: LearnSrc,
        /// Destination subfield in the learned flow's actions.
        dst: Subfield,
    },
    /// The learned flow outputs to the port in `src` (`output:NXM_OF_IN_PORT[]`).
    Output {
        /// Subfield holding the port.
        src: Subfield,
    },
}

/// The `learn` action (NXAST_LEARN): add or modify a flow from the packet's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Learn {
    /// `idle_timeout` of the learned flow.
    pub idle_timeout: u16,
    /// `hard_timeout` of the learned flow.
    pub hard_timeout: u16,
    /// `priority` of the learned flow.
    pub priority: u16,
    /// `cookie` of the learned flow.
    pub cookie: u64,
    /// NX_LEARN_F_* flags: 1 send_flow_rem, 2 delete_learned, 4 write_result.
    pub flags: u16,
    /// Table of the learned flow.
    pub table_id: u8,
    /// `fin_idle_timeout`.
    pub fin_idle_timeout: u16,
    /// `fin_hard_timeout`.
    pub fin_hard_timeout: u16,
    /// What the learned flow matches and does.
    pub specs: Vec<LearnSpec>,
}

/// `controller(...)` in its extensible NXAST_CONTROLLER2 form; absent properties are not
/// sent (OVS then uses its defaults: all bytes, controller id 0, reason action, no meter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Controller2 {
    /// Bytes of the packet to send (`max_len`).
    pub max_len: Option<u16>,
    /// Controller connection id (`id`).
    pub controller_id: Option<u16>,
    /// Packet-in reason (`reason`, OFPR_*).
    pub reason: Option<u8>,
    /// Opaque bytes copied into the packet-in (`userdata`).
    pub userdata: Option<Bytes>,
    /// Pause the pipeline for the controller to resume (`pause`).
    pub pause: bool,
    /// Meter to apply (`meter_id`).
    pub meter_id: Option<u32>,
}

/// A small Nicira enum with a wire number and the name ovs-ofctl uses for each value.
pub trait NxEnum: Copy + PartialEq + 'static {
    /// Every value: (value, wire number, ovs-ofctl name).
    const ALL: &'static [(Self, u16, &'static str)];

    /// The wire number.
    fn number(self) -> u16 {
        Self::ALL.iter().find(|e| e.0 == self).map_or(0, |e| e.1)
    }

    /// From the wire number.
    fn from_number(n: u16) -> Option<Self> {
        Self::ALL.iter().find(|e| e.1 == n).map(|e| e.0)
    }

    /// The name ovs-ofctl uses (`symmetric_l3l4+udp`, `modulo_n`).
    fn name(self) -> &'static str {
        Self::ALL.iter().find(|e| e.0 == self).map_or("", |e| e.2)
    }

    /// From the name ovs-ofctl uses (case-insensitive).
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|e| e.2.eq_ignore_ascii_case(s))
            .map(|e| e.0)
    }
}

/// Which fields `multipath` hashes (`enum nx_hash_fields`, nicira-ext.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashFields {
    /// `eth_src` (0).
    EthSrc,
    /// `symmetric_l4` (1).
    SymmetricL4,
    /// `symmetric_l3l4` (2): addresses, protocol, TCP/SCTP ports.
    SymmetricL3L4,
    /// `symmetric_l3l4+udp` (3): as `symmetric_l3l4`, UDP ports too.
    SymmetricL3L4Udp,
    /// `nw_src` (4).
    NwSrc,
    /// `nw_dst` (5).
    NwDst,
}

impl NxEnum for HashFields {
    const ALL: &'static [(Self, u16, &'static str)] = &[
        (HashFields::EthSrc, 0, "eth_src"),
        (HashFields::SymmetricL4, 1, "symmetric_l4"),
        (HashFields::SymmetricL3L4, 2, "symmetric_l3l4"),
        (HashFields::SymmetricL3L4Udp, 3, "symmetric_l3l4+udp"),
        (HashFields::NwSrc, 4, "nw_src"),
        (HashFields::NwDst, 5, "nw_dst"),
    ];
}

/// How `multipath` maps the hash to a link (`enum nx_mp_algorithm`, nicira-ext.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MultipathAlgorithm {
    /// `modulo_n` (0): `hash % n_links`.
    ModuloN,
    /// `hash_threshold` (1).
    HashThreshold,
    /// `hrw` (2): highest random weight.
    Hrw,
    /// `iter_hash` (3).
    IterHash,
}

impl NxEnum for MultipathAlgorithm {
    const ALL: &'static [(Self, u16, &'static str)] = &[
        (MultipathAlgorithm::ModuloN, 0, "modulo_n"),
        (MultipathAlgorithm::HashThreshold, 1, "hash_threshold"),
        (MultipathAlgorithm::Hrw, 2, "hrw"),
        (MultipathAlgorithm::IterHash, 3, "iter_hash"),
    ];
}

/// NXAST_MULTIPATH (`struct nx_action_multipath`): hash `fields` with `basis`, map the hash
/// to one of `n_links` links by `algorithm` (with `arg`), and write the link into `dst`.
/// ovs-ofctl: `multipath(FIELDS,BASIS,ALGORITHM,N_LINKS,ARG,DST)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Multipath {
    /// What is hashed.
    pub fields: HashFields,
    /// The hash basis.
    pub basis: u16,
    /// How the hash picks a link.
    pub algorithm: MultipathAlgorithm,
    /// Number of links, 1..=65536 (on the wire: `max_link` = n_links - 1).
    pub n_links: u32,
    /// The algorithm's argument (`iter_hash`'s modulo).
    pub arg: u32,
    /// Where the link number goes.
    pub dst: Subfield,
}

/// An action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// OFPAT_OUTPUT: send to a port ([`crate::port`] has the reserved ones); `max_len`
    /// bytes to the controller when the port is CONTROLLER (0xffff = whole packet).
    Output {
        /// Output port.
        port: u32,
        /// Bytes to send to the controller.
        max_len: u16,
    },
    /// OFPAT_GROUP: process the packet through a group.
    Group(u32),
    /// OFPAT_SET_FIELD (whole field) or, with a mask, NXAST_REG_LOAD2.
    SetField(MatchField),
    /// OFPAT_PUSH_VLAN with the given TPID (0x8100).
    PushVlan(u16),
    /// OFPAT_POP_VLAN.
    PopVlan,
    /// OFPAT_DEC_NW_TTL.
    DecTtl,
    /// OFPAT_SET_NW_TTL.
    SetNwTtl(u8),
    /// OFPAT_SET_QUEUE.
    SetQueue(u32),
    /// NXAST_RESUBMIT / NXAST_RESUBMIT_TABLE(_CT): look the packet up again in `table`
    /// (`None`: the current table) as if it came from `in_port`
    /// ([`port::IN_PORT`] keeps the real one).
    Resubmit {
        /// Port to pretend the packet came from.
        in_port: u32,
        /// Table to look up; `None` is the current one.
        table: Option<u8>,
        /// `resubmit(,T,ct)`: look up with the conntrack original-direction tuple.
        ct: bool,
    },
    /// NXAST_CT.
    Ct(Ct),
    /// NXAST_CT_CLEAR.
    CtClear,
    /// NXAST_CONJUNCTION: `conjunction(id, clause/n_clauses)`; `clause` is 1-based as in
    /// ovs-ofctl (the wire carries clause - 1).
    Conjunction {
        /// Conjunction id (matched as `conj_id`).
        id: u32,
        /// This flow's clause, 1..=n_clauses.
        clause: u8,
        /// Number of clauses, 2..=64.
        n_clauses: u8,
    },
    /// NXAST_LEARN.
    Learn(Learn),
    /// NXAST_NOTE: opaque bytes (OVS keeps the zero padding as part of the note).
    Note(Bytes),
    /// NXAST_REG_MOVE: `move:src->dst` (equal widths).
    RegMove {
        /// Source bits.
        src: Subfield,
        /// Destination bits.
        dst: Subfield,
    },
    /// NXAST_REG_LOAD: `load:value->dst` (at most 64 bits).
    RegLoad {
        /// Destination bits.
        dst: Subfield,
        /// Value, right-aligned.
        value: u64,
    },
    /// NXAST_OUTPUT_REG: `output:src`, the port number read from a subfield.
    OutputReg {
        /// Subfield holding the port.
        src: Subfield,
        /// Bytes to send when the port is the controller.
        max_len: u16,
    },
    /// NXAST_CONTROLLER: `controller(max_len=,reason=,id=)`.
    Controller {
        /// Bytes to send.
        max_len: u16,
        /// Controller connection id.
        controller_id: u16,
        /// Packet-in reason (OFPR_*).
        reason: u8,
    },
    /// NXAST_CONTROLLER2.
    Controller2(Controller2),
    /// NXAST_MULTIPATH.
    Multipath(Multipath),
    /// Any other experimenter action, kept verbatim: `data` is everything after the
    /// 4-byte experimenter id (for NX actions it starts with the 2-byte subtype).
    Experimenter {
        /// Experimenter id.
        experimenter: u32,
        /// Body after the experimenter id, padding included.
        data: Bytes,
    },
    /// A standard action type this crate does not model, kept verbatim.
    Unknown {
        /// OFPAT_* type.
        action_type: u16,
        /// Body after the 4-byte type/length header.
        data: Bytes,
    },
}

impl Action {
    /// `output:PORT`.
    pub fn output(port: u32) -> Action {
        Action::Output {
            port,
            max_len: if port == port::CONTROLLER {
                port::NO_BUFFER_LEN
            } else {
                0
            },
        }
    }

    /// `resubmit(,TABLE)`.
    pub fn resubmit_table(table: u8) -> Action {
        Action::Resubmit {
            in_port: port::IN_PORT,
            table: Some(table),
            ct: false,
        }
    }

    /// `set_field:VALUE->FIELD` from a [`MatchField`] (add a mask for a partial write).
    pub fn set_field(mf: MatchField) -> Action {
        Action::SetField(mf)
    }

    /// `load:VALUE->DST`.
    pub fn load(dst: Subfield, value: u64) -> Action {
        Action::RegLoad { dst, value }
    }

    /// `move:SRC->DST`.
    pub fn move_(src: Subfield, dst: Subfield) -> Action {
        Action::RegMove { src, dst }
    }
}

fn nx_header(out: &mut BytesMut, subtype: u16) -> usize {
    let start = out.len();
    out.put_u16(ofpat::EXPERIMENTER);
    out.put_u16(0);
    out.put_u32(NX_EXPERIMENTER);
    out.put_u16(subtype);
    start
}

/// Pads to 8 and patches the action length at `start + 2`.
fn finish(out: &mut BytesMut, start: usize, what: &'static str) -> Result<()> {
    put_zeros(out, pad8(out.len() - start));
    let len = out.len() - start;
    patch_len16(out, start + 2, len, what)
}

fn put_header(out: &mut BytesMut, h: OxmHeader, bits: usize) {
    let bytes = bits.div_ceil(8);
    out.put_u32(h.word(false, bytes));
    if let Some(e) = h.experimenter {
        out.put_u32(e);
    }
}

fn read_field_header(r: &mut Reader, what: &'static str) -> Result<Field> {
    let word = r.u32(what)?;
    let class = (word >> 16) as u16;
    let experimenter = if class == OXM_CLASS_EXPERIMENTER {
        Some(r.u32(what)?)
    } else {
        None
    };
    Ok(Field::from_header(OxmHeader {
        class,
        field: ((word >> 9) & 0x7f) as u8,
        experimenter,
    }))
}

fn port_to_ofp10(p: u32, what: &'static str) -> Result<u16> {
    if p >= 0xffff_ff00 {
        Ok((p - 0xffff_0000) as u16)
    } else if p < 0xff00 {
        Ok(p as u16)
    } else {
        Err(Error::bad_value(
            what,
            format!("port {p} cannot be expressed as a 16-bit OpenFlow 1.0 port"),
        ))
    }
}

fn port_from_ofp10(p: u16) -> u32 {
    if p >= 0xff00 {
        u32::from(p) + 0xffff_0000
    } else {
        u32::from(p)
    }
}

fn encode_learn_src(src: &LearnSrc, n_bits: u16, out: &mut BytesMut) -> Result<()> {
    match src {
        LearnSrc::Field(sf) => {
            sf.check("learn source")?;
            put_header(out, sf.field.nxm_header(), sf.field.nxm_bits());
            out.put_u16(sf.ofs);
        }
        LearnSrc::Value(v) => {
            let len = 2 * usize::from(n_bits).div_ceil(16);
            if v.len() != len {
                return Err(Error::bad_value(
                    "learn immediate value",
                    format!("{} bytes for {n_bits} bits, expected {len}", v.len()),
                ));
            }
            out.put_slice(v);
        }
    }
    Ok(())
}

impl Action {
    /// Appends the action's wire form.
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        match self {
            Action::Output { port, max_len } => {
                out.put_u16(ofpat::OUTPUT);
                out.put_u16(16);
                out.put_u32(*port);
                out.put_u16(*max_len);
                put_zeros(out, 6);
            }
            Action::Group(g) => {
                out.put_u16(ofpat::GROUP);
                out.put_u16(8);
                out.put_u32(*g);
            }
            Action::SetField(mf) if mf.mask.is_some() => {
                let start = nx_header(out, nxast::REG_LOAD2);
                mf.encode(out)?;
                finish(out, start, "NXAST_REG_LOAD2 action")?;
            }
            Action::SetField(mf) => {
                let start = out.len();
                out.put_u16(ofpat::SET_FIELD);
                out.put_u16(0);
                mf.encode(out)?;
                finish(out, start, "OFPAT_SET_FIELD action")?;
            }
            Action::PushVlan(tpid) => {
                out.put_u16(ofpat::PUSH_VLAN);
                out.put_u16(8);
                out.put_u16(*tpid);
                put_zeros(out, 2);
            }
            Action::PopVlan => {
                out.put_u16(ofpat::POP_VLAN);
                out.put_u16(8);
                put_zeros(out, 4);
            }
            Action::DecTtl => {
                out.put_u16(ofpat::DEC_NW_TTL);
                out.put_u16(8);
                put_zeros(out, 4);
            }
            Action::SetNwTtl(t) => {
                out.put_u16(ofpat::SET_NW_TTL);
                out.put_u16(8);
                out.put_u8(*t);
                put_zeros(out, 3);
            }
            Action::SetQueue(q) => {
                out.put_u16(ofpat::SET_QUEUE);
                out.put_u16(8);
                out.put_u32(*q);
            }
            Action::Resubmit { in_port, table, ct } => {
                // ovs-vswitchd itself always writes NXAST_RESUBMIT_TABLE, with table 255
                // for "this table" (lib/ofp-actions.c encode_RESUBMIT).
                let subtype = if *ct {
                    nxast::RESUBMIT_TABLE_CT
                } else {
                    nxast::RESUBMIT_TABLE
                };
                let start = nx_header(out, subtype);
                out.put_u16(port_to_ofp10(*in_port, "resubmit in_port")?);
                out.put_u8(table.unwrap_or(0xff));
                finish(out, start, "resubmit action")?;
            }
            Action::Ct(ct) => encode_ct(ct, out)?,
            Action::CtClear => {
                let start = nx_header(out, nxast::CT_CLEAR);
                finish(out, start, "ct_clear action")?;
            }
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => {
                if *n_clauses < 2 || *n_clauses > 64 || *clause == 0 || clause > n_clauses {
                    return Err(Error::bad_value(
                        "conjunction",
                        format!(
                            "clause {clause}/{n_clauses}: need 1 <= clause <= n_clauses, 2 <= n_clauses <= 64"
                        ),
                    ));
                }
                let start = nx_header(out, nxast::CONJUNCTION);
                out.put_u8(clause - 1);
                out.put_u8(*n_clauses);
                out.put_u32(*id);
                finish(out, start, "conjunction action")?;
            }
            Action::Learn(l) => encode_learn(l, out)?,
            Action::Note(note) => {
                let start = nx_header(out, nxast::NOTE);
                out.put_slice(note);
                // nx_action_note has 6 bytes of note in its fixed part: minimum length 16.
                if note.len() < 6 {
                    put_zeros(out, 6 - note.len());
                }
                finish(out, start, "note action")?;
            }
            Action::RegMove { src, dst } => {
                src.check("move source")?;
                dst.check("move destination")?;
                if src.n_bits != dst.n_bits {
                    return Err(Error::bad_value(
                        "move",
                        format!(
                            "source is {} bits, destination {} bits",
                            src.n_bits, dst.n_bits
                        ),
                    ));
                }
                let start = nx_header(out, nxast::REG_MOVE);
                out.put_u16(src.n_bits);
                out.put_u16(src.ofs);
                out.put_u16(dst.ofs);
                put_header(out, src.field.nxm_header(), src.field.nxm_bits());
                put_header(out, dst.field.nxm_header(), dst.field.nxm_bits());
                finish(out, start, "move action")?;
            }
            Action::RegLoad { dst, value } => {
                let ofs_nbits = dst.ofs_nbits("load destination")?;
                let h = dst.field.nxm_header();
                if h.experimenter.is_some() {
                    return Err(Error::bad_value(
                        "load destination",
                        format!(
                            "{} has an experimenter header; use a masked set_field",
                            dst.field
                        ),
                    ));
                }
                if dst.n_bits < 64 && value >> dst.n_bits != 0 {
                    return Err(Error::bad_value(
                        "load value",
                        format!("{value:#x} does not fit in {} bits", dst.n_bits),
                    ));
                }
                let start = nx_header(out, nxast::REG_LOAD);
                out.put_u16(ofs_nbits);
                put_header(out, h, dst.field.nxm_bits());
                out.put_u64(*value);
                finish(out, start, "load action")?;
            }
            Action::OutputReg { src, max_len } => {
                let ofs_nbits = src.ofs_nbits("output source")?;
                let h = src.field.nxm_header();
                if h.experimenter.is_some() {
                    return Err(Error::bad_value(
                        "output source",
                        format!("{} has an experimenter header", src.field),
                    ));
                }
                let start = nx_header(out, nxast::OUTPUT_REG);
                out.put_u16(ofs_nbits);
                put_header(out, h, src.field.nxm_bits());
                out.put_u16(*max_len);
                finish(out, start, "output:reg action")?;
            }
            Action::Controller {
                max_len,
                controller_id,
                reason,
            } => {
                let start = nx_header(out, nxast::CONTROLLER);
                out.put_u16(*max_len);
                out.put_u16(*controller_id);
                out.put_u8(*reason);
                finish(out, start, "controller action")?;
            }
            Action::Controller2(c) => encode_controller2(c, out)?,
            Action::Multipath(m) => {
                if !(1..=65536).contains(&m.n_links) {
                    return Err(Error::bad_value(
                        "multipath n_links",
                        format!("{} is not in 1..=65536", m.n_links),
                    ));
                }
                let ofs_nbits = m.dst.ofs_nbits("multipath destination")?;
                let h = m.dst.field.nxm_header();
                if h.experimenter.is_some() {
                    return Err(Error::bad_value(
                        "multipath destination",
                        format!("{} has an experimenter header", m.dst.field),
                    ));
                }
                let start = nx_header(out, nxast::MULTIPATH);
                out.put_u16(m.fields.number());
                out.put_u16(m.basis);
                put_zeros(out, 2);
                out.put_u16(m.algorithm.number());
                out.put_u16((m.n_links - 1) as u16);
                out.put_u32(m.arg);
                put_zeros(out, 2);
                out.put_u16(ofs_nbits);
                put_header(out, h, m.dst.field.nxm_bits());
                finish(out, start, "multipath action")?;
            }
            Action::Experimenter { experimenter, data } => {
                let start = out.len();
                out.put_u16(ofpat::EXPERIMENTER);
                out.put_u16(0);
                out.put_u32(*experimenter);
                out.put_slice(data);
                let len = out.len() - start;
                if !len.is_multiple_of(8) {
                    return Err(Error::BadLength {
                        what: "experimenter action",
                        length: len,
                        reason: "data must make the action a multiple of 8 bytes",
                    });
                }
                patch_len16(out, start + 2, len, "experimenter action")?;
            }
            Action::Unknown { action_type, data } => {
                let start = out.len();
                out.put_u16(*action_type);
                out.put_u16(0);
                out.put_slice(data);
                let len = out.len() - start;
                if !len.is_multiple_of(8) {
                    return Err(Error::BadLength {
                        what: "unknown action",
                        length: len,
                        reason: "data must make the action a multiple of 8 bytes",
                    });
                }
                patch_len16(out, start + 2, len, "unknown action")?;
            }
        }
        Ok(())
    }

    /// Appends a list of actions.
    pub fn encode_list(actions: &[Action], out: &mut BytesMut) -> Result<()> {
        actions.iter().try_for_each(|a| a.encode(out))
    }

    /// Reads actions until `r` is exhausted.
    pub(crate) fn decode_list(r: &mut Reader) -> Result<Vec<Action>> {
        let mut v = Vec::new();
        while !r.is_empty() {
            v.push(Action::decode(r)?);
        }
        Ok(v)
    }

    /// Reads one action.
    pub(crate) fn decode(r: &mut Reader) -> Result<Action> {
        let len = r.peek_u16("action length", 2)? as usize;
        if len < 8 || !len.is_multiple_of(8) {
            return Err(Error::BadLength {
                what: "action",
                length: len,
                reason: "must be a multiple of 8, at least 8",
            });
        }
        let mut a = r.sub("action", len)?;
        let atype = a.u16("action type")?;
        a.skip("action length", 2)?;
        Ok(match atype {
            ofpat::OUTPUT => {
                let port = a.u32("output port")?;
                let max_len = a.u16("output max_len")?;
                Action::Output { port, max_len }
            }
            ofpat::GROUP => Action::Group(a.u32("group id")?),
            ofpat::SET_FIELD => {
                let mf = MatchField::decode(&mut a)?;
                if mf.mask.is_some() {
                    return Err(Error::bad_value(
                        "OFPAT_SET_FIELD",
                        format!(
                            "{} has a mask, which OpenFlow 1.3 set_field forbids",
                            mf.field
                        ),
                    ));
                }
                Action::SetField(normalized_set_field(mf)?)
            }
            ofpat::PUSH_VLAN => Action::PushVlan(a.u16("push_vlan ethertype")?),
            ofpat::POP_VLAN => Action::PopVlan,
            ofpat::DEC_NW_TTL => Action::DecTtl,
            ofpat::SET_NW_TTL => Action::SetNwTtl(a.u8("set_nw_ttl")?),
            ofpat::SET_QUEUE => Action::SetQueue(a.u32("set_queue")?),
            ofpat::EXPERIMENTER => {
                let experimenter = a.u32("action experimenter id")?;
                if experimenter == NX_EXPERIMENTER {
                    let body = a.rest();
                    match decode_nx(Reader::new(body.clone()))? {
                        Some(act) => act,
                        None => Action::Experimenter {
                            experimenter,
                            data: body,
                        },
                    }
                } else {
                    Action::Experimenter {
                        experimenter,
                        data: a.rest(),
                    }
                }
            }
            t => Action::Unknown {
                action_type: t,
                data: a.rest(),
            },
        })
    }
}

fn normalized_set_field(mf: MatchField) -> Result<MatchField> {
    let field = mf.field;
    match mf.normalized()? {
        Some(mf) => Ok(mf),
        None => Err(Error::bad_value(
            "set_field",
            format!("mask of {field} is all zeros: writes nothing"),
        )),
    }
}

/// Decodes an NX action body (starting at the subtype). `None` for subtypes this crate
/// does not model, which the caller keeps verbatim.
fn decode_nx(mut a: Reader) -> Result<Option<Action>> {
    let subtype = a.u16("NX action subtype")?;
    Ok(Some(match subtype {
        nxast::RESUBMIT | nxast::RESUBMIT_TABLE | nxast::RESUBMIT_TABLE_CT => {
            let in_port = port_from_ofp10(a.u16("resubmit in_port")?);
            let table = a.u8("resubmit table")?;
            Action::Resubmit {
                in_port,
                table: if subtype == nxast::RESUBMIT || table == 0xff {
                    None
                } else {
                    Some(table)
                },
                ct: subtype == nxast::RESUBMIT_TABLE_CT,
            }
        }
        nxast::REG_MOVE => {
            let n_bits = a.u16("move n_bits")?;
            let src_ofs = a.u16("move src_ofs")?;
            let dst_ofs = a.u16("move dst_ofs")?;
            let src = read_field_header(&mut a, "move source field")?;
            let dst = read_field_header(&mut a, "move destination field")?;
            Action::RegMove {
                src: Subfield {
                    field: src,
                    ofs: src_ofs,
                    n_bits,
                },
                dst: Subfield {
                    field: dst,
                    ofs: dst_ofs,
                    n_bits,
                },
            }
        }
        nxast::REG_LOAD => {
            let ofs_nbits = a.u16("load ofs_nbits")?;
            let dst = read_field_header(&mut a, "load destination field")?;
            let value = a.u64("load value")?;
            Action::RegLoad {
                dst: Subfield::from_ofs_nbits(dst, ofs_nbits),
                value,
            }
        }
        nxast::REG_LOAD2 => {
            let mf = MatchField::decode(&mut a)?;
            Action::SetField(normalized_set_field(mf)?)
        }
        nxast::NOTE => Action::Note(a.rest()),
        nxast::OUTPUT_REG => {
            let ofs_nbits = a.u16("output:reg ofs_nbits")?;
            let src = read_field_header(&mut a, "output:reg source field")?;
            let max_len = a.u16("output:reg max_len")?;
            Action::OutputReg {
                src: Subfield::from_ofs_nbits(src, ofs_nbits),
                max_len,
            }
        }
        nxast::LEARN => Action::Learn(decode_learn(&mut a)?),
        nxast::CONTROLLER => {
            let max_len = a.u16("controller max_len")?;
            let controller_id = a.u16("controller id")?;
            let reason = a.u8("controller reason")?;
            Action::Controller {
                max_len,
                controller_id,
                reason,
            }
        }
        nxast::CONTROLLER2 => Action::Controller2(decode_controller2(&mut a)?),
        nxast::CONJUNCTION => {
            let clause = a.u8("conjunction clause")?;
            let n_clauses = a.u8("conjunction n_clauses")?;
            let id = a.u32("conjunction id")?;
            if n_clauses < 2 || clause >= n_clauses {
                return Err(Error::bad_value(
                    "conjunction",
                    format!("clause {clause} (0-based) of {n_clauses}"),
                ));
            }
            Action::Conjunction {
                id,
                clause: clause + 1,
                n_clauses,
            }
        }
        nxast::CT => Action::Ct(decode_ct(&mut a)?),
        nxast::CT_CLEAR => Action::CtClear,
        nxast::MULTIPATH => {
            let fields = a.u16("multipath fields")?;
            let basis = a.u16("multipath basis")?;
            a.skip("multipath pad", 2)?;
            let algorithm = a.u16("multipath algorithm")?;
            let max_link = a.u16("multipath max_link")?;
            let arg = a.u32("multipath arg")?;
            a.skip("multipath pad", 2)?;
            let ofs_nbits = a.u16("multipath ofs_nbits")?;
            let dst = read_field_header(&mut a, "multipath destination field")?;
            let (Some(fields), Some(algorithm)) = (
                HashFields::from_number(fields),
                MultipathAlgorithm::from_number(algorithm),
            ) else {
                // Values OVS would refuse: kept verbatim.
                return Ok(None);
            };
            Action::Multipath(Multipath {
                fields,
                basis,
                algorithm,
                n_links: u32::from(max_link) + 1,
                arg,
                dst: Subfield::from_ofs_nbits(dst, ofs_nbits),
            })
        }
        _ => return Ok(None),
    }))
}

const NX_CT_F_COMMIT: u16 = 1;
const NX_CT_F_FORCE: u16 = 2;
const NX_CT_RECIRC_NONE: u8 = 0xff;

fn encode_ct(ct: &Ct, out: &mut BytesMut) -> Result<()> {
    let start = nx_header(out, nxast::CT);
    let mut flags = 0;
    if ct.commit {
        flags |= NX_CT_F_COMMIT;
    }
    if ct.force {
        flags |= NX_CT_F_FORCE;
    }
    out.put_u16(flags);
    match ct.zone {
        CtZone::Value(z) => {
            out.put_u32(0);
            out.put_u16(z);
        }
        CtZone::Field(sf) => {
            let ofs_nbits = sf.ofs_nbits("ct zone")?;
            put_header(out, sf.field.nxm_header(), sf.field.nxm_bits());
            out.put_u16(ofs_nbits);
        }
    }
    if ct.table == Some(NX_CT_RECIRC_NONE) {
        return Err(Error::bad_value(
            "ct table",
            "255 is reserved for \"no recirculation\"",
        ));
    }
    out.put_u8(ct.table.unwrap_or(NX_CT_RECIRC_NONE));
    put_zeros(out, 3);
    out.put_u16(ct.alg);
    if let Some(nat) = &ct.nat {
        encode_nat(nat, out)?;
    }
    Action::encode_list(&ct.actions, out)?;
    finish(out, start, "ct action")
}

fn decode_ct(a: &mut Reader) -> Result<Ct> {
    let flags = a.u16("ct flags")?;
    let zone_src = a.u32("ct zone_src")?;
    let zone_v = a.u16("ct zone")?;
    let zone = if zone_src == 0 {
        CtZone::Value(zone_v)
    } else {
        let class = (zone_src >> 16) as u16;
        let field = Field::from_header(OxmHeader {
            class,
            field: ((zone_src >> 9) & 0x7f) as u8,
            experimenter: None,
        });
        CtZone::Field(Subfield::from_ofs_nbits(field, zone_v))
    };
    let table = a.u8("ct recirc_table")?;
    a.skip("ct pad", 3)?;
    let alg = a.u16("ct alg")?;
    let mut nested = Action::decode_list(a)?;
    let mut nat = None;
    if let Some(i) = nested.iter().position(is_nested_nat)
        && let Action::Experimenter { data, .. } = nested.remove(i)
    {
        nat = Some(decode_nat(Reader::new(data.slice(2..)))?);
    }
    Ok(Ct {
        commit: flags & NX_CT_F_COMMIT != 0,
        force: flags & NX_CT_F_FORCE != 0,
        zone,
        table: (table != NX_CT_RECIRC_NONE).then_some(table),
        alg,
        nat,
        actions: nested,
    })
}

/// NXAST_NAT is only meaningful nested in `ct`, so it is not an [`Action`] variant of its
/// own: the generic decoder leaves it as an NX experimenter action, which `ct` picks out.
fn is_nested_nat(a: &Action) -> bool {
    matches!(a, Action::Experimenter { experimenter, data }
        if *experimenter == NX_EXPERIMENTER && data.len() >= 2
            && u16::from_be_bytes([data[0], data[1]]) == nxast::NAT)
}

const NX_NAT_F_SRC: u16 = 1;
const NX_NAT_F_DST: u16 = 2;
const NX_NAT_F_PERSISTENT: u16 = 4;
const NX_NAT_F_PROTO_HASH: u16 = 8;
const NX_NAT_F_PROTO_RANDOM: u16 = 16;
const NX_NAT_RANGE_IPV4_MIN: u16 = 1;
const NX_NAT_RANGE_IPV4_MAX: u16 = 2;
const NX_NAT_RANGE_IPV6_MIN: u16 = 4;
const NX_NAT_RANGE_IPV6_MAX: u16 = 8;
const NX_NAT_RANGE_PROTO_MIN: u16 = 16;
const NX_NAT_RANGE_PROTO_MAX: u16 = 32;

fn encode_nat(nat: &Nat, out: &mut BytesMut) -> Result<()> {
    let start = nx_header(out, nxast::NAT);
    put_zeros(out, 2);
    let mut flags = match nat.kind {
        Some(NatKind::Src) => NX_NAT_F_SRC,
        Some(NatKind::Dst) => NX_NAT_F_DST,
        None => 0,
    };
    if nat.persistent {
        flags |= NX_NAT_F_PERSISTENT;
    }
    if nat.hash {
        flags |= NX_NAT_F_PROTO_HASH;
    }
    if nat.random {
        flags |= NX_NAT_F_PROTO_RANDOM;
    }
    let mut present = 0;
    match (nat.addr_min, nat.addr_max) {
        (None, None) => {}
        (Some(IpAddr::V4(_)), None | Some(IpAddr::V4(_))) => {
            present |= NX_NAT_RANGE_IPV4_MIN;
            if nat.addr_max.is_some() {
                present |= NX_NAT_RANGE_IPV4_MAX;
            }
        }
        (Some(IpAddr::V6(_)), None | Some(IpAddr::V6(_))) => {
            present |= NX_NAT_RANGE_IPV6_MIN;
            if nat.addr_max.is_some() {
                present |= NX_NAT_RANGE_IPV6_MAX;
            }
        }
        (min, max) => {
            return Err(Error::bad_value(
                "nat address range",
                format!("{min:?}-{max:?}: need a minimum, and both of one family"),
            ));
        }
    }
    if nat.port_min.is_some() {
        present |= NX_NAT_RANGE_PROTO_MIN;
    }
    if nat.port_max.is_some() {
        if nat.port_min.is_none() {
            return Err(Error::bad_value(
                "nat port range",
                "a maximum port needs a minimum port",
            ));
        }
        present |= NX_NAT_RANGE_PROTO_MAX;
    }
    out.put_u16(flags);
    out.put_u16(present);
    for a in [nat.addr_min, nat.addr_max].into_iter().flatten() {
        match a {
            IpAddr::V4(a) => out.put_slice(&a.octets()),
            IpAddr::V6(a) => out.put_slice(&a.octets()),
        }
    }
    for p in [nat.port_min, nat.port_max].into_iter().flatten() {
        out.put_u16(p);
    }
    finish(out, start, "nat action")
}

fn decode_nat(mut a: Reader) -> Result<Nat> {
    a.skip("nat pad", 2)?;
    let flags = a.u16("nat flags")?;
    let present = a.u16("nat range_present")?;
    let kind = match flags & (NX_NAT_F_SRC | NX_NAT_F_DST) {
        0 => None,
        NX_NAT_F_SRC => Some(NatKind::Src),
        NX_NAT_F_DST => Some(NatKind::Dst),
        _ => {
            return Err(Error::bad_value(
                "nat flags",
                format!("{flags:#x}: both src and dst"),
            ));
        }
    };
    let mut nat = Nat {
        kind,
        persistent: flags & NX_NAT_F_PERSISTENT != 0,
        hash: flags & NX_NAT_F_PROTO_HASH != 0,
        random: flags & NX_NAT_F_PROTO_RANDOM != 0,
        ..Nat::default()
    };
    if present & NX_NAT_RANGE_IPV4_MIN != 0 {
        nat.addr_min = Some(IpAddr::from(a.array::<4>("nat ipv4 min")?));
    }
    if present & NX_NAT_RANGE_IPV4_MAX != 0 {
        nat.addr_max = Some(IpAddr::from(a.array::<4>("nat ipv4 max")?));
    }
    if present & NX_NAT_RANGE_IPV6_MIN != 0 {
        nat.addr_min = Some(IpAddr::from(a.array::<16>("nat ipv6 min")?));
    }
    if present & NX_NAT_RANGE_IPV6_MAX != 0 {
        nat.addr_max = Some(IpAddr::from(a.array::<16>("nat ipv6 max")?));
    }
    if present & NX_NAT_RANGE_PROTO_MIN != 0 {
        nat.port_min = Some(a.u16("nat port min")?);
    }
    if present & NX_NAT_RANGE_PROTO_MAX != 0 {
        nat.port_max = Some(a.u16("nat port max")?);
    }
    Ok(nat)
}

const NX_LEARN_N_BITS_MASK: u16 = 0x3ff;
const NX_LEARN_SRC_IMMEDIATE: u16 = 1 << 13;
const NX_LEARN_DST_MASK: u16 = 3 << 11;
const NX_LEARN_DST_MATCH: u16 = 0;
const NX_LEARN_DST_LOAD: u16 = 1 << 11;
const NX_LEARN_DST_OUTPUT: u16 = 2 << 11;

fn encode_learn(l: &Learn, out: &mut BytesMut) -> Result<()> {
    let start = nx_header(out, nxast::LEARN);
    out.put_u16(l.idle_timeout);
    out.put_u16(l.hard_timeout);
    out.put_u16(l.priority);
    out.put_u64(l.cookie);
    out.put_u16(l.flags);
    out.put_u8(l.table_id);
    out.put_u8(0);
    out.put_u16(l.fin_idle_timeout);
    out.put_u16(l.fin_hard_timeout);
    for spec in &l.specs {
        match spec {
            LearnSpec::Match { src, dst } | LearnSpec::Load { src, dst } => {
                dst.check("learn destination")?;
                if let LearnSrc::Field(s) = src
                    && s.n_bits != dst.n_bits
                {
                    return Err(Error::bad_value(
                        "learn spec",
                        format!(
                            "source {} is {} bits, destination {} is {} bits",
                            s.field, s.n_bits, dst.field, dst.n_bits
                        ),
                    ));
                }
                if dst.n_bits > NX_LEARN_N_BITS_MASK {
                    return Err(Error::bad_value("learn spec", "more than 1023 bits"));
                }
                let mut h = dst.n_bits;
                if matches!(src, LearnSrc::Value(_)) {
                    h |= NX_LEARN_SRC_IMMEDIATE;
                }
                if matches!(spec, LearnSpec::Load { .. }) {
                    h |= NX_LEARN_DST_LOAD;
                }
                out.put_u16(h);
                encode_learn_src(src, dst.n_bits, out)?;
                put_header(out, dst.field.nxm_header(), dst.field.nxm_bits());
                out.put_u16(dst.ofs);
            }
            LearnSpec::Output { src } => {
                src.check("learn output source")?;
                out.put_u16(src.n_bits | NX_LEARN_DST_OUTPUT);
                encode_learn_src(&LearnSrc::Field(*src), src.n_bits, out)?;
            }
        }
    }
    finish(out, start, "learn action")
}

fn decode_learn(a: &mut Reader) -> Result<Learn> {
    let mut l = Learn {
        idle_timeout: a.u16("learn idle_timeout")?,
        hard_timeout: a.u16("learn hard_timeout")?,
        priority: a.u16("learn priority")?,
        cookie: a.u64("learn cookie")?,
        flags: a.u16("learn flags")?,
        table_id: a.u8("learn table_id")?,
        ..Learn::default()
    };
    a.skip("learn pad", 1)?;
    l.fin_idle_timeout = a.u16("learn fin_idle_timeout")?;
    l.fin_hard_timeout = a.u16("learn fin_hard_timeout")?;
    // Specs run until a zero header or the end; the rest is padding.
    while a.remaining() >= 2 {
        let h = a.u16("learn spec header")?;
        if h == 0 {
            break;
        }
        let n_bits = h & NX_LEARN_N_BITS_MASK;
        if n_bits == 0 {
            return Err(Error::bad_value("learn spec", "zero-width spec"));
        }
        let src = if h & NX_LEARN_SRC_IMMEDIATE != 0 {
            let len = 2 * usize::from(n_bits).div_ceil(16);
            LearnSrc::Value(a.bytes("learn immediate value", len)?)
        } else {
            let field = read_field_header(a, "learn source field")?;
            let ofs = a.u16("learn source ofs")?;
            LearnSrc::Field(Subfield { field, ofs, n_bits })
        };
        let spec = match h & NX_LEARN_DST_MASK {
            NX_LEARN_DST_MATCH | NX_LEARN_DST_LOAD => {
                let field = read_field_header(a, "learn destination field")?;
                let ofs = a.u16("learn destination ofs")?;
                let dst = Subfield { field, ofs, n_bits };
                if h & NX_LEARN_DST_MASK == NX_LEARN_DST_LOAD {
                    LearnSpec::Load { src, dst }
                } else {
                    LearnSpec::Match { src, dst }
                }
            }
            NX_LEARN_DST_OUTPUT => match src {
                LearnSrc::Field(src) => LearnSpec::Output { src },
                LearnSrc::Value(_) => {
                    return Err(Error::bad_value(
                        "learn spec",
                        "output spec with an immediate source",
                    ));
                }
            },
            _ => {
                return Err(Error::bad_value(
                    "learn spec",
                    format!("unknown destination type in header {h:#06x}"),
                ));
            }
        };
        l.specs.push(spec);
    }
    Ok(l)
}

mod nxac2pt {
    pub const MAX_LEN: u16 = 0;
    pub const CONTROLLER_ID: u16 = 1;
    pub const REASON: u16 = 2;
    pub const USERDATA: u16 = 3;
    pub const PAUSE: u16 = 4;
    pub const METER_ID: u16 = 5;
}

fn put_prop(out: &mut BytesMut, ptype: u16, value: &[u8]) -> Result<()> {
    let len = 4 + value.len();
    let len16 = u16::try_from(len).map_err(|_| Error::TooLong {
        what: "controller2 property",
        length: len,
        max: u16::MAX as usize,
    })?;
    out.put_u16(ptype);
    out.put_u16(len16);
    out.put_slice(value);
    put_zeros(out, pad8(len));
    Ok(())
}

fn encode_controller2(c: &Controller2, out: &mut BytesMut) -> Result<()> {
    let start = nx_header(out, nxast::CONTROLLER2);
    put_zeros(out, 6);
    // lib/ofp-prop.c pads u8 and u16 property values to 4 bytes inside the length.
    if let Some(v) = c.max_len {
        let [a, b] = v.to_be_bytes();
        put_prop(out, nxac2pt::MAX_LEN, &[a, b, 0, 0])?;
    }
    if let Some(v) = c.controller_id {
        let [a, b] = v.to_be_bytes();
        put_prop(out, nxac2pt::CONTROLLER_ID, &[a, b, 0, 0])?;
    }
    if let Some(v) = c.reason {
        put_prop(out, nxac2pt::REASON, &[v, 0, 0, 0])?;
    }
    if let Some(v) = &c.userdata {
        put_prop(out, nxac2pt::USERDATA, v)?;
    }
    if c.pause {
        put_prop(out, nxac2pt::PAUSE, &[])?;
    }
    if let Some(v) = c.meter_id {
        put_prop(out, nxac2pt::METER_ID, &v.to_be_bytes())?;
    }
    finish(out, start, "controller2 action")
}

fn decode_controller2(a: &mut Reader) -> Result<Controller2> {
    a.skip("controller2 pad", 6)?;
    let mut c = Controller2::default();
    while !a.is_empty() {
        let ptype = a.u16("controller2 property type")?;
        let plen = a.u16("controller2 property length")? as usize;
        if plen < 4 {
            return Err(Error::BadLength {
                what: "controller2 property",
                length: plen,
                reason: "shorter than its 4-byte header",
            });
        }
        let mut v = a.sub("controller2 property value", plen - 4)?;
        a.skip("controller2 property padding", pad8(plen))?;
        match ptype {
            nxac2pt::MAX_LEN => c.max_len = Some(v.u16("controller2 max_len")?),
            nxac2pt::CONTROLLER_ID => c.controller_id = Some(v.u16("controller2 id")?),
            nxac2pt::REASON => c.reason = Some(v.u8("controller2 reason")?),
            nxac2pt::USERDATA => c.userdata = Some(v.rest()),
            nxac2pt::PAUSE => c.pause = true,
            nxac2pt::METER_ID => c.meter_id = Some(v.u32("controller2 meter_id")?),
            other => {
                return Err(Error::bad_value(
                    "controller2 property",
                    format!("unknown type {other}"),
                ));
            }
        }
    }
    Ok(c)
}
