//! Match fields: the OXM/NXM identity of every field this crate knows, its width,
//! maskability and prerequisites, and the OVS names used by `ovs-ofctl`.
//!
//! Header choice follows ovs-vswitchd (lib/nx-match.c `nxm_field_by_mf_id`): in OpenFlow
//! 1.3 matches and `set_field`, a field is sent with its newest header defined for OF1.3
//! ([`Field::oxm_header`]: OXM_OF_BASIC where one exists, the ONF experimenter OXM for
//! `tcp_flags`, NXM_1 for OVS-only fields); inside Nicira actions (`move`, `load`,
//! `learn`, `output:reg`) OVS writes the oldest, NXM header ([`Field::nxm_header`]). On
//! decode every alias is accepted.

use std::fmt;

/// OXM class of the NXM_OF_* fields (the original Nicira set).
pub const OXM_CLASS_NXM_0: u16 = 0x0000;
/// OXM class of the NXM_NX_* fields (OVS extensions).
pub const OXM_CLASS_NXM_1: u16 = 0x0001;
/// OXM class of the OpenFlow basic fields.
pub const OXM_CLASS_OPENFLOW_BASIC: u16 = 0x8000;
/// OXM class of the OpenFlow 1.5 packet registers (xreg0-7), which OVS accepts in 1.3.
pub const OXM_CLASS_PACKET_REGS: u16 = 0x8001;
/// OXM class for experimenter fields: a 32-bit experimenter id follows the header.
pub const OXM_CLASS_EXPERIMENTER: u16 = 0xffff;
/// The Nicira experimenter id (NX_VENDOR_ID), used by NX actions, messages and errors.
pub const NX_EXPERIMENTER: u32 = 0x0000_2320;
/// The ONF experimenter id (ONF_VENDOR_ID), used for ONF extensions to OpenFlow 1.3.
pub const ONF_EXPERIMENTER: u32 = 0x4f4e_4600;

/// Longest tunnel metadata option OVS supports (TLV_MAX_OPT_SIZE).
pub const TUN_METADATA_MAX_LEN: usize = 124;

/// Identity of a field on the wire: class, field number and, for class 0xffff, the
/// experimenter id. The has-mask bit and length are not part of the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OxmHeader {
    /// OXM class (0x0000 NXM_0, 0x0001 NXM_1, 0x8000 basic, 0xffff experimenter...).
    pub class: u16,
    /// Field number within the class (7 bits).
    pub field: u8,
    /// Experimenter id when `class == 0xffff`.
    pub experimenter: Option<u32>,
}

impl OxmHeader {
    const fn basic(field: u8) -> OxmHeader {
        OxmHeader {
            class: OXM_CLASS_OPENFLOW_BASIC,
            field,
            experimenter: None,
        }
    }
    const fn nxm0(field: u8) -> OxmHeader {
        OxmHeader {
            class: OXM_CLASS_NXM_0,
            field,
            experimenter: None,
        }
    }
    const fn nxm1(field: u8) -> OxmHeader {
        OxmHeader {
            class: OXM_CLASS_NXM_1,
            field,
            experimenter: None,
        }
    }

    /// The 32-bit header word for a value of `len` bytes (mask included in `len` when
    /// `has_mask`); for experimenter fields the 4-byte experimenter id counts in the length.
    pub fn word(&self, has_mask: bool, payload_len: usize) -> u32 {
        let len = payload_len + if self.experimenter.is_some() { 4 } else { 0 };
        (u32::from(self.class) << 16)
            | (u32::from(self.field & 0x7f) << 9)
            | (u32::from(has_mask) << 8)
            | (len as u32 & 0xff)
    }

    /// Bytes this header occupies on the wire (4, or 8 with an experimenter id).
    pub fn wire_len(&self) -> usize {
        if self.experimenter.is_some() { 8 } else { 4 }
    }
}

/// What a match must also contain for a field to be matched (OpenFlow 1.3 §7.2.3.8 and
/// OVS's `mf_prereqs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prerequisite {
    /// No prerequisite.
    None,
    /// `in_port`.
    InPort,
    /// `eth_type=0x0806` (or RARP 0x8035).
    Arp,
    /// `ct_state` with `+trk` (the `ct_*` tuple fields, OVS's MFP_CT).
    Ct,
    /// `vlan_vid` with the present bit (0x1000) set.
    VlanVid,
    /// `eth_type=0x0800`.
    Ipv4,
    /// `eth_type=0x86dd`.
    Ipv6,
    /// `eth_type=0x0800` or `0x86dd`.
    IpAny,
    /// IPv4/IPv6 and `ip_proto=6`.
    Tcp,
    /// IPv4/IPv6 and `ip_proto=17`.
    Udp,
    /// IPv4/IPv6 and `ip_proto=132`.
    Sctp,
    /// `eth_type=0x0800` and `ip_proto=1`.
    Icmpv4,
    /// `eth_type=0x86dd` and `ip_proto=58`.
    Icmpv6,
    /// ICMPv6 with `icmpv6_type` 135 or 136.
    Nd,
    /// ICMPv6 with `icmpv6_type=135` (neighbor solicitation).
    NdSolicit,
    /// ICMPv6 with `icmpv6_type=136` (neighbor advertisement).
    NdAdvert,
}

