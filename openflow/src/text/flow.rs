//! Whole flows: `add-flow` lines into [`FlowMod`]s, `del-flows`/`dump-flows` filters, and
//! [`FlowStats`] printed as the `ovs-ofctl dump-flows` line (OVS lib/ofp-flow.c
//! `parse_ofp_str__()` and `ofputil_flow_stats_format()`).

use std::fmt::Write as _;

use super::Names;
use super::SyntaxError;
use super::actions::{ActionContext, format_instructions, parse_instructions};
use super::lex::{items, split_actions};
use super::match_fmt::{DEFAULT_PRIORITY, MatchView, parse_port};
use super::match_parse::MatchBuilder;
use super::value::{parse_u64, parse_uint};
use crate::matching::Match;
use crate::message::flow_mod::flags;
use crate::message::{FlowMod, FlowModCommand, FlowStats, FlowStatsRequest};
use crate::port;

/// The selection part of `del-flows` / `dump-flows` (`ovs-ofctl`'s flow filter):
/// `table=`, `cookie=VALUE/MASK`, `out_port=`, `out_group=`, `priority=` (strict deletes
/// only) and a match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowFilter {
    /// `table=N`; `None` means every table.
    pub table_id: Option<u8>,
    /// `cookie=VALUE/MASK`: (value, mask); mask 0 or `None` means any cookie.
    pub cookie: Option<(u64, u64)>,
    /// `out_port=`.
    pub out_port: Option<u32>,
    /// `out_group=`.
    pub out_group: Option<u32>,
    /// `priority=` (meaningful for `--strict` deletes).
    pub priority: Option<u16>,
    /// The match the selected flows must be covered by.
    pub match_: Match,
}

impl FlowFilter {
    /// The flow statistics request (`dump-flows`) this filter describes.
    pub fn to_stats_request(&self) -> FlowStatsRequest {
        let (cookie, cookie_mask) = self.cookie.unwrap_or((0, 0));
        FlowStatsRequest {
            table_id: self.table_id.unwrap_or(port::TABLE_ALL),
            out_port: self.out_port.unwrap_or(port::ANY),
            out_group: self.out_group.unwrap_or(port::GROUP_ANY),
            cookie,
            cookie_mask,
            match_: self.match_.clone(),
        }
    }

    /// The OFPFC_DELETE (or DELETE_STRICT with `strict`) this filter describes.
    pub fn to_delete(&self, strict: bool) -> FlowMod {
        let (cookie, cookie_mask) = self.cookie.unwrap_or((0, 0));
        FlowMod {
            command: if strict {
                FlowModCommand::DeleteStrict
            } else {
                FlowModCommand::Delete
            },
            cookie,
            cookie_mask,
            table_id: self.table_id.unwrap_or(port::TABLE_ALL),
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            out_port: self.out_port.unwrap_or(port::ANY),
            out_group: self.out_group.unwrap_or(port::GROUP_ANY),
            match_: self.match_.clone(),
            ..FlowMod::default()
        }
    }
}

fn err(line: &str, field: Option<&str>, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        line: None,
        field: field.map(str::to_owned),
        message: message.into(),
        input: line.to_owned(),
    }
}

/// Flow-level keywords shared by flow-mods and filters. Returns `Ok(true)` when taken.
struct Header {
    table: Option<u8>,
    priority: Option<u16>,
    cookie: Option<u64>,
    cookie_mask: Option<(u64, u64)>,
    idle: u16,
    hard: u16,
    flags: u16,
    out_port: Option<u32>,
    out_group: Option<u32>,
}

