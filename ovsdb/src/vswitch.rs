//! Typed views of the `Open_vSwitch` database tables a controller needs (see
//! `ovs-vswitchd.conf.db(5)`): `Open_vSwitch`, `Bridge`, `Port`, `Interface`,
//! `Controller`, `Flow_Table`, `Manager`, `SSL`.
//!
//! Owns: reading those rows into structs (leniently: a column that was not replicated
//! reads as its default) and writing the settable columns back as a [`Row`], plus
//! `external_ids` helpers. Does not own: which rows a controller wants.

use std::collections::BTreeMap;

use crate::data::{Atom, Datum, Row, Uuid};
use crate::replica::Snapshot;
use crate::transaction::Mutation;

/// The name of the database these tables live in.
pub const DATABASE: &str = "Open_vSwitch";

/// A typed view of one table's rows.
pub trait TableRow: Sized {
    /// The table name.
    const TABLE: &'static str;
    /// Reads a row; missing columns read as defaults.
    fn from_row(uuid: &Uuid, row: &Row) -> Self;
}

/// Every row of `T`'s table in `snapshot`, in UUID order.
pub fn rows<T: TableRow>(snapshot: &Snapshot) -> Vec<T> {
    snapshot
        .table(T::TABLE)
        .iter()
        .map(|(uuid, row)| T::from_row(uuid, row))
        .collect()
}

fn opt_str(row: &Row, c: &str) -> Option<String> {
    row.get(c).and_then(Datum::as_str).map(str::to_owned)
}
fn opt_int(row: &Row, c: &str) -> Option<i64> {
    row.get(c).and_then(Datum::as_integer)
}
fn boolean(row: &Row, c: &str) -> bool {
    row.get(c).and_then(Datum::as_bool).unwrap_or(false)
}
fn uuids(row: &Row, c: &str) -> Vec<Uuid> {
    row.get(c).map(Datum::uuids).unwrap_or_default()
}
fn strings(row: &Row, c: &str) -> Vec<String> {
    row.get(c).map(Datum::strings).unwrap_or_default()
}
fn optional<T: Into<Atom> + Clone>(v: &Option<T>) -> Datum {
    Datum::set(v.iter().cloned())
}

/// `external_ids` (and other string maps) edits as mutations, so concurrent writers of
/// other keys are not overwritten.
pub mod external_ids {
    use super::*;

    /// Mutations setting `key` to `value` in map column `column` (delete then insert:
    /// `insert` alone leaves an existing key unchanged, RFC 7047 §5.1).
    pub fn set(column: &str, key: &str, value: &str) -> Vec<Mutation> {
        vec![
            Mutation::delete(column, Datum::set([key])),
            Mutation::insert(column, Datum::map([(key, value)])),
        ]
    }

    /// A mutation removing `key` from map column `column`.
    pub fn remove(column: &str, key: &str) -> Mutation {
        Mutation::delete(column, Datum::set([key]))
    }
}

/// The root row (`Open_vSwitch` table, one row).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenVswitch {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `bridges`.
    pub bridges: Vec<Uuid>,
    /// `manager_options`.
    pub manager_options: Vec<Uuid>,
    /// `ssl`.
    pub ssl: Option<Uuid>,
    /// `ovs_version`.
    pub ovs_version: Option<String>,
    /// `db_version`.
    pub db_version: Option<String>,
    /// `datapath_types`.
    pub datapath_types: Vec<String>,
    /// `iface_types`.
    pub iface_types: Vec<String>,
    /// `next_cfg`.
    pub next_cfg: i64,
    /// `cur_cfg`.
    pub cur_cfg: i64,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl TableRow for OpenVswitch {
    const TABLE: &'static str = "Open_vSwitch";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        OpenVswitch {
            uuid: Some(*uuid),
            bridges: uuids(row, "bridges"),
            manager_options: uuids(row, "manager_options"),
            ssl: uuids(row, "ssl").into_iter().next(),
            ovs_version: opt_str(row, "ovs_version"),
            db_version: opt_str(row, "db_version"),
            datapath_types: strings(row, "datapath_types"),
            iface_types: strings(row, "iface_types"),
            next_cfg: opt_int(row, "next_cfg").unwrap_or(0),
            cur_cfg: opt_int(row, "cur_cfg").unwrap_or(0),
            external_ids: row.string_map("external_ids"),
            other_config: row.string_map("other_config"),
        }
    }
}