impl fmt::Display for Prerequisite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prerequisite::None => "nothing",
            Prerequisite::InPort => "in_port",
            Prerequisite::Arp => "eth_type=0x0806 (arp)",
            Prerequisite::Ct => "ct_state with +trk",
            Prerequisite::VlanVid => "vlan_vid with the VLAN-present bit 0x1000",
            Prerequisite::Ipv4 => "eth_type=0x0800 (ip)",
            Prerequisite::Ipv6 => "eth_type=0x86dd (ipv6)",
            Prerequisite::IpAny => "eth_type=0x0800 or 0x86dd (ip or ipv6)",
            Prerequisite::Tcp => "eth_type=0x0800/0x86dd and ip_proto=6 (tcp)",
            Prerequisite::Udp => "eth_type=0x0800/0x86dd and ip_proto=17 (udp)",
            Prerequisite::Sctp => "eth_type=0x0800/0x86dd and ip_proto=132 (sctp)",
            Prerequisite::Icmpv4 => "eth_type=0x0800 and ip_proto=1 (icmp)",
            Prerequisite::Icmpv6 => "eth_type=0x86dd and ip_proto=58 (icmp6)",
            Prerequisite::Nd => "icmp6 with icmpv6_type=135 or 136",
            Prerequisite::NdSolicit => "icmp6 with icmpv6_type=135",
            Prerequisite::NdAdvert => "icmp6 with icmpv6_type=136",
        })
    }
}

/// A match field. The declaration order is the order ovs-vswitchd writes fields in
/// (lib/nx-match.c `nx_put_raw`), so a [`crate::Match`] kept sorted by `Field` encodes to
/// the same bytes OVS sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `conj_id`: the conjunction id that matched (NXM_NX_CONJ_ID).
    ConjId,
    /// `in_port`: ingress OpenFlow port (32-bit OXM_OF_IN_PORT).
    InPort,
    /// `in_phy_port`: physical ingress port (OXM; OVS does not implement it).
    InPhyPort,
    /// `eth_src` (`dl_src`).
    EthSrc,
    /// `eth_dst` (`dl_dst`).
    EthDst,
    /// `eth_type` (`dl_type`).
    EthType,
    /// `vlan_vid`: 0x1000 | VLAN id when tagged, 0 when not.
    VlanVid,
    /// `vlan_pcp`.
    VlanPcp,
    /// `ip_src` / `nw_src` (IPv4).
    Ipv4Src,
    /// `ip_dst` / `nw_dst` (IPv4).
    Ipv4Dst,
    /// `ipv6_src`.
    Ipv6Src,
    /// `ipv6_dst`.
    Ipv6Dst,
    /// `ip_frag` (NXM_NX_IP_FRAG): bit 0 = fragment, bit 1 = later fragment.
    IpFrag,
    /// `ip_dscp`: DSCP in the low 6 bits.
    IpDscp,
    /// `ip_ecn` / `nw_ecn`.
    IpEcn,
    /// `nw_ttl` (NXM_NX_IP_TTL).
    IpTtl,
    /// `ipv6_label`: 20-bit flow label.
    Ipv6Flabel,
    /// `ip_proto` / `nw_proto`.
    IpProto,
    /// `tcp_src`.
    TcpSrc,
    /// `tcp_dst`.
    TcpDst,
    /// `tcp_flags` (12 bits; ONF experimenter OXM in OpenFlow 1.3).
    TcpFlags,
    /// `udp_src`.
    UdpSrc,
    /// `udp_dst`.
    UdpDst,
    /// `sctp_src`.
    SctpSrc,
    /// `sctp_dst`.
    SctpDst,
    /// `icmp_type`.
    Icmpv4Type,
    /// `icmp_code`.
    Icmpv4Code,
    /// `icmpv6_type`.
    Icmpv6Type,
    /// `icmpv6_code`.
    Icmpv6Code,
    /// `nd_target`.
    NdTarget,
    /// `nd_sll`.
    NdSll,
    /// `nd_tll`.
    NdTll,
    /// `arp_op`.
    ArpOp,
    /// `arp_spa`.
    ArpSpa,
    /// `arp_tpa`.
    ArpTpa,
    /// `arp_sha`.
    ArpSha,
    /// `arp_tha`.
    ArpTha,
    /// `tun_id` / `tunnel_id`.
    TunnelId,
    /// `tun_flags` (bit 0: oam).
    TunFlags,
    /// `tun_src`: outer IPv4 source.
    TunSrc,
    /// `tun_dst`: outer IPv4 destination.
    TunDst,
    /// `tun_ipv6_src`.
    TunIpv6Src,
    /// `tun_ipv6_dst`.
    TunIpv6Dst,
    /// `tun_metadata<N>`, N in 0..64; variable width, 1-124 bytes.
    TunMetadata(u8),
    /// `reg<N>`, N in 0..16: 32-bit scratch registers.
    Reg(u8),
    /// `xreg<N>`, N in 0..8: 64-bit views of reg pairs (xreg N = reg 2N<<32 | reg 2N+1).
    XReg(u8),
    /// `xxreg<N>`, N in 0..4: 128-bit views of reg quads.
    XXReg(u8),
    /// `pkt_mark`.
    PktMark,
    /// `ct_state`.
    CtState,
    /// `ct_zone`.
    CtZone,
    /// `ct_mark`.
    CtMark,
    /// `ct_label` (128 bits).
    CtLabel,
    /// `ct_nw_src`: original-direction IPv4 source of the connection.
    CtNwSrc,
    /// `ct_ipv6_src`.
    CtIpv6Src,
    /// `ct_nw_dst`.
    CtNwDst,
    /// `ct_ipv6_dst`.
    CtIpv6Dst,
    /// `ct_nw_proto`: IP protocol of the connection (OVS only sends `ct_tp_*` with it).
    CtNwProto,
    /// `ct_tp_src`.
    CtTpSrc,
    /// `ct_tp_dst`.
    CtTpDst,
    /// `metadata`: the OpenFlow 1.1+ pipeline metadata.
    Metadata,
    /// A field this crate has no name for, kept so that messages round-trip.
    Other(OxmHeader),
}

