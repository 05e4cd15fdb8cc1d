//! `yardctl ovsdb`: OVSDB client commands in the spirit of `ovsdb-client` and
//! `ovs-vsctl show`, built on the `ovsdb` crate.
//!
//! Owns: argument parsing and output formatting. `transact` and `get-schema` print JSON
//! exactly as `ovsdb-client` does (sorted members, compact), so outputs compare
//! byte-for-byte; `monitor` prints one JSON object per row change.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Subcommand;
use ovsdb::vswitch::{self, TableRow};
use ovsdb::{Client, Replica, ReplicaOptions, RowChange, Snapshot, Uuid, ovs_json};
use serde_json::Value as Json;

/// Arguments of `yardctl ovsdb`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the databases of the server at TARGET (unix:PATH or tcp:IP:PORT).
    ListDbs {
        /// unix:PATH or tcp:IP:PORT.
        target: String,
    },
    /// Print the schema of DB as JSON.
    GetSchema {
        /// unix:PATH or tcp:IP:PORT.
        target: String,
        /// Database name.
        db: String,
    },
    /// Run a transaction: JSON is `["DB", {op}, ...]` as for `ovsdb-client transact`;
    /// prints the server's result array.
    Transact {
        /// unix:PATH or tcp:IP:PORT.
        target: String,
        /// The params array.
        json: String,
    },
    /// Keep a replica of TABLEs and print one JSON object per row change, starting with
    /// the initial contents as insertions. Runs until killed; survives server restarts.
    Monitor {
        /// unix:PATH or tcp:IP:PORT.
        target: String,
        /// Database name.
        db: String,
        /// Tables to follow (all columns).
        #[arg(required = true)]
        tables: Vec<String>,
    },
    /// Show bridges, ports, interfaces and controllers, like `ovs-vsctl show`.
    Show {
        /// unix:PATH or tcp:IP:PORT.
        target: String,
    },
}

/// Runs `yardctl ovsdb ...`.
pub async fn run(args: Args) -> Result<(), String> {
    match args.command {
        Command::ListDbs { target } => {
            let client = connect(&target).await?;
            let dbs = client.list_dbs().await.map_err(|e| e.to_string())?;
            for db in dbs {
                println!("{db}");
            }
            Ok(())
        }
        Command::GetSchema { target, db } => {
            let client = connect(&target).await?;
            let schema = client
                .get_schema_json(&db)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", ovs_json::to_string(&schema));
            Ok(())
        }
        Command::Transact { target, json } => transact(&target, &json).await,
        Command::Monitor { target, db, tables } => monitor(&target, &db, &tables).await,
        Command::Show { target } => show(&target).await,
    }
}

async fn connect(target: &str) -> Result<Client, String> {
    Client::connect(target).await.map_err(|e| e.to_string())
}

