//! Groups in `ovs-ofctl add-group` / `dump-groups` syntax (OVS lib/ofp-group.c
//! `parse_ofp_group_mod_str__()`, `parse_bucket_str()` and lib/ofp-print.c
//! `ofp_print_group()`).

use super::SyntaxError;
use super::actions::{ActionContext, format_actions, parse_action_list};
use super::lex::items;
use super::match_fmt::{fmt_port, parse_port};
use super::value::parse_uint;
use crate::matching::Match;
use crate::message::{Bucket, GroupDesc, GroupMod, GroupModCommand, GroupType};
use crate::port;

fn err(line: &str, field: Option<&str>, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        line: None,
        field: field.map(str::to_owned),
        message: message.into(),
        input: line.to_owned(),
    }
}

fn type_name(t: GroupType) -> &'static str {
    match t {
        GroupType::All => "all",
        GroupType::Select => "select",
        GroupType::Indirect => "indirect",
        GroupType::FastFailover => "ff",
    }
}

/// The largest bucket id (OpenFlow 1.5 `OFPG_BUCKET_MAX`), which ovs-ofctl checks even when
/// the id is not sent.
const OFPG15_BUCKET_MAX: u64 = 0xffff_ff00;

/// Parses one `add-group` line (`group_id=1,type=select,bucket=weight:100,actions=...`)
/// into an OFPGC_ADD group-mod. Buckets of `select` groups default to weight 1, others to
/// weight 0, as ovs-ofctl sends them.
pub fn parse_group(line: &str) -> Result<GroupMod, SyntaxError> {
    let (head, mut rest) = match line.find("bucket=") {
        Some(i) => (&line[..i], Some(&line[i..])),
        None => (line, None),
    };
    let mut group_id: Option<u32> = None;
    let mut group_type: Option<GroupType> = None;
    // OpenFlow 1.5 group properties: checked as ovs-ofctl checks them, then dropped, as
    // ovs-ofctl -O OpenFlow13 drops them (an OF1.3 group_mod has no properties; the switch
    // then chooses its own selection method).
    let mut selection_method: Option<&str> = None;
    let mut method_param = false;
    let mut fields = false;
    for item in items(head) {
        let e = |m: String| err(line, Some(item.key), m);
        match item.key {
            "group_id" => {
                let id = if item.value == "all" {
                    port::GROUP_ALL
                } else {
                    parse_uint(item.value, 32).map_err(|m| e(format!("group_id: {m}")))? as u32
                };
                if id > port::GROUP_MAX && id != port::GROUP_ALL {
                    return Err(e(format!("group_id: {id} is above the largest group id")));
                }
                group_id = Some(id);
            }
            "type" => {
                group_type = Some(match item.value {
                    "all" => GroupType::All,
                    "select" => GroupType::Select,
                    "indirect" => GroupType::Indirect,
                    "ff" | "fast_failover" => GroupType::FastFailover,
                    other => {
                        return Err(e(format!(
                            "type: unknown group type {other:?} (all, select, indirect, ff)"
                        )));
                    }
                })
            }
            "selection_method" => {
                if item.value.len() > 15 {
                    return Err(e("selection_method is longer than 15 bytes".into()));
                }
                selection_method = Some(item.value);
            }
            "selection_method_param" => {
                parse_uint(item.value, 64)
                    .map_err(|m| e(format!("selection_method_param: {m}")))?;
                method_param = true;
            }
            "fields" => {
                for name in item.value.split(',').map(str::trim) {
                    let name = name.split_once('=').map_or(name, |(n, _)| n);
                    if crate::Field::from_name(name).is_none() {
                        return Err(e(format!("fields: unknown field {name}")));
                    }
                }
                fields = true;
            }
            "command_bucket_id" => {
                return Err(e(format!(
                    "{} needs OpenFlow 1.5; this tool speaks 1.3",
                    item.key
                )));
            }
            other => return Err(e(format!("unknown keyword {other}"))),
        }
    }
    if method_param && selection_method.is_none() {
        return Err(err(
            line,
            Some("selection_method_param"),
            "selection_method_param is only allowed with \"selection_method\"",
        ));
    }
    if fields && selection_method != Some("hash") {
        return Err(err(
            line,
            Some("fields"),
            "fields may only be specified with \"selection_method=hash\"",
        ));
    }
    let group_id =
        group_id.ok_or_else(|| err(line, Some("group_id"), "must specify a group_id"))?;
    let group_type = group_type.unwrap_or(GroupType::All);
    let empty = Match::new();
    let ctx = ActionContext { match_: &empty };
    let mut buckets = Vec::new();
    while let Some(b) = rest {
        let body = &b["bucket=".len()..];
        let (this, next) = match body.find("bucket=") {
            Some(i) => (&body[..i], Some(&body[i..])),
            None => (body, None),
        };
        rest = next;
        let mut bucket = Bucket {
            weight: if group_type == GroupType::Select {
                1
            } else {
                0
            },
            watch_port: port::ANY,
            watch_group: port::GROUP_ANY,
            actions: Vec::new(),
        };
        let mut action_text: Vec<String> = Vec::new();
        for item in items(this) {
            let e = |m: String| err(line, Some("bucket"), m);
            match item.key.to_ascii_lowercase().as_str() {
                "weight" => {
                    if group_type != GroupType::Select {
                        return Err(e("Only select groups can have bucket weights.".into()));
                    }
                    bucket.weight =
                        parse_uint(item.value, 16).map_err(|m| e(format!("weight: {m}")))? as u16
                }
                "watch_port" => {
                    let p = parse_port(item.value).map_err(|m| e(format!("watch_port: {m}")))?;
                    if p >= port::MAX && p != port::ANY {
                        return Err(e(format!("{}: invalid watch_port", item.value)));
                    }
                    bucket.watch_port = p;
                }
                "watch_group" => {
                    let g = parse_uint(item.value, 32)
                        .map_err(|m| e(format!("watch_group: {m}")))?
                        as u32;
                    if g > port::GROUP_MAX {
                        return Err(e(format!("invalid watch_group id {g}")));
                    }
                    bucket.watch_group = g;
                }
                "bucket_id" => {
                    // ovs-ofctl -O OpenFlow13 parses it (parse_bucket_str) and leaves it out
                    // of the OF1.1-1.4 encoding, which has no bucket ids: the same here.
                    let id =
                        parse_uint(item.value, 32).map_err(|m| e(format!("bucket_id: {m}")))?;
                    if id > OFPG15_BUCKET_MAX {
                        return Err(e(format!("invalid bucket_id id {id}")));
                    }
                }
                "actions" | "action" => action_text.push(item.value.to_owned()),
                _ => action_text.push(match item.delim {
                    Some('(') => format!("{}({})", item.key, item.value),
                    Some(d) => format!("{}{d}{}", item.key, item.value),
                    None => item.key.to_owned(),
                }),
            }
        }
        bucket.actions = parse_action_list(&action_text.join(","), &ctx)
            .map_err(|m| err(line, Some("actions"), m))?;
        buckets.push(bucket);
    }
    Ok(GroupMod {
        command: GroupModCommand::Add,
        group_type,
        group_id,
        buckets,
    })
}

