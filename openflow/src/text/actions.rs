//! Actions and instructions in `ovs-ofctl` text: parsing `actions=...` into
//! [`Instruction`]s and printing them as `ofpacts_format()` (OVS lib/ofp-actions.c) does.
//!
//! The parser makes the same encoding choices ovs-ofctl makes for OpenFlow 1.3, because the
//! switch echoes the encoding back in dumps and the printed text depends on it: a masked
//! `set_field` becomes `load` (NXAST_REG_LOAD) segments, `controller` without extras is an
//! output to CONTROLLER, `mod_*` legacy actions become `set_field`, notes are zero padded
//! as the wire pads them.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;

use super::Names;
use super::fields::{format_value, parse_value};
use super::lex::{Item, items};
use super::match_fmt::{fmt_port, hash_x, parse_port};
use super::value::{fmt_hex, parse_int, parse_uint, to_u128};
use crate::action::{
    Action, Controller2, Ct, CtZone, Learn, LearnSpec, LearnSrc, Nat, NatKind, NxEnum, Subfield,
};
use crate::field::Field;
use crate::instruction::Instruction;
use crate::matching::{Match, MatchField};
use crate::port;

/// OFPR_* packet-in reasons and their `ovs-ofctl` names.
const REASONS: &[(&str, u8)] = &[
    ("no_match", 0),
    ("action", 1),
    ("invalid_ttl", 2),
    ("action_set", 3),
    ("group", 4),
    ("packet_out", 5),
];
const OFPR_ACTION: u8 = 1;

// ---------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------

/// Prints a flow's instructions as the text after `actions=` (`drop` when there is
/// nothing to do). Instructions are printed in OpenFlow's execution order (meter, apply,
/// clear, write, metadata, goto), which is how OVS stores and prints them.
pub(crate) fn format_instructions(instructions: &[Instruction], names: &Names) -> String {
    let rank = |i: &Instruction| match i {
        Instruction::Meter(_) => 0,
        Instruction::ApplyActions(_) => 1,
        Instruction::ClearActions => 2,
        Instruction::WriteActions(_) => 3,
        Instruction::WriteMetadata { .. } => 4,
        Instruction::GotoTable(_) => 5,
        Instruction::Unknown { .. } => 6,
    };
    let mut sorted: Vec<&Instruction> = instructions.iter().collect();
    sorted.sort_by_key(|i| rank(i));
    let mut parts: Vec<String> = Vec::new();
    for i in sorted {
        match i {
            Instruction::Meter(m) => parts.push(format!("meter:{m}")),
            Instruction::ApplyActions(a) => {
                if !a.is_empty() {
                    parts.push(format_actions(a, names));
                }
            }
            Instruction::ClearActions => parts.push("clear_actions".into()),
            Instruction::WriteActions(a) => {
                parts.push(format!("write_actions({})", format_actions(a, names)))
            }
            Instruction::WriteMetadata { value, mask } => {
                let mut s = format!("write_metadata:{}", hash_x(u128::from(*value)));
                if *mask != u64::MAX {
                    let _ = write!(s, "/{}", hash_x(u128::from(*mask)));
                }
                parts.push(s);
            }
            Instruction::GotoTable(t) => parts.push(format!("goto_table:{}", names.table(*t))),
            Instruction::Unknown {
                instruction_type, ..
            } => parts.push(format!("<unknown instruction {instruction_type}>")),
        }
    }
    if parts.is_empty() {
        "drop".into()
    } else {
        parts.join(",")
    }
}

/// Prints an action list, comma separated (`drop` is not printed for an empty list: the
/// caller decides).
pub(crate) fn format_actions(actions: &[Action], names: &Names) -> String {
    actions
        .iter()
        .map(|a| format_action(a, names))
        .collect::<Vec<_>>()
        .join(",")
}

fn fmt_subfield(sf: &Subfield) -> String {
    let total = sf.field.nxm_bits() as u16;
    let name = sf.field.nxm_name();
    if sf.ofs == 0 && sf.n_bits == total {
        format!("{name}[]")
    } else if sf.n_bits == 1 {
        format!("{name}[{}]", sf.ofs)
    } else {
        format!("{name}[{}..{}]", sf.ofs, sf.ofs + sf.n_bits - 1)
    }
}