/// A bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bridge {
    /// Row UUID (`None` for a row not yet inserted).
    pub uuid: Option<Uuid>,
    /// `name`.
    pub name: String,
    /// `ports`.
    pub ports: Vec<Uuid>,
    /// `controller`.
    pub controller: Vec<Uuid>,
    /// `fail_mode`: `standalone` or `secure`.
    pub fail_mode: Option<String>,
    /// `protocols`, e.g. `OpenFlow13`.
    pub protocols: Vec<String>,
    /// `datapath_type`: `netdev` for the userspace datapath, empty for the kernel.
    pub datapath_type: String,
    /// `datapath_id` (set by vswitchd).
    pub datapath_id: Option<String>,
    /// `flow_tables`: table number → `Flow_Table` row.
    pub flow_tables: BTreeMap<i64, Uuid>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl TableRow for Bridge {
    const TABLE: &'static str = "Bridge";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        let flow_tables = row
            .get("flow_tables")
            .and_then(Datum::as_map)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_integer()?, *v.as_uuid()?)))
                    .collect()
            })
            .unwrap_or_default();
        Bridge {
            uuid: Some(*uuid),
            name: row.str("name").to_owned(),
            ports: uuids(row, "ports"),
            controller: uuids(row, "controller"),
            fail_mode: opt_str(row, "fail_mode"),
            protocols: strings(row, "protocols"),
            datapath_type: row.str("datapath_type").to_owned(),
            datapath_id: opt_str(row, "datapath_id"),
            flow_tables,
            external_ids: row.string_map("external_ids"),
            other_config: row.string_map("other_config"),
        }
    }
}

impl Bridge {
    /// The settable columns as a row for `insert` or `update` (`ports`, `controller` and
    /// `flow_tables` are left to the caller, who knows the named UUIDs).
    pub fn to_row(&self) -> Row {
        Row::new()
            .with("name", self.name.as_str())
            .with("fail_mode", optional(&self.fail_mode))
            .with("protocols", Datum::set(self.protocols.iter()))
            .with("datapath_type", self.datapath_type.as_str())
            .with("external_ids", self.external_ids.clone())
            .with("other_config", self.other_config.clone())
    }
}

/// A port (a group of interfaces; usually one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Port {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `name`.
    pub name: String,
    /// `interfaces`.
    pub interfaces: Vec<Uuid>,
    /// `tag`: access VLAN.
    pub tag: Option<i64>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl TableRow for Port {
    const TABLE: &'static str = "Port";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        Port {
            uuid: Some(*uuid),
            name: row.str("name").to_owned(),
            interfaces: uuids(row, "interfaces"),
            tag: opt_int(row, "tag"),
            external_ids: row.string_map("external_ids"),
            other_config: row.string_map("other_config"),
        }
    }
}

impl Port {
    /// The settable columns except `interfaces`.
    pub fn to_row(&self) -> Row {
        Row::new()
            .with("name", self.name.as_str())
            .with("tag", optional(&self.tag))
            .with("external_ids", self.external_ids.clone())
            .with("other_config", self.other_config.clone())
    }
}

/// An interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `name`.
    pub name: String,
    /// `type`: empty for a system device, `internal`, `geneve`, `patch`, ...
    pub kind: String,
    /// `options` (tunnel `remote_ip`, `key`, patch `peer`, ...).
    pub options: BTreeMap<String, String>,
    /// `ofport`: assigned by vswitchd; -1 when the interface could not be added.
    pub ofport: Option<i64>,
    /// `ofport_request`.
    pub ofport_request: Option<i64>,
    /// `mac_in_use`.
    pub mac_in_use: Option<String>,
    /// `error`: why vswitchd could not add the interface.
    pub error: Option<String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl TableRow for Interface {
    const TABLE: &'static str = "Interface";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        Interface {
            uuid: Some(*uuid),
            name: row.str("name").to_owned(),
            kind: row.str("type").to_owned(),
            options: row.string_map("options"),
            ofport: opt_int(row, "ofport"),
            ofport_request: opt_int(row, "ofport_request"),
            mac_in_use: opt_str(row, "mac_in_use"),
            error: opt_str(row, "error"),
            external_ids: row.string_map("external_ids"),
            other_config: row.string_map("other_config"),
        }
    }
}

impl Interface {
    /// The settable columns.
    pub fn to_row(&self) -> Row {
        Row::new()
            .with("name", self.name.as_str())
            .with("type", self.kind.as_str())
            .with("options", self.options.clone())
            .with("ofport_request", optional(&self.ofport_request))
            .with("external_ids", self.external_ids.clone())
            .with("other_config", self.other_config.clone())
    }
}