/// Prints a group as `ovs-ofctl -O OpenFlow13 dump-groups` does, without the leading space.
pub fn format_group_desc(g: &GroupDesc) -> String {
    let mut s = format!("group_id={},type={}", g.group_id, type_name(g.group_type));
    let default_weight = if g.group_type == GroupType::Select {
        1
    } else {
        0
    };
    for b in &g.buckets {
        s.push_str(",bucket=");
        if b.weight != default_weight {
            s.push_str(&format!("weight:{},", b.weight));
        }
        if b.watch_port != port::ANY {
            s.push_str(&format!("watch_port:{},", fmt_port(b.watch_port)));
        }
        if b.watch_group != port::GROUP_ANY {
            s.push_str(&format!("watch_group:{},", b.watch_group));
        }
        s.push_str("actions=");
        if b.actions.is_empty() {
            s.push_str("drop");
        } else {
            s.push_str(&format_actions(&b.actions, &super::Names::default()));
        }
    }
    s
}

/// Prints a group-mod (its group and buckets) in `add-group` syntax, which
/// [`parse_group`] reads back.
pub fn format_group_mod(g: &GroupMod) -> String {
    format_group_desc(&GroupDesc {
        group_type: g.group_type,
        group_id: g.group_id,
        buckets: g.buckets.clone(),
    })
}