fn fmt_hex_arg(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// A 16-bit (OpenFlow 1.0) port as `ofputil_format_port()` prints it.
fn fmt_port16(p: u16) -> String {
    if p >= 0xff00 {
        fmt_port(u32::from(p) | 0xffff_0000)
    } else {
        p.to_string()
    }
}

fn format_action(a: &Action, names: &Names) -> String {
    match a {
        Action::Output { port: p, max_len } => {
            if *p == port::CONTROLLER {
                format!("CONTROLLER:{max_len}")
            } else if *p < port::MAX {
                format!("output:{}", names.port(*p))
            } else {
                fmt_port(*p)
            }
        }
        Action::Group(g) => format!("group:{g}"),
        Action::SetField(mf) => format!(
            "set_field:{}->{}",
            format_value(mf.field, &mf.value, mf.mask.as_deref()),
            mf.field
        ),
        Action::PushVlan(t) => format!("push_vlan:{}", hash_x(u128::from(*t))),
        Action::PopVlan => "pop_vlan".into(),
        Action::DecTtl => "dec_ttl".into(),
        Action::SetNwTtl(t) => format!("mod_nw_ttl:{t}"),
        Action::SetQueue(q) => format!("set_queue:{q}"),
        Action::Resubmit { in_port, table, ct } => {
            if *in_port != port::IN_PORT && table.is_none() && !ct {
                format!("resubmit:{}", names.port(*in_port))
            } else {
                let mut s = String::from("resubmit(");
                if *in_port != port::IN_PORT {
                    s.push_str(&names.port(*in_port));
                }
                s.push(',');
                if let Some(t) = table {
                    s.push_str(&names.table(*t));
                }
                if *ct {
                    s.push_str(",ct");
                }
                s.push(')');
                s
            }
        }
        Action::Ct(ct) => format_ct(ct, names),
        Action::CtClear => "ct_clear".into(),
        Action::Conjunction {
            id,
            clause,
            n_clauses,
        } => format!("conjunction({id},{clause}/{n_clauses})"),
        Action::Learn(l) => format_learn(l),
        Action::Note(n) => format!("note:{}", fmt_hex_arg(n)),
        Action::RegMove { src, dst } => {
            format!("move:{}->{}", fmt_subfield(src), fmt_subfield(dst))
        }
        Action::RegLoad { dst, value } => {
            format!("load:{}->{}", hash_x(u128::from(*value)), fmt_subfield(dst))
        }
        Action::OutputReg { src, .. } => format!("output:{}", fmt_subfield(src)),
        Action::Controller {
            max_len,
            controller_id,
            reason,
        } => format_controller(*max_len, *controller_id, *reason, None, false, None),
        Action::Controller2(c) => format_controller(
            c.max_len.unwrap_or(u16::MAX),
            c.controller_id.unwrap_or(0),
            c.reason.unwrap_or(OFPR_ACTION),
            c.userdata.as_deref(),
            c.pause,
            c.meter_id,
        ),
        Action::Multipath(m) => format!(
            "multipath({},{},{},{},{},{})",
            m.fields.name(),
            m.basis,
            m.algorithm.name(),
            m.n_links,
            m.arg,
            fmt_subfield(&m.dst)
        ),
        Action::Experimenter { experimenter, data } => {
            format!("experimenter(0x{experimenter:08x},{})", fmt_hex_arg(data))
        }
        Action::Unknown { action_type, data } => {
            format!("unknown_action({action_type},{})", fmt_hex_arg(data))
        }
    }
}

/// `format_CONTROLLER()`.
fn format_controller(
    max_len: u16,
    id: u16,
    reason: u8,
    userdata: Option<&[u8]>,
    pause: bool,
    meter: Option<u32>,
) -> String {
    let userdata = userdata.filter(|u| !u.is_empty());
    if reason == OFPR_ACTION && id == 0 && userdata.is_none() && !pause && meter.is_none() {
        return format!("CONTROLLER:{max_len}");
    }
    let mut parts = Vec::new();
    if reason != OFPR_ACTION {
        let name = REASONS
            .iter()
            .find(|(_, r)| *r == reason)
            .map(|(n, _)| (*n).to_string())
            .unwrap_or_else(|| reason.to_string());
        parts.push(format!("reason={name}"));
    }
    if max_len != u16::MAX {
        parts.push(format!("max_len={max_len}"));
    }
    if id != 0 {
        parts.push(format!("id={id}"));
    }
    if let Some(u) = userdata {
        parts.push(format!("userdata={}", fmt_hex_arg(u)));
    }
    if pause {
        parts.push("pause".into());
    }
    if let Some(m) = meter {
        parts.push(format!("meter_id={m}"));
    }
    format!("controller({})", parts.join(","))
}

/// `format_NAT()`.
fn format_nat(n: &Nat) -> String {
    let mut s = String::from("nat");
    let Some(kind) = n.kind else {
        return s;
    };
    s.push('(');
    s.push_str(match kind {
        NatKind::Src => "src",
        NatKind::Dst => "dst",
    });
    if let Some(min) = n.addr_min {
        s.push('=');
        let bracket = n.port_min.is_some_and(|p| p != 0);
        let addr = |a: IpAddr| match a {
            IpAddr::V6(v6) if bracket => format!("[{v6}]"),
            a => a.to_string(),
        };
        s.push_str(&addr(min));
        if let Some(max) = n.addr_max {
            let unspecified = match max {
                IpAddr::V4(v) => v.is_unspecified(),
                IpAddr::V6(v) => v.is_unspecified(),
            };
            if !unspecified && max != min {
                s.push('-');
                s.push_str(&addr(max));
            }
        }
        if let Some(pmin) = n.port_min.filter(|p| *p != 0) {
            let _ = write!(s, ":{pmin}");
            if let Some(pmax) = n.port_max.filter(|p| *p != 0 && *p != pmin) {
                let _ = write!(s, "-{pmax}");
            }
        }
    }
    s.push(',');
    if n.persistent {
        s.push_str("persistent,");
    }
    if n.hash {
        s.push_str("hash,");
    }
    if n.random {
        s.push_str("random,");
    }
    s.pop();
    s.push(')');
    s
}

/// `format_CT()`: flags, table, zone, then `nat(...)`, `exec(...)`, `alg=`.
fn format_ct(ct: &Ct, names: &Names) -> String {
    let mut s = String::from("ct(");
    if ct.commit {
        s.push_str("commit,");
    }
    if ct.force {
        s.push_str("force,");
    }
    if let Some(t) = ct.table {
        let _ = write!(s, "table={},", names.table(t));
    }
    match &ct.zone {
        CtZone::Field(sf) => {
            let _ = write!(s, "zone={},", fmt_subfield(sf));
        }
        CtZone::Value(0) => {}
        CtZone::Value(z) => {
            let _ = write!(s, "zone={z},");
        }
    }
    if let Some(n) = &ct.nat {
        s.push_str(&format_nat(n));
        s.push(',');
    }
    if !ct.actions.is_empty() {
        let _ = write!(s, "exec({}),", format_actions(&ct.actions, names));
    }
    match ct.alg {
        0 => {}
        21 => s.push_str("alg=ftp,"),
        69 => s.push_str("alg=tftp,"),
        a => {
            let _ = write!(s, "alg={a},");
        }
    }
    if s.ends_with(',') {
        s.pop();
    }
    s.push(')');
    s
}

/// The `n_bytes = ceil(n_bits / 8)` low-order bytes of a learn immediate value.
fn learn_imm(v: &[u8], n_bits: u16) -> &[u8] {
    let n = usize::from(n_bits).div_ceil(8).min(v.len());
    &v[v.len() - n..]
}

/// `learn_format()` in OVS lib/learn.c.
fn format_learn(l: &Learn) -> String {
    let mut s = format!("learn(table={}", l.table_id);
    if l.idle_timeout != 0 {
        let _ = write!(s, ",idle_timeout={}", l.idle_timeout);
    }
    if l.hard_timeout != 0 {
        let _ = write!(s, ",hard_timeout={}", l.hard_timeout);
    }
    if l.fin_idle_timeout != 0 {
        let _ = write!(s, ",fin_idle_timeout={}", l.fin_idle_timeout);
    }
    if l.fin_hard_timeout != 0 {
        let _ = write!(s, ",fin_hard_timeout={}", l.fin_hard_timeout);
    }
    if l.priority != super::match_fmt::DEFAULT_PRIORITY {
        let _ = write!(s, ",priority={}", l.priority);
    }
    if l.flags & 1 != 0 {
        s.push_str(",send_flow_rem");
    }
    if l.flags & 2 != 0 {
        s.push_str(",delete_learned");
    }
    if l.cookie != 0 {
        let _ = write!(s, ",cookie={}", hash_x(u128::from(l.cookie)));
    }
    for spec in &l.specs {
        s.push(',');
        match spec {
            LearnSpec::Match {
                src: LearnSrc::Value(v),
                dst,
            } => {
                let imm = learn_imm(v, dst.n_bits);
                if dst.ofs == 0 && usize::from(dst.n_bits) == dst.field.nxm_bits() {
                    let text = if dst.field == Field::InPort {
                        fmt_port16(to_u128(imm) as u16)
                    } else {
                        let mut full = vec![0u8; dst.field.width().max(imm.len())];
                        let off = full.len() - imm.len();
                        full[off..].copy_from_slice(imm);
                        format_value(dst.field, &full, None)
                    };
                    let _ = write!(s, "{}={text}", dst.field);
                } else {
                    let _ = write!(s, "{}={}", fmt_subfield(dst), fmt_hex(imm));
                }
            }
            LearnSpec::Match {
                src: LearnSrc::Field(src),
                dst,
            } => {
                s.push_str(&fmt_subfield(dst));
                if src.field != dst.field || src.ofs != dst.ofs {
                    let _ = write!(s, "={}", fmt_subfield(src));
                }
            }
            LearnSpec::Load {
                src: LearnSrc::Value(v),
                dst,
            } => {
                let _ = write!(
                    s,
                    "load:{}->{}",
                    fmt_hex(learn_imm(v, dst.n_bits)),
                    fmt_subfield(dst)
                );
            }
            LearnSpec::Load {
                src: LearnSrc::Field(src),
                dst,
            } => {
                let _ = write!(s, "load:{}->{}", fmt_subfield(src), fmt_subfield(dst));
            }
            LearnSpec::Output { src } => {
                let _ = write!(s, "output:{}", fmt_subfield(src));
            }
        }
    }
    s.push(')');
    s
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// `s` in lower case, borrowed when it already is (action names are matched
/// case-insensitively, as OVS does, but are nearly always written in lower case).
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Parses a subfield reference (`NXM_NX_REG0[0..15]`, `reg1[]`, `NXM_OF_IN_PORT[]`).
pub(crate) fn parse_subfield(s: &str) -> Result<Subfield, String> {
    let f = super::fields::Subfield::parse(s, false)?;
    Ok(Subfield {
        field: f.field,
        ofs: f.ofs,
        n_bits: f.n_bits,
    })
}

/// Context the action parser needs from the flow: its match (for `mod_tp_*`,
/// `mod_vlan_vid`).
pub(crate) struct ActionContext<'a> {
    /// The flow's match.
    pub match_: &'a Match,
}

impl ActionContext<'_> {
    fn exact(&self, f: Field) -> Option<u128> {
        self.match_
            .get(f)
            .filter(|m| m.mask.is_none())
            .map(MatchField::value_u128)
    }
}