/// Parses the non-action part of a line into header keywords and a match.
fn parse_head(line: &str, head: &str, is_add: bool) -> Result<(Header, Match), SyntaxError> {
    let mut h = Header {
        table: None,
        priority: None,
        cookie: None,
        cookie_mask: None,
        idle: 0,
        hard: 0,
        flags: 0,
        out_port: None,
        out_group: None,
    };
    let mut mb = MatchBuilder::default();
    for item in items(head) {
        let key = item.key;
        let value = item.value;
        let e = |m: String| err(line, Some(key), m);
        let num = |bits: u32| parse_uint(value, bits).map_err(|m| e(format!("{key}: {m}")));
        match key {
            "table" => h.table = Some(num(8)? as u8),
            "priority" => h.priority = Some(num(16)? as u16),
            "idle_timeout" => h.idle = num(16)? as u16,
            "hard_timeout" => h.hard = num(16)? as u16,
            // OpenFlow 1.4: checked and dropped, as ovs-ofctl -O OpenFlow13 does.
            "importance" => {
                num(16)?;
            }
            "send_flow_rem" => h.flags |= flags::SEND_FLOW_REM,
            "check_overlap" => h.flags |= flags::CHECK_OVERLAP,
            "reset_counts" => h.flags |= flags::RESET_COUNTS,
            "no_packet_counts" => h.flags |= flags::NO_PKT_COUNTS,
            "no_byte_counts" => h.flags |= flags::NO_BYT_COUNTS,
            "no_readonly_table" | "allow_hidden_fields" => {}
            // Accepted and ignored so dump-flows output can be fed back (as ovs-ofctl does).
            "duration" | "n_packets" | "n_bytes" | "idle_age" | "hard_age" => {}
            "cookie" => match value.split_once('/') {
                Some((v, m)) => {
                    if is_add {
                        return Err(e("flow additions cannot use a cookie mask".into()));
                    }
                    let v = parse_u64(v).map_err(|m| e(format!("cookie: {m}")))?;
                    let m = parse_u64(m).map_err(|m| e(format!("cookie mask: {m}")))?;
                    h.cookie_mask = Some((v, m));
                }
                None => {
                    if !is_add {
                        return Err(e(
                            "cannot set cookie here; use cookie=VALUE/MASK to select flows".into(),
                        ));
                    }
                    h.cookie = Some(parse_u64(value).map_err(|m| e(format!("cookie: {m}")))?);
                }
            },
            "out_port" if !is_add => {
                h.out_port = Some(parse_port(value).map_err(|m| e(format!("out_port: {m}")))?)
            }
            "out_group" if !is_add => h.out_group = Some(num(32)? as u32),
            _ => match mb.item(key, value) {
                Ok(true) => {}
                Ok(false) => return Err(e(format!("unknown keyword {key}"))),
                Err(m) => return Err(e(m)),
            },
        }
    }
    let m = mb.finish().map_err(|m| err(line, None, m))?;
    Ok((h, m))
}

/// Parses one `add-flow` line (`ovs-ofctl add-flow` syntax, OpenFlow 1.3) into an
/// OFPFC_ADD flow-mod. A leading `add`, `modify`, `modify_strict`, `delete` or
/// `delete_strict` word selects another command, as in `ovs-ofctl add-flows` files.
///
/// ```
/// let fm = openflow::text::parse_flow("table=1,priority=10,tcp,tp_dst=80,actions=output:2").unwrap();
/// assert_eq!(fm.table_id, 1);
/// ```
pub fn parse_flow(line: &str) -> Result<FlowMod, SyntaxError> {
    let trimmed = line.trim_start();
    let word_len = trimmed
        .find(|c: char| c == ',' || c.is_whitespace())
        .unwrap_or(trimmed.len());
    let (command, body) = match &trimmed[..word_len] {
        "add" => (FlowModCommand::Add, &trimmed[word_len..]),
        "modify" => (FlowModCommand::Modify, &trimmed[word_len..]),
        "modify_strict" => (FlowModCommand::ModifyStrict, &trimmed[word_len..]),
        "delete" => (FlowModCommand::Delete, &trimmed[word_len..]),
        "delete_strict" => (FlowModCommand::DeleteStrict, &trimmed[word_len..]),
        _ => (FlowModCommand::Add, trimmed),
    };
    let needs_actions = matches!(
        command,
        FlowModCommand::Add | FlowModCommand::Modify | FlowModCommand::ModifyStrict
    );
    let (head, actions) = if needs_actions {
        match split_actions(body) {
            (head, Some(actions)) => (head, Some(actions)),
            (_, None) => return Err(err(line, Some("actions"), "must specify an action")),
        }
    } else {
        (body, None)
    };
    let is_add = command == FlowModCommand::Add;
    let (h, match_) = parse_head(line, head, is_add || needs_actions)?;
    let instructions = match actions {
        Some(a) => parse_instructions(a, &ActionContext { match_: &match_ })
            .map_err(|m| err(line, Some("actions"), m))?,
        None => Vec::new(),
    };
    let (cookie, cookie_mask) = match (h.cookie, h.cookie_mask) {
        (_, Some((v, m))) => (v, m),
        (Some(c), None) => (c, 0),
        (None, None) => (0, 0),
    };
    let default_table = if is_add { 0 } else { port::TABLE_ALL };
    Ok(FlowMod {
        cookie,
        cookie_mask,
        table_id: h.table.unwrap_or(default_table),
        command,
        idle_timeout: h.idle,
        hard_timeout: h.hard,
        priority: h.priority.unwrap_or(DEFAULT_PRIORITY),
        flags: h.flags,
        out_port: h.out_port.unwrap_or(port::ANY),
        out_group: h.out_group.unwrap_or(port::GROUP_ANY),
        match_,
        instructions,
        ..FlowMod::default()
    })
}

