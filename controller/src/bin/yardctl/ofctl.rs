//! `yardctl ofctl`: OpenFlow switch management in the syntax of `ovs-ofctl -O OpenFlow13`.
//!
//! Owns the command line (subcommands, files, `-` for stdin, error messages naming the
//! file line and field at fault) and the choice of how changes are sent: one atomic,
//! ordered bundle with `--bundle`, otherwise pipelined flow-mods closed by a barrier.
//! Parsing and printing live in `openflow::text`; the connection in `openflow::conn`.

use std::io::Read as _;

use openflow::text::{self, SyntaxError};
use openflow::{
    Connection, FlowMod, GroupMod, Message, MultipartReplyBody, MultipartRequest,
    MultipartRequestBody,
};

/// Arguments of `yardctl ofctl`.
#[derive(clap::Args)]
pub struct Args {
    /// Send all changes as one atomic, ordered OpenFlow bundle: all or nothing.
    #[arg(long, global = true)]
    bundle: bool,
    /// dump-flows: leave out durations and counters, as `ovs-ofctl --no-stats`.
    #[arg(long, global = true)]
    no_stats: bool,
    /// del-flows: delete only the flow with exactly this match and priority.
    #[arg(long, global = true)]
    strict: bool,
    /// dump-flows: print and accept table names the switch reports (OVSDB `Flow_Table`),
    /// as `ovs-ofctl --names`.
    #[arg(long, global = true)]
    names: bool,
    /// Accepted so ovs-ofctl command lines can be reused; only OpenFlow13 is spoken.
    #[arg(short = 'O', long = "protocols", global = true, value_name = "VERSION")]
    protocols: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Add the flows of FILE (`-` for stdin), one per line, `#` comments.
    AddFlows {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// Flow file, or `-` for stdin.
        file: String,
    },
    /// Add one flow.
    AddFlow {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// The flow, e.g. `table=0,priority=10,ip,actions=output:1`.
        flow: String,
    },
    /// Delete the flows matching FLOW (all flows without it).
    DelFlows {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// Filter: `table=`, `cookie=V/M`, match fields.
        flow: Option<String>,
    },
    /// Print the flows matching FLOW (all flows without it).
    DumpFlows {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// Filter: `table=`, `cookie=V/M`, match fields.
        flow: Option<String>,
    },
    /// Add the groups of FILE (`-` for stdin).
    AddGroups {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// Group file, or `-` for stdin.
        file: String,
    },
    /// Add one group.
    AddGroup {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// The group, e.g. `group_id=1,type=all,bucket=actions=output:1`.
        group: String,
    },
    /// Print every group.
    DumpGroups {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
    },
    /// Delete every group (or the one given as `group_id=N`).
    DelGroups {
        /// `unix:PATH` or `tcp:IP:PORT`.
        target: String,
        /// `group_id=N`.
        group: Option<String>,
    },
}

/// Where a change came from, for error messages: `FILE:LINE` (or the command's name)
/// and the line's text. Borrowed, so parsing 100k lines allocates nothing for it.
struct Origin<'a> {
    file: &'a str,
    line: Option<usize>,
    text: &'a str,
}

impl Origin<'_> {
    fn place(&self) -> String {
        match self.line {
            Some(n) => format!("{}:{n}", self.file),
            None => self.file.to_owned(),
        }
    }
}

fn read_input(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading flows from stdin: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{file}: cannot read: {e}"))
    }
}

fn file_label(file: &str) -> &str {
    if file == "-" { "stdin" } else { file }
}

/// `FILE:LINE: field: what` (the way ovs-ofctl reports file errors).
fn syntax_error(file: &str, e: &SyntaxError) -> String {
    let mut e = e.clone();
    let line = e.line.take();
    match line {
        Some(l) => format!("{}:{l}: {e}", file_label(file)),
        None => e.to_string(),
    }
}

/// Files at least this long are parsed on several threads.
const PARALLEL_PARSE_LINES: usize = 8192;