/// Parses the text after `actions=` into instructions, checking OpenFlow 1.1+ instruction
/// order as ovs-ofctl does.
pub(crate) fn parse_instructions(
    s: &str,
    ctx: &ActionContext<'_>,
) -> Result<Vec<Instruction>, String> {
    const NAMES: [&str; 6] = [
        "meter",
        "apply_actions",
        "clear_actions",
        "write_actions",
        "write_metadata",
        "goto_table",
    ];
    let mut apply: Vec<Action> = Vec::new();
    let mut seen_apply = false;
    let mut out: Vec<(usize, Instruction)> = Vec::new();
    let mut last_rank = 0usize;
    let mut drop = false;
    let mut n_items = 0;
    for item in items(s) {
        n_items += 1;
        let key = lower(item.key);
        let rank = match key.as_ref() {
            "meter" => 0,
            "apply_actions" => 1,
            "clear_actions" => 2,
            "write_actions" => 3,
            "write_metadata" => 4,
            "goto_table" => 5,
            "drop" => {
                drop = true;
                continue;
            }
            _ => 1,
        };
        if rank < last_rank {
            return Err(format!(
                "invalid instruction ordering: {} must appear before {}, for OpenFlow 1.1+ compatibility",
                NAMES[rank], NAMES[last_rank]
            ));
        }
        if rank == last_rank && rank != 1 && !out.is_empty() && out.iter().any(|(r, _)| *r == rank)
        {
            return Err(format!("duplicate instruction {}", NAMES[rank]));
        }
        last_rank = rank;
        match key.as_ref() {
            "meter" => {
                let m = parse_uint(item.value, 32).map_err(|e| format!("meter: {e}"))?;
                out.push((0, Instruction::Meter(m as u32)));
            }
            "apply_actions" => {
                seen_apply = true;
                apply.extend(parse_action_list(item.value, ctx)?);
            }
            "clear_actions" => out.push((2, Instruction::ClearActions)),
            "write_actions" => out.push((
                3,
                Instruction::WriteActions(parse_action_list(item.value, ctx)?),
            )),
            "write_metadata" => {
                let (v, m) = match item.value.split_once('/') {
                    Some((v, m)) => (v, Some(m)),
                    None => (item.value, None),
                };
                let value =
                    super::value::parse_u64(v).map_err(|e| format!("write_metadata: {e}"))?;
                let mask = match m {
                    Some(m) => {
                        super::value::parse_u64(m).map_err(|e| format!("write_metadata: {e}"))?
                    }
                    None => u64::MAX,
                };
                out.push((4, Instruction::WriteMetadata { value, mask }));
            }
            "goto_table" => {
                let t = parse_uint(item.value, 8).map_err(|e| format!("goto_table: {e}"))?;
                out.push((5, Instruction::GotoTable(t as u8)));
            }
            _ => {
                seen_apply = true;
                apply.extend(parse_action(&item, ctx)?);
            }
        }
    }
    if drop && n_items > 1 {
        return Err("\"drop\" must not be accompanied by any other action or instruction".into());
    }
    if seen_apply && !apply.is_empty() {
        out.push((1, Instruction::ApplyActions(apply)));
    }
    out.sort_by_key(|(r, _)| *r);
    Ok(out.into_iter().map(|(_, i)| i).collect())
}