/// Static facts about a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spec {
    oxm: OxmHeader,
    nxm: Option<(OxmHeader, usize)>,
    width: usize,
    maskable: bool,
    prereq: Prerequisite,
}

const fn spec(oxm: OxmHeader, width: usize, maskable: bool, prereq: Prerequisite) -> Spec {
    Spec {
        oxm,
        nxm: None,
        width,
        maskable,
        prereq,
    }
}

const fn spec2(
    oxm: OxmHeader,
    nxm: OxmHeader,
    width: usize,
    maskable: bool,
    prereq: Prerequisite,
) -> Spec {
    Spec {
        oxm,
        nxm: Some((nxm, width)),
        width,
        maskable,
        prereq,
    }
}

const fn nx(field: u8, width: usize, maskable: bool, prereq: Prerequisite) -> Spec {
    spec(OxmHeader::nxm1(field), width, maskable, prereq)
}

impl Field {
    /// Every named field (registers and tunnel metadata expanded), in wire order.
    pub fn all() -> Vec<Field> {
        use Field::*;
        let mut v = vec![
            ConjId, InPort, InPhyPort, EthSrc, EthDst, EthType, VlanVid, VlanPcp, Ipv4Src, Ipv4Dst,
            Ipv6Src, Ipv6Dst, Ipv6Flabel, IpFrag, IpDscp, IpEcn, IpTtl, IpProto, TcpSrc, TcpDst,
            TcpFlags, UdpSrc, UdpDst, SctpSrc, SctpDst, Icmpv4Type, Icmpv4Code, Icmpv6Type,
            Icmpv6Code, NdTarget, NdSll, NdTll, ArpOp, ArpSpa, ArpTpa, ArpSha, ArpTha, TunnelId,
            TunSrc, TunDst, TunIpv6Src, TunIpv6Dst, TunFlags,
        ];
        v.extend((0..64).map(TunMetadata));
        v.extend((0..16).map(Reg));
        v.extend((0..8).map(XReg));
        v.extend((0..4).map(XXReg));
        v.extend([
            PktMark, CtState, CtZone, CtMark, CtLabel, CtNwSrc, CtIpv6Src, CtNwDst, CtIpv6Dst,
            CtNwProto, CtTpSrc, CtTpDst, Metadata,
        ]);
        v
    }

