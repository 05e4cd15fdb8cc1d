//! The `ovs-ofctl -O OpenFlow13` text syntax for flows and groups: parse and print.
//!
//! Owns: turning `add-flow` / `add-group` lines and `del-flows` / `dump-flows` filters into
//! the crate's wire types, and printing [`FlowStats`](crate::FlowStats) and
//! [`GroupDesc`](crate::GroupDesc) exactly as `ovs-ofctl -O OpenFlow13 dump-flows` /
//! `dump-groups` print them, so operators can diff our output against theirs.
//!
//! Does not own: the wire encoding (the codec modules) or talking to a switch
//! ([`crate::conn`]).
//!
//! Fidelity notes. OVS prints from its internal `struct match` and `ofpacts`, not from the
//! bytes: the printer folds fields the same way (registers, VLAN TCI, `nw_tos`, protocol
//! shorthands such as `tcp`), and the parser makes ovs-ofctl's encoding choices (a masked
//! `set_field` is sent as `load`, a plain `controller` as an output to CONTROLLER...),
//! because the switch echoes the encoding back and the dump text depends on it. A line
//! parsed here and the same line parsed by ovs-ofctl dump identically.
//!
//! Known differences from ovs-ofctl (each is the codec's model, not a parsing choice):
//! - `set_field:N->in_port` is sent as `load:N->NXM_OF_IN_PORT[]` (ovs-vswitchd refuses
//!   OFPAT_SET_FIELD with the 32-bit OXM in_port, and ovs-ofctl's 16-bit NXM header is
//!   not what [`crate::Field::InPort`] encodes), so it dumps as `load:`;
//! - in `ct(...)` the `nat` is always sent first, so `ct(exec(...),nat)` dumps as
//!   `ct(nat,exec(...))` where ovs-ofctl keeps it inside `exec(...)`.
//!
//! - `bucket_id:` in a group's bucket is checked and dropped, as ovs-ofctl -O OpenFlow13
//!   does (OF1.3 buckets have no id).
//!
//! - `importance=` (OpenFlow 1.4) and a group's `selection_method=`,
//!   `selection_method_param=` and `fields(...)` (OpenFlow 1.5) are checked as ovs-ofctl
//!   checks them and dropped, as ovs-ofctl -O OpenFlow13 does.
//!
//! Not supported (rejected with an error naming them): `command_bucket_id`, `learn` options
//! `limit` and `result_dst`, and actions the codec does not model (`bundle`,
//! `sample`, `enqueue` (ovs-ofctl -O OpenFlow13 turns it into
//! `set_queue,output,pop_queue`), `output(...)`, `strip_vlan`, MPLS...). `dec_ttl(ids)` is
//! refused, as ovs-ofctl -O OpenFlow13 refuses it.

mod actions;
mod fields;
mod flow;
mod group;
mod lex;
mod match_fmt;
mod match_parse;
mod value;

use std::fmt;

pub use flow::{
    FlowFilter, format_flow_mod, format_flow_stats, format_flow_stats_named, format_match,
    parse_flow, parse_flow_filter,
};

/// The names a switch gives its tables and ports, for printing as `ovs-ofctl --names`
/// does. Empty maps print numbers, exactly as without `--names`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Table names by id (`Connection::table_names`, from OVSDB `Flow_Table`).
    pub tables: std::collections::BTreeMap<u8, String>,
    /// Port names by number (OFPMP_PORT_DESC).
    pub ports: std::collections::BTreeMap<u32, String>,
}

impl Names {
    /// `table=` / `goto_table:` text for a table: its name, else its number.
    pub(crate) fn table(&self, table: u8) -> String {
        match self.tables.get(&table) {
            Some(name) => quote_name(name),
            None => table.to_string(),
        }
    }

    /// A port as `ofputil_format_port()` prints it: reserved ports by their reserved
    /// name, named ports by name, others by number.
    pub(crate) fn port(&self, port: u32) -> String {
        match self.ports.get(&port) {
            Some(name) if port < crate::port::MAX => quote_name(name),
            _ => match_fmt::fmt_port(port),
        }
    }
}

/// `namemap_put_name()`: a name is printed bare when it starts with a letter and is
/// alphanumeric, otherwise as a JSON string (`"sy-gw0"`), so it can never be read back as
/// a number or a keyword.
fn quote_name(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    if bare {
        return name.to_owned();
    }
    let mut out = String::from("\"");
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
pub use group::{format_group_desc, format_group_mod, parse_group};

use crate::message::{FlowMod, GroupMod};

/// A line of `ovs-ofctl` text that could not be parsed. The message names the field or
/// keyword at fault and what is wrong with it; `line` is set when the text came from a
/// file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line number in the file, when parsing a file.
    pub line: Option<usize>,
    /// The keyword or field at fault (`nw_src`, `actions`, `bucket`...), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The text that was being parsed.
    pub input: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        match &self.field {
            Some(field) if !self.message.starts_with(field.as_str()) => {
                write!(f, "{field}: {}", self.message)?
            }
            _ => f.write_str(&self.message)?,
        }
        write!(f, " (in `{}`)", self.input.trim())
    }
}

impl std::error::Error for SyntaxError {}

/// The lines of a flow or group file that carry content, with their 1-based numbers:
/// `#` starts a comment, blank lines are skipped (`ds_get_preprocessed_line()` in OVS).
pub fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("");
        (!line.trim().is_empty()).then_some((i + 1, line))
    })
}

/// Parses every flow of an `ovs-ofctl add-flows` file. The first bad line stops parsing;
/// its error carries the line number.
pub fn parse_flows(text: &str) -> Result<Vec<FlowMod>, SyntaxError> {
    content_lines(text)
        .map(|(n, line)| {
            parse_flow(line).map_err(|mut e| {
                e.line = Some(n);
                e
            })
        })
        .collect()
}

/// Parses every group of an `ovs-ofctl add-groups` file, like [`parse_flows`].
pub fn parse_groups(text: &str) -> Result<Vec<GroupMod>, SyntaxError> {
    content_lines(text)
        .map(|(n, line)| {
            parse_group(line).map_err(|mut e| {
                e.line = Some(n);
                e
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