/// Parses a comma-separated list of actions (inside `write_actions(...)`, `exec(...)`,
/// group buckets).
pub(crate) fn parse_action_list(s: &str, ctx: &ActionContext<'_>) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut drop = false;
    for item in items(s) {
        n += 1;
        if item.key.eq_ignore_ascii_case("drop") {
            drop = true;
            continue;
        }
        out.extend(parse_action(&item, ctx)?);
    }
    if drop && n > 1 {
        return Err("\"drop\" must not be accompanied by any other action".into());
    }
    Ok(out)
}

fn split_arrow<'a>(what: &str, s: &'a str) -> Result<(&'a str, &'a str), String> {
    s.split_once("->")
        .map(|(a, b)| (a.trim(), b.trim()))
        .ok_or_else(|| format!("{what}: expected SOURCE->DESTINATION, got {s:?}"))
}

/// `set_field:VALUE[/MASK]->FIELD` with ovs-ofctl's OpenFlow 1.3 encoding: a whole-field
/// write is OFPAT_SET_FIELD; a partial one is one NXAST_REG_LOAD per contiguous run of
/// mask bits (`set_field_to_nxast()`), which OVS prints as `load:`.
fn parse_set_field(value: &str) -> Result<Vec<Action>, String> {
    let (v, f) = split_arrow("set_field", value)?;
    let field = Field::from_name(f).ok_or_else(|| format!("set_field: unknown field {f:?}"))?;
    let (val, mask) = parse_value(field, v).map_err(|e| format!("set_field:{value}: {e}"))?;
    let mf = MatchField {
        field,
        value: val,
        mask,
    };
    let Some(mf) = mf
        .normalized()
        .map_err(|e| format!("set_field:{value}: {e}"))?
    else {
        return Ok(Vec::new());
    };
    match &mf.mask {
        // ovs-ofctl writes `set_field:N->in_port` with the 16-bit NXM_OF_IN_PORT header;
        // OFPAT_SET_FIELD with the 32-bit OXM_OF_IN_PORT is refused by ovs-vswitchd
        // (OFPBAC_BAD_SET_ARGUMENT). The equivalent NXAST_REG_LOAD is accepted (and dumps
        // as `load:N->NXM_OF_IN_PORT[]`).
        None if field == Field::InPort => {
            let p = to_u128(&mf.value) as u32;
            let p16 = if p >= port::MAX { p - 0xffff_0000 } else { p };
            if p16 > 0xffff {
                return Err(format!(
                    "set_field:{value}: port {p} does not fit in 16 bits"
                ));
            }
            Ok(vec![Action::RegLoad {
                dst: Subfield::whole(Field::InPort),
                value: u64::from(p16),
            }])
        }
        None => Ok(vec![Action::SetField(mf)]),
        Some(mask) => {
            let width_bits = mf.value.len() * 8;
            if field.nxm_bits() != width_bits {
                return Ok(vec![Action::SetField(mf)]);
            }
            let m = to_u128(mask);
            let v = to_u128(&mf.value);
            let mut loads = Vec::new();
            let mut bit = 0usize;
            while bit < width_bits {
                if m >> bit & 1 == 0 {
                    bit += 1;
                    continue;
                }
                let start = bit;
                while bit < width_bits && m >> bit & 1 == 1 && bit - start < 64 {
                    bit += 1;
                }
                let n = bit - start;
                let seg = (v >> start)
                    & if n >= 128 {
                        u128::MAX
                    } else {
                        (1u128 << n) - 1
                    };
                loads.push(Action::RegLoad {
                    dst: Subfield {
                        field,
                        ofs: start as u16,
                        n_bits: n as u16,
                    },
                    value: seg as u64,
                });
            }
            Ok(loads)
        }
    }
}