async fn transact(target: &str, text: &str) -> Result<(), String> {
    let params: Json = serde_json::from_str(text)
        .map_err(|e| format!("transaction {text:?} is not valid JSON: {e}"))?;
    if !params
        .as_array()
        .is_some_and(|a| a.first().is_some_and(Json::is_string))
    {
        return Err(format!(
            "transaction must be a JSON array starting with the database name, got {text}"
        ));
    }
    let client = connect(target).await?;
    match client.transact_json(params).await {
        Ok(result) => {
            println!("{}", ovs_json::to_string(&result));
            Ok(())
        }
        // Same wording as ovsdb-client for a JSON-RPC level error.
        Err(ovsdb::Error::Rpc { error, .. }) => Err(format!(
            "transaction returned error: {}",
            ovs_json::to_string(&error)
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn row_json(row: &Option<ovsdb::Row>) -> String {
    row.as_ref()
        .map_or_else(|| "null".to_owned(), |r| ovs_json::to_string(&r.to_json()))
}

fn change_line(change: &RowChange) -> String {
    format!(
        "{{\"table\":{},\"uuid\":\"{}\",\"old\":{},\"new\":{}}}",
        Json::String(change.table.clone()),
        change.uuid,
        row_json(&change.old),
        row_json(&change.new)
    )
}

async fn monitor(target: &str, db: &str, tables: &[String]) -> Result<(), String> {
    let replica = Replica::start(target, db, tables.iter().map(String::as_str))
        .await
        .map_err(|e| e.to_string())?;
    let mut changes = replica.changes().ok_or("change stream unavailable")?;
    let mut status = replica.status();
    let mut was_connected = true;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { return Err("replica stopped".into()) };
                let mut out = stdout.lock();
                writeln!(out, "{}", change_line(&change))
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("cannot write to stdout: {e}"))?;
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return Err("replica stopped".into());
                }
                let s = status.borrow_and_update().clone();
                if s.connected != was_connected {
                    was_connected = s.connected;
                    if s.connected {
                        eprintln!("yardctl: reconnected to {target}; resynchronised");
                    } else {
                        eprintln!(
                            "yardctl: lost {target} ({}); reconnecting",
                            s.last_error.unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
}

async fn show(target: &str) -> Result<(), String> {
    let options = ReplicaOptions {
        change_stream: false,
        ..ReplicaOptions::default()
    };
    let replica = Replica::start_with(
        target,
        vswitch::DATABASE,
        [
            "Open_vSwitch",
            "Bridge",
            "Port",
            "Interface",
            "Controller",
            "Manager",
        ],
        options,
    )
    .await
    .map_err(|e| e.to_string())?;
    print!("{}", render_show(&replica.snapshot()));
    Ok(())
}

fn quote_if_needed(s: &str) -> String {
    // ovs-vsctl quotes strings that are not plain identifiers.
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '-')
    {
        s.to_owned()
    } else {
        Json::String(s.to_owned()).to_string()
    }
}

fn map_text(map: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{}={}", quote_if_needed(k), quote_if_needed(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn render_show(snap: &Snapshot) -> String {
    let mut out = String::new();
    let by_uuid = |table: &str, uuid: &Uuid| snap.row(table, uuid).map(|r| (*uuid, r.clone()));
    for root in vswitch::rows::<vswitch::OpenVswitch>(snap) {
        out.push_str(&format!(
            "{}\n",
            root.uuid.as_ref().map(Uuid::to_string).unwrap_or_default()
        ));
        for m in &root.manager_options {
            if let Some((u, r)) = by_uuid("Manager", m) {
                let m = vswitch::Manager::from_row(&u, &r);
                out.push_str(&format!("    Manager {}\n", Json::String(m.target)));
                if m.is_connected {
                    out.push_str("        is_connected: true\n");
                }
            }
        }
        let mut bridges: Vec<vswitch::Bridge> = root
            .bridges
            .iter()
            .filter_map(|b| by_uuid("Bridge", b))
            .map(|(u, r)| vswitch::Bridge::from_row(&u, &r))
            .collect();
        bridges.sort_by(|a, b| a.name.cmp(&b.name));
        for bridge in bridges {
            out.push_str(&format!("    Bridge {}\n", quote_if_needed(&bridge.name)));
            for c in &bridge.controller {
                if let Some((u, r)) = by_uuid("Controller", c) {
                    let c = vswitch::Controller::from_row(&u, &r);
                    out.push_str(&format!("        Controller {}\n", Json::String(c.target)));
                    if c.is_connected {
                        out.push_str("            is_connected: true\n");
                    }
                }
            }
            if let Some(mode) = &bridge.fail_mode {
                out.push_str(&format!("        fail_mode: {mode}\n"));
            }
            if !bridge.datapath_type.is_empty() {
                out.push_str(&format!(
                    "        datapath_type: {}\n",
                    bridge.datapath_type
                ));
            }
            let mut ports: Vec<vswitch::Port> = bridge
                .ports
                .iter()
                .filter_map(|p| by_uuid("Port", p))
                .map(|(u, r)| vswitch::Port::from_row(&u, &r))
                .collect();
            ports.sort_by(|a, b| a.name.cmp(&b.name));
            for port in ports {
                out.push_str(&format!("        Port {}\n", quote_if_needed(&port.name)));
                if let Some(tag) = port.tag {
                    out.push_str(&format!("            tag: {tag}\n"));
                }
                let mut ifaces: Vec<vswitch::Interface> = port
                    .interfaces
                    .iter()
                    .filter_map(|i| by_uuid("Interface", i))
                    .map(|(u, r)| vswitch::Interface::from_row(&u, &r))
                    .collect();
                ifaces.sort_by(|a, b| a.name.cmp(&b.name));
                for iface in ifaces {
                    out.push_str(&format!(
                        "            Interface {}\n",
                        quote_if_needed(&iface.name)
                    ));
                    if !iface.kind.is_empty() {
                        out.push_str(&format!("                type: {}\n", iface.kind));
                    }
                    if !iface.options.is_empty() {
                        out.push_str(&format!(
                            "                options: {}\n",
                            map_text(&iface.options)
                        ));
                    }
                    if let Some(err) = &iface.error {
                        out.push_str(&format!(
                            "                error: {}\n",
                            Json::String(err.clone())
                        ));
                    }
                }
            }
        }
        if let Some(v) = &root.ovs_version {
            out.push_str(&format!("    ovs_version: {}\n", Json::String(v.clone())));
        }
    }
    out
}