    fn spec(self) -> Spec {
        use Field::*;
        use Prerequisite as P;
        let b = OxmHeader::basic;
        let n0 = OxmHeader::nxm0;
        let n1 = OxmHeader::nxm1;
        match self {
            ConjId => nx(37, 4, false, P::None),
            InPort => Spec {
                oxm: b(0),
                // NXM_OF_IN_PORT is the 16-bit OpenFlow 1.0 view.
                nxm: Some((n0(0), 2)),
                width: 4,
                maskable: false,
                prereq: P::None,
            },
            InPhyPort => spec(b(1), 4, false, P::InPort),
            EthSrc => spec2(b(4), n0(2), 6, true, P::None),
            EthDst => spec2(b(3), n0(1), 6, true, P::None),
            EthType => spec2(b(5), n0(3), 2, false, P::None),
            VlanVid => spec(b(6), 2, true, P::None),
            VlanPcp => spec(b(7), 1, false, P::VlanVid),
            Ipv4Src => spec2(b(11), n0(7), 4, true, P::Ipv4),
            Ipv4Dst => spec2(b(12), n0(8), 4, true, P::Ipv4),
            Ipv6Src => spec2(b(26), n1(19), 16, true, P::Ipv6),
            Ipv6Dst => spec2(b(27), n1(20), 16, true, P::Ipv6),
            Ipv6Flabel => spec2(b(28), n1(27), 4, true, P::Ipv6),
            IpFrag => nx(26, 1, true, P::IpAny),
            IpDscp => spec(b(8), 1, false, P::IpAny),
            IpEcn => spec2(b(9), n1(28), 1, false, P::IpAny),
            IpTtl => nx(29, 1, false, P::IpAny),
            IpProto => spec2(b(10), n0(6), 1, false, P::IpAny),
            TcpSrc => spec2(b(13), n0(9), 2, true, P::Tcp),
            TcpDst => spec2(b(14), n0(10), 2, true, P::Tcp),
            TcpFlags => Spec {
                oxm: OxmHeader {
                    class: OXM_CLASS_EXPERIMENTER,
                    field: 42,
                    experimenter: Some(ONF_EXPERIMENTER),
                },
                nxm: Some((n1(34), 2)),
                width: 2,
                maskable: true,
                prereq: P::Tcp,
            },
            UdpSrc => spec2(b(15), n0(11), 2, true, P::Udp),
            UdpDst => spec2(b(16), n0(12), 2, true, P::Udp),
            SctpSrc => spec(b(17), 2, true, P::Sctp),
            SctpDst => spec(b(18), 2, true, P::Sctp),
            Icmpv4Type => spec2(b(19), n0(13), 1, false, P::Icmpv4),
            Icmpv4Code => spec2(b(20), n0(14), 1, false, P::Icmpv4),
            Icmpv6Type => spec2(b(29), n1(21), 1, false, P::Icmpv6),
            Icmpv6Code => spec2(b(30), n1(22), 1, false, P::Icmpv6),
            NdTarget => spec2(b(31), n1(23), 16, true, P::Nd),
            NdSll => spec2(b(32), n1(24), 6, true, P::NdSolicit),
            NdTll => spec2(b(33), n1(25), 6, true, P::NdAdvert),
            ArpOp => spec2(b(21), n0(15), 2, false, P::Arp),
            ArpSpa => spec2(b(22), n0(16), 4, true, P::Arp),
            ArpTpa => spec2(b(23), n0(17), 4, true, P::Arp),
            ArpSha => spec2(b(24), n1(17), 6, true, P::Arp),
            ArpTha => spec2(b(25), n1(18), 6, true, P::Arp),
            TunnelId => spec2(b(38), n1(16), 8, true, P::None),
            TunSrc => nx(31, 4, true, P::None),
            TunDst => nx(32, 4, true, P::None),
            TunIpv6Src => nx(109, 16, true, P::None),
            TunIpv6Dst => nx(110, 16, true, P::None),
            TunFlags => nx(104, 2, true, P::None),
            TunMetadata(i) => nx(40 + (i & 63), TUN_METADATA_MAX_LEN, true, P::None),
            Reg(i) => nx(i & 15, 4, true, P::None),
            XReg(i) => spec(
                OxmHeader {
                    class: OXM_CLASS_PACKET_REGS,
                    field: i & 7,
                    experimenter: None,
                },
                8,
                true,
                P::None,
            ),
            XXReg(i) => nx(111 + (i & 3), 16, true, P::None),
            PktMark => nx(33, 4, true, P::None),
            CtState => nx(105, 4, true, P::None),
            CtZone => nx(106, 2, false, P::None),
            CtMark => nx(107, 4, true, P::None),
            CtLabel => nx(108, 16, true, P::None),
            CtNwProto => nx(119, 1, false, P::Ct),
            CtNwSrc => nx(120, 4, true, P::Ct),
            CtNwDst => nx(121, 4, true, P::Ct),
            CtIpv6Src => nx(122, 16, true, P::Ct),
            CtIpv6Dst => nx(123, 16, true, P::Ct),
            CtTpSrc => nx(124, 2, true, P::Ct),
            CtTpDst => nx(125, 2, true, P::Ct),
            Metadata => spec(b(2), 8, true, P::None),
            // Unknown fields: width comes from the value, assume maskable so they round-trip.
            Other(h) => spec(h, 0, true, P::None),
        }
    }

    /// False for indices out of range (`Reg(16)`, `TunMetadata(64)`...) and for
    /// [`Field::Other`] headers whose experimenter id disagrees with the class; such
    /// fields are rejected by [`crate::MatchField::normalized`] and in subfields.
    pub fn is_valid(self) -> bool {
        match self {
            Field::TunMetadata(i) => i < 64,
            Field::Reg(i) => i < 16,
            Field::XReg(i) => i < 8,
            Field::XXReg(i) => i < 4,
            Field::Other(h) => {
                (h.class == OXM_CLASS_EXPERIMENTER) == h.experimenter.is_some() && h.field < 128
            }
            _ => true,
        }
    }

    /// Header used in OpenFlow 1.3 matches and `OFPAT_SET_FIELD`.
    pub fn oxm_header(self) -> OxmHeader {
        self.spec().oxm
    }

    /// Header used for this field inside Nicira actions (`move`, `load`, `learn`,
    /// `output:reg`): the NXM header where one exists, else the OXM header.
    pub fn nxm_header(self) -> OxmHeader {
        let s = self.spec();
        s.nxm.map(|(h, _)| h).unwrap_or(s.oxm)
    }

    /// Width in bits of the field as addressed by a subfield in Nicira actions. This
    /// differs from `8 * width()` only for `in_port` (16-bit NXM_OF_IN_PORT).
    pub fn nxm_bits(self) -> usize {
        let s = self.spec();
        8 * s.nxm.map(|(_, w)| w).unwrap_or(s.width)
    }

    /// Width in bytes of the field's value (for `tun_metadata`, the maximum: 124; for
    /// [`Field::Other`], 0, meaning "whatever the value's length is").
    pub fn width(self) -> usize {
        self.spec().width
    }

    /// True when the value's length varies (`tun_metadata<N>`, unknown fields).
    pub fn is_variable_width(self) -> bool {
        matches!(self, Field::TunMetadata(_) | Field::Other(_))
    }