fn parse_load(value: &str) -> Result<Action, String> {
    let (v, d) = split_arrow("load", value)?;
    let dst = parse_subfield(d).map_err(|e| format!("load: {e}"))?;
    let n = parse_int(v, 16).map_err(|e| format!("load:{value}: {e}"))?;
    let n = to_u128(&n);
    if dst.n_bits < 128 && n >> dst.n_bits != 0 {
        return Err(format!(
            "load:{value}: value {v} does not fit into {} bits",
            dst.n_bits
        ));
    }
    if dst.n_bits > 64 {
        return Err(format!(
            "load:{value}: {}-bit destination is wider than load's 64 bits; use set_field",
            dst.n_bits
        ));
    }
    Ok(Action::RegLoad {
        dst,
        value: n as u64,
    })
}

fn parse_move(value: &str) -> Result<Action, String> {
    let (a, b) = split_arrow("move", value)?;
    let src = parse_subfield(a).map_err(|e| format!("move: {e}"))?;
    let dst = parse_subfield(b).map_err(|e| format!("move: {e}"))?;
    if src.n_bits != dst.n_bits {
        return Err(format!(
            "move:{value}: source is {} bits but destination is {} bits",
            src.n_bits, dst.n_bits
        ));
    }
    Ok(Action::RegMove { src, dst })
}

fn parse_resubmit(item: &Item<'_>) -> Result<Action, String> {
    if item.delim == Some('(') {
        let mut parts = item.value.split(',');
        let p = parts.next().unwrap_or("").trim();
        let t = parts.next().unwrap_or("").trim();
        let ct = match parts.next().map(str::trim) {
            None => false,
            Some("ct") => true,
            Some(other) => return Err(format!("resubmit: unknown option {other:?}")),
        };
        if parts.next().is_some() {
            return Err(format!("resubmit({}): too many arguments", item.value));
        }
        let in_port = if p.is_empty() {
            port::IN_PORT
        } else {
            parse_port(p).map_err(|e| format!("resubmit: {e}"))?
        };
        let table = if t.is_empty() || t == "255" {
            None
        } else {
            Some(parse_uint(t, 8).map_err(|e| format!("resubmit: table {e}"))? as u8)
        };
        if in_port == port::IN_PORT && table.is_none() {
            return Err(
                "resubmit: at least one of \"in_port\" and \"table\" must be specified".into(),
            );
        }
        Ok(Action::Resubmit { in_port, table, ct })
    } else {
        let in_port = parse_port(item.value).map_err(|e| format!("resubmit: {e}"))?;
        Ok(Action::Resubmit {
            in_port,
            table: None,
            ct: false,
        })
    }
}

fn parse_controller(item: &Item<'_>) -> Result<Action, String> {
    let mut max_len = u16::MAX;
    let mut id = 0u16;
    let mut reason = OFPR_ACTION;
    let mut userdata: Option<Bytes> = None;
    let mut pause = false;
    let mut meter: Option<u32> = None;
    match item.delim {
        Some(':') => {
            max_len = parse_uint(item.value, 16).map_err(|e| format!("controller: {e}"))? as u16;
        }
        Some('(') => {
            for it in items(item.value) {
                match it.key {
                    "max_len" => {
                        max_len = parse_uint(it.value, 16)
                            .map_err(|e| format!("controller: max_len {e}"))?
                            as u16
                    }
                    "id" => {
                        id = parse_uint(it.value, 16).map_err(|e| format!("controller: id {e}"))?
                            as u16
                    }
                    "reason" => {
                        reason = REASONS
                            .iter()
                            .find(|(n, _)| *n == it.value)
                            .map(|(_, r)| *r)
                            .ok_or_else(|| format!("controller: unknown reason {:?}", it.value))?
                    }
                    "userdata" => userdata = Some(Bytes::from(parse_hex_arg(it.value)?)),
                    "pause" => pause = true,
                    "meter_id" => {
                        meter = Some(
                            parse_uint(it.value, 32)
                                .map_err(|e| format!("controller: meter_id {e}"))?
                                as u32,
                        )
                    }
                    other => return Err(format!("controller: unknown option {other:?}")),
                }
            }
        }
        _ => {}
    }
    // encode_CONTROLLER(): extras need NXAST_CONTROLLER2; plain reason=action, id=0 is an
    // OFPAT_OUTPUT to CONTROLLER; anything else NXAST_CONTROLLER.
    if userdata.is_some() || pause || meter.is_some() {
        Ok(Action::Controller2(Controller2 {
            max_len: (max_len != u16::MAX).then_some(max_len),
            controller_id: (id != 0).then_some(id),
            reason: (reason != OFPR_ACTION).then_some(reason),
            userdata,
            pause,
            meter_id: meter,
        }))
    } else if reason == OFPR_ACTION && id == 0 {
        Ok(Action::Output {
            port: port::CONTROLLER,
            max_len,
        })
    } else {
        Ok(Action::Controller {
            max_len,
            controller_id: id,
            reason,
        })
    }
}

/// `format_hex_arg()` inverse: `01.02.0a` or `01020a`.
fn parse_hex_arg(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.chars().filter(|c| *c != '.').collect();
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not hex bytes (like 01.02.ab)"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn parse_nat(s: &str) -> Result<Nat, String> {
    let mut nat = Nat::default();
    for it in items(s) {
        match it.key {
            "src" | "dst" => {
                if nat.kind.is_some() {
                    return Err("nat: only one of src and dst".into());
                }
                nat.kind = Some(if it.key == "src" {
                    NatKind::Src
                } else {
                    NatKind::Dst
                });
                if !it.value.is_empty() {
                    parse_nat_range(it.value, &mut nat)?;
                }
            }
            "persistent" => nat.persistent = true,
            "hash" => nat.hash = true,
            "random" => nat.random = true,
            other => return Err(format!("nat: unknown option {other:?}")),
        }
    }
    if nat.hash && nat.random {
        return Err("nat: both hash and random are specified".into());
    }
    Ok(nat)
}