/// An OpenFlow controller of a bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Controller {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `target`, e.g. `tcp:10.0.0.1:6653`.
    pub target: String,
    /// `is_connected`.
    pub is_connected: bool,
    /// `connection_mode`: `in-band` or `out-of-band`.
    pub connection_mode: Option<String>,
    /// `role` (set by vswitchd).
    pub role: Option<String>,
    /// `inactivity_probe` in ms.
    pub inactivity_probe: Option<i64>,
    /// `max_backoff` in ms.
    pub max_backoff: Option<i64>,
    /// `status`.
    pub status: BTreeMap<String, String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// `other_config`.
    pub other_config: BTreeMap<String, String>,
}

impl TableRow for Controller {
    const TABLE: &'static str = "Controller";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        Controller {
            uuid: Some(*uuid),
            target: row.str("target").to_owned(),
            is_connected: boolean(row, "is_connected"),
            connection_mode: opt_str(row, "connection_mode"),
            role: opt_str(row, "role"),
            inactivity_probe: opt_int(row, "inactivity_probe"),
            max_backoff: opt_int(row, "max_backoff"),
            status: row.string_map("status"),
            external_ids: row.string_map("external_ids"),
            other_config: row.string_map("other_config"),
        }
    }
}

impl Controller {
    /// The settable columns.
    pub fn to_row(&self) -> Row {
        Row::new()
            .with("target", self.target.as_str())
            .with("connection_mode", optional(&self.connection_mode))
            .with("inactivity_probe", optional(&self.inactivity_probe))
            .with("max_backoff", optional(&self.max_backoff))
            .with("external_ids", self.external_ids.clone())
            .with("other_config", self.other_config.clone())
    }
}

/// Per-OpenFlow-table settings; its `name` is what `ovs-ofctl --names` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTable {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `name`.
    pub name: Option<String>,
    /// `flow_limit`.
    pub flow_limit: Option<i64>,
    /// `overflow_policy`.
    pub overflow_policy: Option<String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

impl TableRow for FlowTable {
    const TABLE: &'static str = "Flow_Table";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        FlowTable {
            uuid: Some(*uuid),
            name: opt_str(row, "name"),
            flow_limit: opt_int(row, "flow_limit"),
            overflow_policy: opt_str(row, "overflow_policy"),
            external_ids: row.string_map("external_ids"),
        }
    }
}

impl FlowTable {
    /// The settable columns.
    pub fn to_row(&self) -> Row {
        Row::new()
            .with("name", optional(&self.name))
            .with("flow_limit", optional(&self.flow_limit))
            .with("overflow_policy", optional(&self.overflow_policy))
            .with("external_ids", self.external_ids.clone())
    }
}

/// An OVSDB manager connection of vswitchd's database server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manager {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `target`.
    pub target: String,
    /// `is_connected`.
    pub is_connected: bool,
    /// `inactivity_probe` in ms.
    pub inactivity_probe: Option<i64>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

impl TableRow for Manager {
    const TABLE: &'static str = "Manager";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        Manager {
            uuid: Some(*uuid),
            target: row.str("target").to_owned(),
            is_connected: boolean(row, "is_connected"),
            inactivity_probe: opt_int(row, "inactivity_probe"),
            external_ids: row.string_map("external_ids"),
        }
    }
}

/// The SSL configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ssl {
    /// Row UUID.
    pub uuid: Option<Uuid>,
    /// `private_key` path.
    pub private_key: String,
    /// `certificate` path.
    pub certificate: String,
    /// `ca_cert` path.
    pub ca_cert: String,
    /// `bootstrap_ca_cert`.
    pub bootstrap_ca_cert: bool,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

impl TableRow for Ssl {
    const TABLE: &'static str = "SSL";
    fn from_row(uuid: &Uuid, row: &Row) -> Self {
        Ssl {
            uuid: Some(*uuid),
            private_key: row.str("private_key").to_owned(),
            certificate: row.str("certificate").to_owned(),
            ca_cert: row.str("ca_cert").to_owned(),
            bootstrap_ca_cert: boolean(row, "bootstrap_ca_cert"),
            external_ids: row.string_map("external_ids"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_interface_and_writes_it_back() {
        let uuid = Uuid::zero();
        let row = Row::new()
            .with("name", "p1")
            .with("type", "geneve")
            .with("options", Datum::map([("remote_ip", "flow")]))
            .with("ofport", 5)
            .with("ofport_request", Datum::empty_set());
        let iface = Interface::from_row(&uuid, &row);
        assert_eq!((iface.name.as_str(), iface.kind.as_str()), ("p1", "geneve"));
        assert_eq!((iface.ofport, iface.ofport_request), (Some(5), None));
        let back = iface.to_row();
        assert_eq!(back.get("options"), row.get("options"));
        assert_eq!(back.get("ofport_request"), Some(&Datum::empty_set()));
    }
}