    /// Whether OVS accepts an arbitrary bitwise mask for the field.
    pub fn is_maskable(self) -> bool {
        self.spec().maskable
    }

    /// What a match must also contain to match this field.
    pub fn prerequisite(self) -> Prerequisite {
        self.spec().prereq
    }

    /// Finds the field for a header seen on the wire; any alias OVS defines (NXM or OXM)
    /// maps to the same field. Unknown headers give [`Field::Other`].
    pub fn from_header(h: OxmHeader) -> Field {
        use Field::*;
        match (h.class, h.field, h.experimenter) {
            (OXM_CLASS_OPENFLOW_BASIC, f, None) => match f {
                0 => InPort,
                1 => InPhyPort,
                2 => Metadata,
                3 => EthDst,
                4 => EthSrc,
                5 => EthType,
                6 => VlanVid,
                7 => VlanPcp,
                8 => IpDscp,
                9 => IpEcn,
                10 => IpProto,
                11 => Ipv4Src,
                12 => Ipv4Dst,
                13 => TcpSrc,
                14 => TcpDst,
                15 => UdpSrc,
                16 => UdpDst,
                17 => SctpSrc,
                18 => SctpDst,
                19 => Icmpv4Type,
                20 => Icmpv4Code,
                21 => ArpOp,
                22 => ArpSpa,
                23 => ArpTpa,
                24 => ArpSha,
                25 => ArpTha,
                26 => Ipv6Src,
                27 => Ipv6Dst,
                28 => Ipv6Flabel,
                29 => Icmpv6Type,
                30 => Icmpv6Code,
                31 => NdTarget,
                32 => NdSll,
                33 => NdTll,
                38 => TunnelId,
                42 => TcpFlags,
                _ => Other(h),
            },
            (OXM_CLASS_PACKET_REGS, f, None) if f < 8 => XReg(f),
            (OXM_CLASS_NXM_0, f, None) => match f {
                0 => InPort,
                1 => EthDst,
                2 => EthSrc,
                3 => EthType,
                6 => IpProto,
                7 => Ipv4Src,
                8 => Ipv4Dst,
                9 => TcpSrc,
                10 => TcpDst,
                11 => UdpSrc,
                12 => UdpDst,
                13 => Icmpv4Type,
                14 => Icmpv4Code,
                15 => ArpOp,
                16 => ArpSpa,
                17 => ArpTpa,
                _ => Other(h),
            },
            (OXM_CLASS_NXM_1, f, None) => match f {
                0..=15 => Reg(f),
                16 => TunnelId,
                17 => ArpSha,
                18 => ArpTha,
                19 => Ipv6Src,
                20 => Ipv6Dst,
                21 => Icmpv6Type,
                22 => Icmpv6Code,
                23 => NdTarget,
                24 => NdSll,
                25 => NdTll,
                26 => IpFrag,
                27 => Ipv6Flabel,
                28 => IpEcn,
                29 => IpTtl,
                31 => TunSrc,
                32 => TunDst,
                33 => PktMark,
                34 => TcpFlags,
                37 => ConjId,
                40..=103 => TunMetadata(f - 40),
                104 => TunFlags,
                105 => CtState,
                106 => CtZone,
                107 => CtMark,
                108 => CtLabel,
                109 => TunIpv6Src,
                110 => TunIpv6Dst,
                111..=114 => XXReg(f - 111),
                119 => CtNwProto,
                120 => CtNwSrc,
                121 => CtNwDst,
                122 => CtIpv6Src,
                123 => CtIpv6Dst,
                124 => CtTpSrc,
                125 => CtTpDst,
                _ => Other(h),
            },
            (OXM_CLASS_EXPERIMENTER, 42, Some(ONF_EXPERIMENTER)) => TcpFlags,
            _ => Other(h),
        }
    }