/// `A[-B][:P[-Q]]`, IPv6 as `[A]-[B]:P-Q` when ports follow.
fn parse_nat_range(s: &str, nat: &mut Nat) -> Result<(), String> {
    let (addrs, ports) = if s.starts_with('[') {
        match s.rfind(']') {
            Some(i) => {
                let rest = &s[i + 1..];
                (&s[..i + 1], rest.strip_prefix(':'))
            }
            None => return Err(format!("nat: unbalanced [ in {s:?}")),
        }
    } else if s.matches(':').count() == 1 {
        let (a, p) = s.split_once(':').unwrap_or((s, ""));
        (a, Some(p))
    } else {
        (s, None)
    };
    let parse_ip = |a: &str| -> Result<IpAddr, String> {
        let a = a.trim_start_matches('[').trim_end_matches(']');
        a.parse()
            .map_err(|_| format!("nat: {a:?} is not an IP address"))
    };
    let (min, max) = if addrs.starts_with('[') {
        match addrs.split_once("]-[") {
            Some((a, b)) => (parse_ip(a)?, Some(parse_ip(b)?)),
            None => (parse_ip(addrs)?, None),
        }
    } else if addrs.contains(':') {
        // IPv6 without ports: A-B.
        match addrs.split_once('-') {
            Some((a, b)) => (parse_ip(a)?, Some(parse_ip(b)?)),
            None => (parse_ip(addrs)?, None),
        }
    } else {
        match addrs.split_once('-') {
            Some((a, b)) => (parse_ip(a)?, Some(parse_ip(b)?)),
            None => (parse_ip(addrs)?, None),
        }
    };
    if let Some(m) = max
        && m.is_ipv4() != min.is_ipv4()
    {
        return Err(format!("nat: {s:?} mixes IPv4 and IPv6"));
    }
    nat.addr_min = Some(min);
    nat.addr_max = max;
    if let Some(p) = ports {
        let (a, b) = match p.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (p, None),
        };
        nat.port_min = Some(parse_uint(a, 16).map_err(|e| format!("nat: port {e}"))? as u16);
        nat.port_max = b
            .map(|b| parse_uint(b, 16).map(|v| v as u16))
            .transpose()
            .map_err(|e| format!("nat: port {e}"))?;
    }
    Ok(())
}

fn parse_ct(s: &str, ctx: &ActionContext<'_>) -> Result<Action, String> {
    let mut ct = Ct::default();
    for it in items(s) {
        match it.key {
            "commit" => ct.commit = true,
            "force" => ct.force = true,
            "table" => {
                ct.table =
                    Some(parse_uint(it.value, 8).map_err(|e| format!("ct: table {e}"))? as u8)
            }
            "zone" => {
                ct.zone = if it.value.contains('[') {
                    let sf = parse_subfield(it.value).map_err(|e| format!("ct: zone {e}"))?;
                    if sf.n_bits != 16 {
                        return Err(format!(
                            "ct: zone {} is {} bits, a zone subfield must be 16 bits",
                            it.value, sf.n_bits
                        ));
                    }
                    CtZone::Field(sf)
                } else {
                    CtZone::Value(
                        parse_uint(it.value, 16).map_err(|e| format!("ct: zone {e}"))? as u16,
                    )
                }
            }
            "alg" => {
                ct.alg = match it.value {
                    "ftp" => 21,
                    "tftp" => 69,
                    v => parse_uint(v, 16).map_err(|e| format!("ct: alg {e}"))? as u16,
                }
            }
            "nat" => {
                if ct.nat.is_some() {
                    return Err("ct: only one nat is allowed".into());
                }
                ct.nat = Some(if it.delim == Some('(') {
                    parse_nat(it.value)?
                } else {
                    Nat::default()
                });
            }
            "exec" => {
                let acts = parse_action_list(it.value, ctx)?;
                for a in &acts {
                    let ok = match a {
                        Action::SetField(mf) => matches!(mf.field, Field::CtMark | Field::CtLabel),
                        Action::RegLoad { dst, .. } | Action::RegMove { dst, .. } => {
                            matches!(dst.field, Field::CtMark | Field::CtLabel)
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(format!(
                            "ct: exec may only set ct_mark or ct_label, not {}",
                            format_action(a, &Names::default())
                        ));
                    }
                }
                ct.actions.extend(acts);
            }
            other => return Err(format!("ct: unknown option {other:?}")),
        }
    }
    Ok(Action::Ct(ct))
}

fn parse_conjunction(s: &str) -> Result<Action, String> {
    let (id, rest) = s
        .split_once(',')
        .ok_or_else(|| format!("conjunction({s}): expected conjunction(ID,K/N)"))?;
    let (k, n) = rest
        .split_once('/')
        .ok_or_else(|| format!("conjunction({s}): expected conjunction(ID,K/N)"))?;
    let id = parse_uint(id.trim(), 32).map_err(|e| format!("conjunction: id {e}"))? as u32;
    let k = parse_uint(k.trim(), 8).map_err(|e| format!("conjunction: clause {e}"))? as u8;
    let n = parse_uint(n.trim(), 8).map_err(|e| format!("conjunction: clauses {e}"))? as u8;
    if !(2..=64).contains(&n) {
        return Err(format!(
            "conjunction({s}): number of clauses {n} must be between 2 and 64"
        ));
    }
    if k == 0 || k > n {
        return Err(format!(
            "conjunction({s}): clause {k} must be between 1 and {n}"
        ));
    }
    Ok(Action::Conjunction {
        id,
        clause: k,
        n_clauses: n,
    })
}

/// `multipath(FIELDS,BASIS,ALGORITHM,N_LINKS,ARG,DST)` as lib/multipath.c parses it.
fn parse_multipath(s: &str) -> Result<Action, String> {
    let args: Vec<&str> = s.split([',', ' ']).filter(|a| !a.is_empty()).collect();
    let [fields, basis, algorithm, n_links, arg, dst] = args[..] else {
        return Err(format!(
            "multipath({s}): expected multipath(FIELDS,BASIS,ALGORITHM,N_LINKS,ARG,DST)"
        ));
    };
    let fields = crate::action::HashFields::from_name(fields)
        .ok_or_else(|| format!("multipath({s}): unknown fields `{fields}'"))?;
    let basis = parse_uint(basis, 16).map_err(|e| format!("multipath: basis {e}"))? as u16;
    let algorithm = crate::action::MultipathAlgorithm::from_name(algorithm)
        .ok_or_else(|| format!("multipath({s}): unknown algorithm `{algorithm}'"))?;
    let n_links = parse_uint(n_links, 32)
        .ok()
        .filter(|n| (1..=65536).contains(n))
        .ok_or_else(|| {
            format!("multipath({s}): n_links {n_links} is not in valid range 1 to 65536")
        })? as u32;
    let arg = parse_uint(arg, 32).map_err(|e| format!("multipath: arg {e}"))? as u32;
    let dst = parse_subfield(dst)?;
    if dst.n_bits < 16 && n_links > (1u32 << dst.n_bits) {
        return Err(format!(
            "multipath({s}): {}-bit destination field has {} possible values, less than specified n_links {n_links}",
            dst.n_bits,
            1u32 << dst.n_bits
        ));
    }
    Ok(Action::Multipath(crate::action::Multipath {
        fields,
        basis,
        algorithm,
        n_links,
        arg,
        dst,
    }))
}

fn parse_learn_src(s: &str, n_bits: u16) -> Result<LearnSrc, String> {
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        let v = parse_int(s, 16).map_err(|e| format!("learn: {e}"))?;
        let v = to_u128(&v);
        if n_bits < 128 && v >> n_bits != 0 {
            return Err(format!("learn: value {s} does not fit into {n_bits} bits"));
        }
        Ok(LearnSrc::value(v, n_bits))
    } else {
        Ok(LearnSrc::Field(
            parse_subfield(s).map_err(|e| format!("learn: {e}"))?,
        ))
    }
}