/// Parses a `del-flows` / `dump-flows` filter (`table=1,cookie=0x5/0xff,ip,nw_dst=...`).
/// An empty string selects every flow.
pub fn parse_flow_filter(line: &str) -> Result<FlowFilter, SyntaxError> {
    let (head, actions) = split_actions(line);
    if actions.is_some() {
        return Err(err(
            line,
            Some("actions"),
            "a flow filter cannot have actions",
        ));
    }
    let (h, match_) = parse_head(line, head, false)?;
    Ok(FlowFilter {
        table_id: h.table.filter(|t| *t != port::TABLE_ALL),
        cookie: h.cookie_mask,
        out_port: h.out_port,
        out_group: h.out_group,
        priority: h.priority,
        match_,
    })
}

/// `ofp_print_duration()`: seconds, then 3 decimals when the fraction is whole
/// milliseconds, 9 otherwise, then `s`.
fn fmt_duration(sec: u32, nsec: u32) -> String {
    let mut s = sec.to_string();
    if nsec > 0 {
        let _ = write!(s, ".{:03}", nsec / 1_000_000);
        if !nsec.is_multiple_of(1_000_000) {
            let _ = write!(s, "{:06}", nsec % 1_000_000);
        }
    }
    s.push('s');
    s
}

/// Prints the match part of a flow (`priority=100,tcp,tp_dst=80`) as `match_format()`
/// does; the priority is omitted when it is the default 32768.
pub fn format_match(m: &Match, priority: u16) -> String {
    let view = MatchView::new(
        m.iter()
            .map(|mf| (mf.field, mf.value.as_ref(), mf.mask.as_deref())),
    );
    let mut s = String::new();
    view.format(&mut s, priority);
    s
}

/// Prints one flow exactly as `ovs-ofctl -O OpenFlow13 dump-flows` does, without the
/// leading space ovs-ofctl puts before each flow. With `with_stats` false the output is
/// that of `dump-flows --no-stats` (no duration, counters; cookie and table only when not
/// zero).
pub fn format_flow_stats(fs: &FlowStats, with_stats: bool) -> String {
    format_flow_stats_named(fs, with_stats, &Names::default())
}

/// [`format_flow_stats`] as `ovs-ofctl --names` prints it: named tables appear by name in
/// `table=` (printed even for table 0 when it has a name), `goto_table:`, `resubmit(,T)`
/// and `ct(table=T)`; named ports by name in `in_port=`, `output:` and `resubmit`.
pub fn format_flow_stats_named(fs: &FlowStats, with_stats: bool, names: &Names) -> String {
    let mut s = String::new();
    if with_stats || fs.cookie != 0 {
        let _ = write!(s, "cookie=0x{:x}, ", fs.cookie);
    }
    if with_stats {
        let _ = write!(
            s,
            "duration={}, ",
            fmt_duration(fs.duration_sec, fs.duration_nsec)
        );
    }
    if with_stats || fs.table_id != 0 || names.tables.contains_key(&fs.table_id) {
        let _ = write!(s, "table={}, ", names.table(fs.table_id));
    }
    if with_stats {
        let _ = write!(
            s,
            "n_packets={}, n_bytes={}, ",
            fs.packet_count, fs.byte_count
        );
    }
    if fs.idle_timeout != 0 {
        let _ = write!(s, "idle_timeout={}, ", fs.idle_timeout);
    }
    if fs.hard_timeout != 0 {
        let _ = write!(s, "hard_timeout={}, ", fs.hard_timeout);
    }
    // ofputil_flow_mod_flags_format(): each flag followed by a space, no comma.
    for (bit, name) in [
        (flags::SEND_FLOW_REM, "send_flow_rem "),
        (flags::CHECK_OVERLAP, "check_overlap "),
        (flags::RESET_COUNTS, "reset_counts "),
        (flags::NO_PKT_COUNTS, "no_packet_counts "),
        (flags::NO_BYT_COUNTS, "no_byte_counts "),
    ] {
        if fs.flags & bit != 0 {
            s.push_str(name);
        }
    }
    let m = {
        let view = MatchView::new(
            fs.match_
                .iter()
                .map(|mf| (mf.field, mf.value.as_ref(), mf.mask.as_deref())),
        );
        let mut m = String::new();
        view.format_named(&mut m, fs.priority, names);
        m
    };
    if !m.is_empty() {
        s.push_str(&m);
        s.push(' ');
    }
    s.push_str("actions=");
    s.push_str(&format_instructions(&fs.instructions, names));
    s
}

/// Prints a flow-mod as an `add-flow` line that [`parse_flow`] reads back to the same
/// flow-mod (for OFPFC_ADD): `table=`, `cookie=`, timeouts, flags, match, `actions=`.
pub fn format_flow_mod(fm: &FlowMod) -> String {
    let stats = FlowStats::from(fm);
    // The dump syntax is also valid add-flow syntax: ", " and "flag " separators are
    // white space to the parser.
    format_flow_stats(&stats, false)
}