    /// Looks a field up by its `ovs-ofctl` name or alias (`reg3`, `dl_dst`, `nw_src`,
    /// `tun_metadata7`, `NXM_NX_REG0`...). Case-sensitive except NXM/OXM names.
    pub fn from_name(name: &str) -> Option<Field> {
        use Field::*;
        let indexed = |prefix: &str, max: u8| -> Option<u8> {
            let rest = name.strip_prefix(prefix)?;
            if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
                return None;
            }
            let n: u8 = rest.parse().ok()?;
            (n < max).then_some(n)
        };
        if let Some(n) = indexed("tun_metadata", 64) {
            return Some(TunMetadata(n));
        }
        if let Some(n) = indexed("xxreg", 4) {
            return Some(XXReg(n));
        }
        if let Some(n) = indexed("xreg", 8) {
            return Some(XReg(n));
        }
        if let Some(n) = indexed("reg", 16) {
            return Some(Reg(n));
        }
        if let Some(n) = indexed("NXM_NX_REG", 16) {
            return Some(Reg(n));
        }
        if let Some(n) = indexed("NXM_NX_XXREG", 4) {
            return Some(XXReg(n));
        }
        if let Some(n) = indexed("NXM_NX_TUN_METADATA", 64) {
            return Some(TunMetadata(n));
        }
        if let Some(n) = indexed("OXM_OF_PKT_REG", 8) {
            return Some(XReg(n));
        }
        Some(match name {
            "conj_id" | "NXM_NX_CONJ_ID" => ConjId,
            "in_port" | "in_port_oxm" | "NXM_OF_IN_PORT" | "OXM_OF_IN_PORT" => InPort,
            "in_phy_port" | "OXM_OF_IN_PHY_PORT" => InPhyPort,
            "eth_src" | "dl_src" | "NXM_OF_ETH_SRC" | "OXM_OF_ETH_SRC" => EthSrc,
            "eth_dst" | "dl_dst" | "NXM_OF_ETH_DST" | "OXM_OF_ETH_DST" => EthDst,
            "eth_type" | "dl_type" | "NXM_OF_ETH_TYPE" | "OXM_OF_ETH_TYPE" => EthType,
            "vlan_vid" | "OXM_OF_VLAN_VID" => VlanVid,
            "vlan_pcp" | "OXM_OF_VLAN_PCP" => VlanPcp,
            "ip_src" | "nw_src" | "NXM_OF_IP_SRC" | "OXM_OF_IPV4_SRC" => Ipv4Src,
            "ip_dst" | "nw_dst" | "NXM_OF_IP_DST" | "OXM_OF_IPV4_DST" => Ipv4Dst,
            "ipv6_src" | "NXM_NX_IPV6_SRC" | "OXM_OF_IPV6_SRC" => Ipv6Src,
            "ipv6_dst" | "NXM_NX_IPV6_DST" | "OXM_OF_IPV6_DST" => Ipv6Dst,
            "ipv6_label" | "NXM_NX_IPV6_LABEL" | "OXM_OF_IPV6_FLABEL" => Ipv6Flabel,
            "ip_frag" | "nw_frag" | "NXM_NX_IP_FRAG" => IpFrag,
            "ip_dscp" | "OXM_OF_IP_DSCP" => IpDscp,
            "ip_ecn" | "nw_ecn" | "NXM_NX_IP_ECN" | "OXM_OF_IP_ECN" => IpEcn,
            "nw_ttl" | "ip_ttl" | "NXM_NX_IP_TTL" => IpTtl,
            "ip_proto" | "nw_proto" | "NXM_OF_IP_PROTO" | "OXM_OF_IP_PROTO" => IpProto,
            "tcp_src" | "tp_src" | "NXM_OF_TCP_SRC" | "OXM_OF_TCP_SRC" => TcpSrc,
            "tcp_dst" | "tp_dst" | "NXM_OF_TCP_DST" | "OXM_OF_TCP_DST" => TcpDst,
            "tcp_flags" | "NXM_NX_TCP_FLAGS" | "ONFOXM_ET_TCP_FLAGS" => TcpFlags,
            "udp_src" | "NXM_OF_UDP_SRC" | "OXM_OF_UDP_SRC" => UdpSrc,
            "udp_dst" | "NXM_OF_UDP_DST" | "OXM_OF_UDP_DST" => UdpDst,
            "sctp_src" | "OXM_OF_SCTP_SRC" => SctpSrc,
            "sctp_dst" | "OXM_OF_SCTP_DST" => SctpDst,
            "icmp_type" | "icmpv4_type" | "NXM_OF_ICMP_TYPE" | "OXM_OF_ICMPV4_TYPE" => Icmpv4Type,
            "icmp_code" | "icmpv4_code" | "NXM_OF_ICMP_CODE" | "OXM_OF_ICMPV4_CODE" => Icmpv4Code,
            "icmpv6_type" | "NXM_NX_ICMPV6_TYPE" | "OXM_OF_ICMPV6_TYPE" => Icmpv6Type,
            "icmpv6_code" | "NXM_NX_ICMPV6_CODE" | "OXM_OF_ICMPV6_CODE" => Icmpv6Code,
            "nd_target" | "NXM_NX_ND_TARGET" | "OXM_OF_IPV6_ND_TARGET" => NdTarget,
            "nd_sll" | "NXM_NX_ND_SLL" | "OXM_OF_IPV6_ND_SLL" => NdSll,
            "nd_tll" | "NXM_NX_ND_TLL" | "OXM_OF_IPV6_ND_TLL" => NdTll,
            "arp_op" | "NXM_OF_ARP_OP" | "OXM_OF_ARP_OP" => ArpOp,
            "arp_spa" | "NXM_OF_ARP_SPA" | "OXM_OF_ARP_SPA" => ArpSpa,
            "arp_tpa" | "NXM_OF_ARP_TPA" | "OXM_OF_ARP_TPA" => ArpTpa,
            "arp_sha" | "NXM_NX_ARP_SHA" | "OXM_OF_ARP_SHA" => ArpSha,
            "arp_tha" | "NXM_NX_ARP_THA" | "OXM_OF_ARP_THA" => ArpTha,
            "tun_id" | "tunnel_id" | "NXM_NX_TUN_ID" | "OXM_OF_TUNNEL_ID" => TunnelId,
            "tun_src" | "NXM_NX_TUN_IPV4_SRC" => TunSrc,
            "tun_dst" | "NXM_NX_TUN_IPV4_DST" => TunDst,
            "tun_ipv6_src" | "NXM_NX_TUN_IPV6_SRC" => TunIpv6Src,
            "tun_ipv6_dst" | "NXM_NX_TUN_IPV6_DST" => TunIpv6Dst,
            "tun_flags" | "NXM_NX_TUN_FLAGS" => TunFlags,
            "pkt_mark" | "NXM_NX_PKT_MARK" => PktMark,
            "ct_state" | "NXM_NX_CT_STATE" => CtState,
            "ct_zone" | "NXM_NX_CT_ZONE" => CtZone,
            "ct_mark" | "NXM_NX_CT_MARK" => CtMark,
            "ct_label" | "NXM_NX_CT_LABEL" => CtLabel,
            "ct_nw_proto" | "NXM_NX_CT_NW_PROTO" => CtNwProto,
            "ct_nw_src" | "NXM_NX_CT_NW_SRC" => CtNwSrc,
            "ct_nw_dst" | "NXM_NX_CT_NW_DST" => CtNwDst,
            "ct_ipv6_src" | "NXM_NX_CT_IPV6_SRC" => CtIpv6Src,
            "ct_ipv6_dst" | "NXM_NX_CT_IPV6_DST" => CtIpv6Dst,
            "ct_tp_src" | "NXM_NX_CT_TP_SRC" => CtTpSrc,
            "ct_tp_dst" | "NXM_NX_CT_TP_DST" => CtTpDst,
            "metadata" | "OXM_OF_METADATA" => Metadata,
            _ => return None,
        })
    }

    /// The NXM/OXM name OVS prints inside actions (`NXM_NX_REG0`, `NXM_OF_ETH_DST`,
    /// `OXM_OF_METADATA`...), e.g. in `move:NXM_NX_REG0[]->NXM_NX_REG1[]`.
    pub fn nxm_name(self) -> String {
        use Field::*;
        let fixed = match self {
            ConjId => "NXM_NX_CONJ_ID",
            InPort => "NXM_OF_IN_PORT",
            InPhyPort => "OXM_OF_IN_PHY_PORT",
            EthSrc => "NXM_OF_ETH_SRC",
            EthDst => "NXM_OF_ETH_DST",
            EthType => "NXM_OF_ETH_TYPE",
            VlanVid => "OXM_OF_VLAN_VID",
            VlanPcp => "OXM_OF_VLAN_PCP",
            Ipv4Src => "NXM_OF_IP_SRC",
            Ipv4Dst => "NXM_OF_IP_DST",
            Ipv6Src => "NXM_NX_IPV6_SRC",
            Ipv6Dst => "NXM_NX_IPV6_DST",
            Ipv6Flabel => "NXM_NX_IPV6_LABEL",
            IpFrag => "NXM_NX_IP_FRAG",
            IpDscp => "OXM_OF_IP_DSCP",
            IpEcn => "NXM_NX_IP_ECN",
            IpTtl => "NXM_NX_IP_TTL",
            IpProto => "NXM_OF_IP_PROTO",
            TcpSrc => "NXM_OF_TCP_SRC",
            TcpDst => "NXM_OF_TCP_DST",
            TcpFlags => "NXM_NX_TCP_FLAGS",
            UdpSrc => "NXM_OF_UDP_SRC",
            UdpDst => "NXM_OF_UDP_DST",
            SctpSrc => "OXM_OF_SCTP_SRC",
            SctpDst => "OXM_OF_SCTP_DST",
            Icmpv4Type => "NXM_OF_ICMP_TYPE",
            Icmpv4Code => "NXM_OF_ICMP_CODE",
            Icmpv6Type => "NXM_NX_ICMPV6_TYPE",
            Icmpv6Code => "NXM_NX_ICMPV6_CODE",
            NdTarget => "NXM_NX_ND_TARGET",
            NdSll => "NXM_NX_ND_SLL",
            NdTll => "NXM_NX_ND_TLL",
            ArpOp => "NXM_OF_ARP_OP",
            ArpSpa => "NXM_OF_ARP_SPA",
            ArpTpa => "NXM_OF_ARP_TPA",
            ArpSha => "NXM_NX_ARP_SHA",
            ArpTha => "NXM_NX_ARP_THA",
            TunnelId => "NXM_NX_TUN_ID",
            TunSrc => "NXM_NX_TUN_IPV4_SRC",
            TunDst => "NXM_NX_TUN_IPV4_DST",
            TunIpv6Src => "NXM_NX_TUN_IPV6_SRC",
            TunIpv6Dst => "NXM_NX_TUN_IPV6_DST",
            TunFlags => "NXM_NX_TUN_FLAGS",
            TunMetadata(i) => return format!("NXM_NX_TUN_METADATA{i}"),
            Reg(i) => return format!("NXM_NX_REG{i}"),
            XReg(i) => return format!("OXM_OF_PKT_REG{i}"),
            XXReg(i) => return format!("NXM_NX_XXREG{i}"),
            PktMark => "NXM_NX_PKT_MARK",
            CtState => "NXM_NX_CT_STATE",
            CtZone => "NXM_NX_CT_ZONE",
            CtMark => "NXM_NX_CT_MARK",
            CtLabel => "NXM_NX_CT_LABEL",
            CtNwProto => "NXM_NX_CT_NW_PROTO",
            CtNwSrc => "NXM_NX_CT_NW_SRC",
            CtNwDst => "NXM_NX_CT_NW_DST",
            CtIpv6Src => "NXM_NX_CT_IPV6_SRC",
            CtIpv6Dst => "NXM_NX_CT_IPV6_DST",
            CtTpSrc => "NXM_NX_CT_TP_SRC",
            CtTpDst => "NXM_NX_CT_TP_DST",
            Metadata => "OXM_OF_METADATA",
            Other(h) => return other_name(h),
        };
        fixed.to_string()
    }
}