fn parse_learn(s: &str) -> Result<Action, String> {
    let mut l = Learn {
        priority: super::match_fmt::DEFAULT_PRIORITY,
        table_id: 1,
        ..Learn::default()
    };
    for it in items(s) {
        let num =
            |bits: u32| parse_uint(it.value, bits).map_err(|e| format!("learn: {} {e}", it.key));
        match it.key {
            "table" => l.table_id = num(8)? as u8,
            "priority" => l.priority = num(16)? as u16,
            "idle_timeout" => l.idle_timeout = num(16)? as u16,
            "hard_timeout" => l.hard_timeout = num(16)? as u16,
            "fin_idle_timeout" => l.fin_idle_timeout = num(16)? as u16,
            "fin_hard_timeout" => l.fin_hard_timeout = num(16)? as u16,
            "cookie" => {
                l.cookie =
                    super::value::parse_u64(it.value).map_err(|e| format!("learn: cookie {e}"))?
            }
            "send_flow_rem" => l.flags |= 1,
            "delete_learned" => l.flags |= 2,
            "load" => {
                let (src, dst) = split_arrow("learn load", it.value)?;
                let dst = parse_subfield(dst).map_err(|e| format!("learn: {e}"))?;
                let src = parse_learn_src(src, dst.n_bits)?;
                if let LearnSrc::Field(f) = &src
                    && f.n_bits != dst.n_bits
                {
                    return Err(format!(
                        "learn: load:{}: source and destination widths differ",
                        it.value
                    ));
                }
                l.specs.push(LearnSpec::Load { src, dst });
            }
            "output" => {
                let src = parse_subfield(it.value).map_err(|e| format!("learn: {e}"))?;
                l.specs.push(LearnSpec::Output { src });
            }
            key => {
                // A match spec: DST[=SRC] with DST a subfield, or FIELD=VALUE.
                if key.contains('[') {
                    let dst = parse_subfield(key).map_err(|e| format!("learn: {e}"))?;
                    let src = if it.value.is_empty() {
                        LearnSrc::Field(dst)
                    } else {
                        parse_learn_src(it.value, dst.n_bits)?
                    };
                    if let LearnSrc::Field(f) = &src
                        && f.n_bits != dst.n_bits
                    {
                        return Err(format!("learn: {key}={}: widths differ", it.value));
                    }
                    l.specs.push(LearnSpec::Match { src, dst });
                } else if let Some(field) = Field::from_name(key) {
                    if it.value.is_empty() {
                        return Err(format!("learn: field {key} missing value"));
                    }
                    let n_bits = field.nxm_bits() as u16;
                    let dst = Subfield {
                        field,
                        ofs: 0,
                        n_bits,
                    };
                    if it.value.contains('[') {
                        let src = parse_subfield(it.value).map_err(|e| format!("learn: {e}"))?;
                        l.specs.push(LearnSpec::Match {
                            src: LearnSrc::Field(src),
                            dst,
                        });
                    } else {
                        let v = if field == Field::InPort {
                            let p = parse_port(it.value).map_err(|e| format!("learn: {e}"))?;
                            // NXM_OF_IN_PORT is the 16-bit OpenFlow 1.0 port.
                            u128::from(if p >= 0xffff_ff00 { p - 0xffff_0000 } else { p })
                        } else {
                            let (v, m) = parse_value(field, it.value)
                                .map_err(|e| format!("learn: {key}: {e}"))?;
                            if m.is_some() {
                                return Err(format!("learn: {key}: masks are not allowed"));
                            }
                            to_u128(&v)
                        };
                        l.specs.push(LearnSpec::Match {
                            src: LearnSrc::value(v, n_bits),
                            dst,
                        });
                    }
                } else {
                    return Err(format!("learn: unknown keyword {key:?}"));
                }
            }
        }
    }
    Ok(Action::Learn(l))
}