/// Parses every content line of a file with `parse`, keeping where each came from. Large
/// files are cut into one contiguous run of lines per CPU and parsed in parallel (parsing
/// is most of our share of an `add-flows` of 100k flows); results keep file order and
/// the error reported is the one of the first bad line, as in a sequential parse.
fn parse_file<'a, T: Send>(
    file: &'a str,
    text: &'a str,
    parse: fn(&str) -> Result<T, SyntaxError>,
) -> Result<Vec<(T, Origin<'a>)>, String> {
    let label = file_label(file);
    let lines: Vec<(usize, &'a str)> = text::content_lines(text).collect();
    let parse_run = |run: &[(usize, &'a str)]| -> Result<Vec<(T, Origin<'a>)>, String> {
        run.iter()
            .map(|&(n, line)| {
                parse(line)
                    .map(|v| {
                        (
                            v,
                            Origin {
                                file: label,
                                line: Some(n),
                                text: line.trim(),
                            },
                        )
                    })
                    .map_err(|mut e| {
                        e.line = Some(n);
                        syntax_error(file, &e)
                    })
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if lines.len() < PARALLEL_PARSE_LINES || threads < 2 {
        return parse_run(&lines);
    }
    let chunk = lines.len().div_ceil(threads);
    let results: Vec<Result<Vec<(T, Origin<'a>)>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(chunk)
            .map(|run| scope.spawn(move || parse_run(run)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("internal error: a parser thread panicked".into()))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(lines.len());
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

async fn connect(target: &str) -> Result<Connection, String> {
    Connection::connect(target)
        .await
        .map_err(|e| format!("{target}: {e}"))
}

/// Sends `messages` to the switch: as one bundle, or pipelined with a closing barrier.
/// Errors name the origin of the message the switch rejected.
async fn send_all(
    conn: &Connection,
    target: &str,
    messages: Vec<(Message, Origin<'_>)>,
    bundle: bool,
) -> Result<(), String> {
    let (messages, origins): (Vec<Message>, Vec<Origin<'_>>) = messages.into_iter().unzip();
    let result = if bundle {
        conn.bundle(messages).await
    } else {
        // Pipelined: every flow-mod goes out back to back, one barrier closes the batch.
        conn.apply(&messages).await
    };
    result.map_err(|e| match &e {
        openflow::Error::BundleFailed {
            index: Some(i),
            error,
        } => match origins.get(*i) {
            Some(o) if bundle => format!(
                "{}: switch rejected `{}`: {error}; bundle discarded, nothing changed",
                o.place(),
                o.text
            ),
            Some(o) => format!("{}: switch rejected `{}`: {error}", o.place(), o.text),
            None => format!("{target}: {e}"),
        },
        _ => format!("{target}: {e}"),
    })
}

fn check_protocols(p: &Option<String>) -> Result<(), String> {
    match p {
        Some(v) if !v.split(',').any(|x| x.eq_ignore_ascii_case("OpenFlow13")) => {
            Err(format!("-O {v}: only OpenFlow13 is supported"))
        }
        _ => Ok(()),
    }
}

/// Runs `yardctl ofctl ...`.
pub async fn run(args: Args) -> Result<(), String> {
    check_protocols(&args.protocols)?;
    match &args.command {
        Command::AddFlows { target, file } => {
            let text = read_input(file)?;
            let flows = parse_file(file, &text, text::parse_flow)?;
            add_flows(target, flows, args.bundle).await
        }
        Command::AddFlow { target, flow } => {
            let fm = text::parse_flow(flow).map_err(|e| e.to_string())?;
            let origin = Origin {
                file: "flow",
                line: None,
                text: flow,
            };
            add_flows(target, vec![(fm, origin)], args.bundle).await
        }
        Command::DelFlows { target, flow } => {
            let filter = text::parse_flow_filter(flow.as_deref().unwrap_or(""))
                .map_err(|e| e.to_string())?;
            let conn = connect(target).await?;
            let fm = filter.to_delete(args.strict);
            let origin = Origin {
                file: "del-flows",
                line: None,
                text: flow.as_deref().unwrap_or(""),
            };
            send_all(
                &conn,
                target,
                vec![(Message::FlowMod(fm), origin)],
                args.bundle,
            )
            .await
        }
        Command::DumpFlows { target, flow } => {
            let conn = connect(target).await?;
            let names = if args.names {
                switch_names(&conn, target).await?
            } else {
                text::Names::default()
            };
            let flow = named_table_to_id(flow.as_deref().unwrap_or(""), &names);
            let filter = text::parse_flow_filter(&flow).map_err(|e| e.to_string())?;
            let parts = conn
                .multipart(MultipartRequest::new(MultipartRequestBody::Flow(
                    filter.to_stats_request(),
                )))
                .await
                .map_err(|e| format!("{target}: {e}"))?;
            print!("{}", format_flow_dump(&parts, !args.no_stats, &names));
            Ok(())
        }
        Command::AddGroups { target, file } => {
            let text = read_input(file)?;
            let groups = parse_file(file, &text, text::parse_group)?;
            add_groups(target, groups, args.bundle).await
        }
        Command::AddGroup { target, group } => {
            let gm = text::parse_group(group).map_err(|e| e.to_string())?;
            let origin = Origin {
                file: "group",
                line: None,
                text: group,
            };
            add_groups(target, vec![(gm, origin)], args.bundle).await
        }
        Command::DumpGroups { target } => {
            let conn = connect(target).await?;
            let groups = conn
                .dump_groups()
                .await
                .map_err(|e| format!("{target}: {e}"))?;
            let mut out = String::from("OFPST_GROUP_DESC reply (OF1.3):\n");
            for g in &groups {
                out.push(' ');
                out.push_str(&text::format_group_desc(g));
                out.push('\n');
            }
            print!("{out}");
            Ok(())
        }
        Command::DelGroups { target, group } => {
            let id = match group.as_deref() {
                None => openflow::port::GROUP_ALL,
                Some(g) => {
                    let v = g.strip_prefix("group_id=").unwrap_or(g);
                    v.parse::<u32>()
                        .map_err(|_| format!("del-groups: {g:?} is not group_id=N"))?
                }
            };
            let conn = connect(target).await?;
            let origin = Origin {
                file: "del-groups",
                line: None,
                text: group.as_deref().unwrap_or(""),
            };
            send_all(
                &conn,
                target,
                vec![(Message::GroupMod(GroupMod::delete(id)), origin)],
                args.bundle,
            )
            .await
        }
    }
}

async fn add_flows(
    target: &str,
    flows: Vec<(FlowMod, Origin<'_>)>,
    bundle: bool,
) -> Result<(), String> {
    let conn = connect(target).await?;
    let messages = flows
        .into_iter()
        .map(|(fm, o)| (Message::FlowMod(fm), o))
        .collect();
    send_all(&conn, target, messages, bundle).await
}

async fn add_groups(
    target: &str,
    groups: Vec<(GroupMod, Origin<'_>)>,
    bundle: bool,
) -> Result<(), String> {
    let conn = connect(target).await?;
    let messages = groups
        .into_iter()
        .map(|(gm, o)| (Message::GroupMod(gm), o))
        .collect();
    send_all(&conn, target, messages, bundle).await
}

/// The `dump-flows` output: with statistics, a header per reply message as ovs-ofctl
/// prints (without the xid, which is ours), then each flow indented by one space.
/// The names the switch gives its tables and ports, as `ovs-ofctl --names` fetches them.
async fn switch_names(conn: &Connection, target: &str) -> Result<text::Names, String> {
    let tables = conn
        .table_names()
        .await
        .map_err(|e| format!("{target}: table names: {e}"))?;
    let parts = conn
        .multipart(MultipartRequest::new(MultipartRequestBody::PortDesc))
        .await
        .map_err(|e| format!("{target}: port descriptions: {e}"))?;
    let mut ports = std::collections::BTreeMap::new();
    for part in parts {
        if let MultipartReplyBody::PortDesc(descs) = part {
            ports.extend(descs.into_iter().map(|d| (d.port_no, d.name)));
        }
    }
    Ok(text::Names { tables, ports })
}

/// `table=NAME` in a filter becomes `table=ID` when the switch named a table so.
fn named_table_to_id(filter: &str, names: &text::Names) -> String {
    filter
        .split(',')
        .map(|item| match item.trim().strip_prefix("table=") {
            Some(name) => match names.tables.iter().find(|(_, n)| n.as_str() == name) {
                Some((id, _)) => format!("table={id}"),
                None => item.to_owned(),
            },
            None => item.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn format_flow_dump(parts: &[MultipartReplyBody], with_stats: bool, names: &text::Names) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if with_stats {
            out.push_str("OFPST_FLOW reply (OF1.3):");
            if i + 1 < parts.len() {
                out.push_str(" flags=[more]");
            }
            out.push('\n');
        }
        if let MultipartReplyBody::Flow(flows) = part {
            for fs in flows {
                out.push(' ');
                out.push_str(&text::format_flow_stats_named(fs, with_stats, names));
                out.push('\n');
            }
        }
    }
    out
}