fn other_name(h: OxmHeader) -> String {
    match h.experimenter {
        Some(e) => format!("{}:{}:0x{e:08x}", h.class, h.field),
        None => format!("{}:{}", h.class, h.field),
    }
}

/// Prints the `ovs-ofctl` name (`reg3`, `eth_dst`, `tun_metadata0`...).
impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Field::*;
        let s = match self {
            ConjId => "conj_id",
            InPort => "in_port",
            InPhyPort => "in_phy_port",
            EthSrc => "eth_src",
            EthDst => "eth_dst",
            EthType => "eth_type",
            VlanVid => "vlan_vid",
            VlanPcp => "vlan_pcp",
            Ipv4Src => "ip_src",
            Ipv4Dst => "ip_dst",
            Ipv6Src => "ipv6_src",
            Ipv6Dst => "ipv6_dst",
            Ipv6Flabel => "ipv6_label",
            IpFrag => "ip_frag",
            IpDscp => "ip_dscp",
            IpEcn => "nw_ecn",
            IpTtl => "nw_ttl",
            IpProto => "nw_proto",
            TcpSrc => "tcp_src",
            TcpDst => "tcp_dst",
            TcpFlags => "tcp_flags",
            UdpSrc => "udp_src",
            UdpDst => "udp_dst",
            SctpSrc => "sctp_src",
            SctpDst => "sctp_dst",
            Icmpv4Type => "icmp_type",
            Icmpv4Code => "icmp_code",
            Icmpv6Type => "icmpv6_type",
            Icmpv6Code => "icmpv6_code",
            NdTarget => "nd_target",
            NdSll => "nd_sll",
            NdTll => "nd_tll",
            ArpOp => "arp_op",
            ArpSpa => "arp_spa",
            ArpTpa => "arp_tpa",
            ArpSha => "arp_sha",
            ArpTha => "arp_tha",
            TunnelId => "tun_id",
            TunSrc => "tun_src",
            TunDst => "tun_dst",
            TunIpv6Src => "tun_ipv6_src",
            TunIpv6Dst => "tun_ipv6_dst",
            TunFlags => "tun_flags",
            TunMetadata(i) => return write!(f, "tun_metadata{i}"),
            Reg(i) => return write!(f, "reg{i}"),
            XReg(i) => return write!(f, "xreg{i}"),
            XXReg(i) => return write!(f, "xxreg{i}"),
            PktMark => "pkt_mark",
            CtState => "ct_state",
            CtZone => "ct_zone",
            CtMark => "ct_mark",
            CtLabel => "ct_label",
            CtNwProto => "ct_nw_proto",
            CtNwSrc => "ct_nw_src",
            CtNwDst => "ct_nw_dst",
            CtIpv6Src => "ct_ipv6_src",
            CtIpv6Dst => "ct_ipv6_dst",
            CtTpSrc => "ct_tp_src",
            CtTpDst => "ct_tp_dst",
            Metadata => "metadata",
            Other(h) => return f.write_str(&other_name(*h)),
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_maps_back_from_both_headers() {
        for f in Field::all() {
            assert_eq!(Field::from_header(f.oxm_header()), f, "oxm header of {f}");
            assert_eq!(Field::from_header(f.nxm_header()), f, "nxm header of {f}");
            assert_eq!(Field::from_name(&f.to_string()), Some(f), "name of {f}");
            assert_eq!(Field::from_name(&f.nxm_name()), Some(f), "nxm name of {f}");
        }
    }

    #[test]
    fn out_of_range_fields_are_rejected_not_aliased() {
        use crate::{Action, MatchField, Subfield};
        assert!(!Field::Reg(16).is_valid());
        let e = MatchField::u32(Field::Reg(16), 1).normalized().unwrap_err();
        assert!(e.to_string().contains("Reg(16)"), "{e}");
        let mut out = bytes::BytesMut::new();
        let e = Action::load(Subfield::whole(Field::XXReg(4)), 1)
            .encode(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("XXReg(4)"), "{e}");
    }

    #[test]
    fn header_words_match_ovs_constants() {
        // NXM_NX_REG0 = 0x00010004, OXM_OF_IN_PORT = 0x80000004 (nicira-ext.h, openflow-1.2.h).
        assert_eq!(Field::Reg(0).oxm_header().word(false, 4), 0x0001_0004);
        assert_eq!(Field::InPort.oxm_header().word(false, 4), 0x8000_0004);
        assert_eq!(Field::Reg(3).oxm_header().word(true, 8), 0x0001_0708);
        // ONFOXM_ET_TCP_FLAGS: class 0xffff, field 42, length 2 + 4-byte experimenter id.
        assert_eq!(Field::TcpFlags.oxm_header().word(false, 2), 0xffff_5406);
    }
}