/// Parses one action item.
fn parse_action(item: &Item<'_>, ctx: &ActionContext<'_>) -> Result<Vec<Action>, String> {
    let key = lower(item.key);
    let value = item.value;
    let one = |a: Action| Ok(vec![a]);
    let set = |field: Field, v: &str| -> Result<Vec<Action>, String> {
        let (val, _) = parse_value(field, v).map_err(|e| format!("{}: {e}", item.key))?;
        Ok(vec![Action::SetField(MatchField::exact(field, val))])
    };
    match key.as_ref() {
        "output" => {
            if item.delim == Some('(') {
                return Err("output(...) is not supported; use output:PORT".into());
            }
            if value.contains('[') {
                let src = parse_subfield(value).map_err(|e| format!("output: {e}"))?;
                one(Action::OutputReg { src, max_len: 0 })
            } else {
                let p = parse_port(value).map_err(|e| format!("output: {e}"))?;
                one(Action::output(p))
            }
        }
        "controller" => one(parse_controller(item)?),
        "group" => one(Action::Group(
            parse_uint(value, 32).map_err(|e| format!("group: {e}"))? as u32,
        )),
        "set_field" => parse_set_field(value),
        "load" => one(parse_load(value)?),
        "move" => one(parse_move(value)?),
        "resubmit" => one(parse_resubmit(item)?),
        "ct" => one(parse_ct(value, ctx)?),
        "ct_clear" => one(Action::CtClear),
        "conjunction" => one(parse_conjunction(value)?),
        "multipath" => one(parse_multipath(value)?),
        "learn" => one(parse_learn(value)?),
        "note" => {
            let mut bytes = parse_hex_arg(value)?;
            // The action is padded to 8 bytes; OVS reads the padding back as note bytes.
            let padded = (10 + bytes.len()).div_ceil(8) * 8 - 10;
            bytes.resize(padded.max(6), 0);
            one(Action::Note(Bytes::from(bytes)))
        }
        "push_vlan" => {
            let t = parse_uint(value, 16).map_err(|e| format!("push_vlan: {e}"))? as u16;
            if t != 0x8100 && t != 0x88a8 {
                return Err(format!(
                    "push_vlan: {value} is not a VLAN ethertype (0x8100 or 0x88a8)"
                ));
            }
            one(Action::PushVlan(t))
        }
        "pop_vlan" => one(Action::PopVlan),
        "strip_vlan" => Err("strip_vlan is OpenFlow 1.0 only; use pop_vlan".into()),
        "dec_ttl" => {
            if item.delim == Some('(') {
                return Err(
                    "dec_ttl(...) with controller ids is not supported; use dec_ttl".into(),
                );
            }
            one(Action::DecTtl)
        }
        "mod_nw_ttl" => one(Action::SetNwTtl(
            parse_uint(value, 8).map_err(|e| format!("mod_nw_ttl: {e}"))? as u8,
        )),
        "set_queue" => one(Action::SetQueue(
            parse_uint(value, 32).map_err(|e| format!("set_queue: {e}"))? as u32,
        )),
        "mod_dl_src" => set(Field::EthSrc, value),
        "mod_dl_dst" => set(Field::EthDst, value),
        "mod_nw_src" => set(Field::Ipv4Src, value),
        "mod_nw_dst" => set(Field::Ipv4Dst, value),
        "mod_tp_src" | "mod_tp_dst" => {
            let src = key == "mod_tp_src";
            let field = match ctx.exact(Field::IpProto) {
                Some(6) => {
                    if src {
                        Field::TcpSrc
                    } else {
                        Field::TcpDst
                    }
                }
                Some(17) => {
                    if src {
                        Field::UdpSrc
                    } else {
                        Field::UdpDst
                    }
                }
                Some(132) => {
                    if src {
                        Field::SctpSrc
                    } else {
                        Field::SctpDst
                    }
                }
                _ => return Err(format!("{key} needs a tcp, udp or sctp match")),
            };
            set(field, value)
        }
        "mod_nw_tos" => {
            let tos = parse_uint(value, 8).map_err(|e| format!("mod_nw_tos: {e}"))? as u8;
            if tos & 3 != 0 {
                return Err(format!(
                    "mod_nw_tos: {value}: the low 2 bits (ECN) must be zero"
                ));
            }
            one(Action::SetField(MatchField::u8(Field::IpDscp, tos >> 2)))
        }
        "mod_nw_ecn" => set(Field::IpEcn, value),
        "mod_vlan_vid" => {
            let vid = parse_uint(value, 12).map_err(|e| format!("mod_vlan_vid: {e}"))? as u16;
            let tagged = ctx
                .match_
                .get(Field::VlanVid)
                .is_some_and(|m| m.value_u128() & 0x1000 != 0);
            let mut v = Vec::new();
            if !tagged {
                v.push(Action::PushVlan(0x8100));
            }
            v.push(Action::SetField(MatchField::u16(
                Field::VlanVid,
                vid | 0x1000,
            )));
            Ok(v)
        }
        "mod_vlan_pcp" => set(Field::VlanPcp, value),
        "set_tunnel" | "set_tunnel64" => set(Field::TunnelId, value),
        "exit" | "enqueue" | "bundle" | "bundle_load" | "sample" | "clone" | "check_pkt_larger"
        | "encap" | "decap" | "fin_timeout" | "push_mpls" | "pop_mpls" => Err(format!(
            "action {key} is not supported by this implementation"
        )),
        _ => {
            // A bare port: `1`, `LOCAL`, `IN_PORT`, `NORMAL`, `CONTROLLER:100`...
            if item.delim.is_none()
                && let Ok(p) = parse_port(item.key)
            {
                return one(Action::output(p));
            }
            Err(format!("unknown action {:?}", item.key))
        }
    }
}
