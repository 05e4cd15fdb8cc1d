//! Database schemas (RFC 7047 §3.2): tables, columns, column types and constraints.
//!
//! Owns: parsing a schema document as `get_schema` returns it and answering "what type is
//! this column". Does not own: validating data against constraints (the server does).

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::data::Atom;
use crate::error::Error;

/// The five atomic types (§3.2 `<atomic-type>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicType {
    /// `"integer"`.
    Integer,
    /// `"real"`.
    Real,
    /// `"boolean"`.
    Boolean,
    /// `"string"`.
    String,
    /// `"uuid"`.
    Uuid,
}

impl AtomicType {
    /// The schema's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }

    fn parse(name: &str) -> Option<AtomicType> {
        Some(match name {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }
}

/// Whether a reference keeps its target alive (§3.2 `refType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefType {
    /// Deleting the target is an error while referenced (the default).
    Strong,
    /// Deleting the target removes the reference.
    Weak,
}

/// A key or value type with its constraints (§3.2 `<base-type>`).
#[derive(Clone, Debug, PartialEq)]
pub struct BaseType {
    /// The atomic type.
    pub atomic: AtomicType,
    /// The allowed values, when the type is an enumeration.
    pub enumeration: Option<Vec<Atom>>,
    /// `minInteger`.
    pub min_integer: Option<i64>,
    /// `maxInteger`.
    pub max_integer: Option<i64>,
    /// `minReal`.
    pub min_real: Option<f64>,
    /// `maxReal`.
    pub max_real: Option<f64>,
    /// `minLength` of a string.
    pub min_length: Option<u64>,
    /// `maxLength` of a string.
    pub max_length: Option<u64>,
    /// `refTable` of a uuid.
    pub ref_table: Option<String>,
    /// `refType` of a uuid with a `refTable`.
    pub ref_type: Option<RefType>,
}

impl BaseType {
    fn plain(atomic: AtomicType) -> BaseType {
        BaseType {
            atomic,
            enumeration: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: None,
        }
    }

    fn parse(json: &Json, path: &str) -> Result<BaseType, Error> {
        let bad = |reason: String| Error::Schema {
            reason: format!("{path}: {reason}"),
        };
        match json {
            Json::String(name) => AtomicType::parse(name)
                .map(BaseType::plain)
                .ok_or_else(|| bad(format!("unknown atomic type {name:?}"))),
            Json::Object(obj) => {
                let name = obj
                    .get("type")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad("base type without \"type\"".into()))?;
                let mut base = BaseType::plain(
                    AtomicType::parse(name)
                        .ok_or_else(|| bad(format!("unknown atomic type {name:?}")))?,
                );
                if let Some(e) = obj.get("enum") {
                    let datum = crate::data::Datum::from_json(e)
                        .map_err(|err| bad(format!("bad enum: {err}")))?;
                    base.enumeration = datum.as_set().map(|s| s.iter().cloned().collect());
                }
                base.min_integer = obj.get("minInteger").and_then(Json::as_i64);
                base.max_integer = obj.get("maxInteger").and_then(Json::as_i64);
                base.min_real = obj.get("minReal").and_then(Json::as_f64);
                base.max_real = obj.get("maxReal").and_then(Json::as_f64);
                base.min_length = obj.get("minLength").and_then(Json::as_u64);
                base.max_length = obj.get("maxLength").and_then(Json::as_u64);
                base.ref_table = obj
                    .get("refTable")
                    .and_then(Json::as_str)
                    .map(str::to_owned);
                if base.ref_table.is_some() {
                    base.ref_type = Some(match obj.get("refType").and_then(Json::as_str) {
                        Some("weak") => RefType::Weak,
                        None | Some("strong") => RefType::Strong,
                        Some(other) => return Err(bad(format!("unknown refType {other:?}"))),
                    });
                }
                Ok(base)
            }
            _ => Err(bad("a base type must be a string or an object".into())),
        }
    }
}

/// A column type (§3.2 `<type>`): key, optional value (a map), and cardinality.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnType {
    /// The key (or element) type.
    pub key: BaseType,
    /// The value type of a map.
    pub value: Option<BaseType>,
    /// Minimum number of elements (0 or 1).
    pub min: u64,
    /// Maximum number of elements; `None` for `"unlimited"`.
    pub max: Option<u64>,
}

impl ColumnType {
    /// A type that holds more than one element: sets and maps whose `max` is above 1.
    /// update2 diffs toggle elements of composite columns and replace the others.
    pub fn is_composite(&self) -> bool {
        self.max != Some(1)
    }

    /// Whether values are maps.
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    fn parse(json: &Json, path: &str) -> Result<ColumnType, Error> {
        let bad = |reason: String| Error::Schema {
            reason: format!("{path}: {reason}"),
        };
        match json {
            Json::String(_) => Ok(ColumnType {
                key: BaseType::parse(json, path)?,
                value: None,
                min: 1,
                max: Some(1),
            }),
            Json::Object(obj) => {
                let key = BaseType::parse(
                    obj.get("key")
                        .ok_or_else(|| bad("type without \"key\"".into()))?,
                    path,
                )?;
                let value = obj
                    .get("value")
                    .map(|v| BaseType::parse(v, path))
                    .transpose()?;
                let min = match obj.get("min") {
                    None => 1,
                    Some(m) => m.as_u64().ok_or_else(|| bad(format!("bad min {m}")))?,
                };
                let max = match obj.get("max") {
                    None => Some(1),
                    Some(Json::String(s)) if s == "unlimited" => None,
                    Some(m) => Some(m.as_u64().ok_or_else(|| bad(format!("bad max {m}")))?),
                };
                Ok(ColumnType {
                    key,
                    value,
                    min,
                    max,
                })
            }
            _ => Err(bad("a column type must be a string or an object".into())),
        }
    }
}

/// A column (§3.2 `<column-schema>`).
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSchema {
    /// The column's type.
    pub column_type: ColumnType,
    /// Not persisted across restarts of the server.
    pub ephemeral: bool,
    /// May be changed after insertion.
    pub mutable: bool,
}

/// A table (§3.2 `<table-schema>`).
#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    /// The columns, without the implicit `_uuid` and `_version`.
    pub columns: BTreeMap<String, ColumnSchema>,
    /// Maximum number of rows.
    pub max_rows: Option<u64>,
    /// Root tables keep their rows; other tables garbage-collect unreferenced rows.
    pub is_root: bool,
    /// Sets of columns whose values must be unique.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// A column's type; `_uuid` and `_version` are uuids.
    pub fn column_type(&self, column: &str) -> Option<ColumnType> {
        match column {
            "_uuid" | "_version" => Some(ColumnType {
                key: BaseType::plain(AtomicType::Uuid),
                value: None,
                min: 1,
                max: Some(1),
            }),
            _ => self.columns.get(column).map(|c| c.column_type.clone()),
        }
    }
}

/// A database schema (§3.2 `<database-schema>`).
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseSchema {
    /// The database name.
    pub name: String,
    /// The schema version, `x.y.z`.
    pub version: String,
    /// The schema's checksum, when present.
    pub cksum: Option<String>,
    /// The tables.
    pub tables: BTreeMap<String, TableSchema>,
}

impl DatabaseSchema {
    /// Parses a schema document.
    pub fn from_json(json: &Json) -> Result<DatabaseSchema, Error> {
        let bad = |reason: &str| Error::Schema {
            reason: reason.to_owned(),
        };
        let obj = json
            .as_object()
            .ok_or_else(|| bad("the schema is not a JSON object"))?;
        let name = obj
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("no \"name\""))?
            .to_owned();
        let version = obj
            .get("version")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned();
        let cksum = obj.get("cksum").and_then(Json::as_str).map(str::to_owned);
        let tables_json = obj
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| bad("no \"tables\" object"))?;
        let mut tables = BTreeMap::new();
        for (tname, t) in tables_json {
            let columns_json =
                t.get("columns")
                    .and_then(Json::as_object)
                    .ok_or_else(|| Error::Schema {
                        reason: format!("table {tname}: no \"columns\" object"),
                    })?;
            let mut columns = BTreeMap::new();
            for (cname, c) in columns_json {
                let path = format!("{tname}.{cname}");
                let ty = c.get("type").ok_or_else(|| Error::Schema {
                    reason: format!("{path}: no \"type\""),
                })?;
                columns.insert(
                    cname.clone(),
                    ColumnSchema {
                        column_type: ColumnType::parse(ty, &path)?,
                        ephemeral: c.get("ephemeral").and_then(Json::as_bool).unwrap_or(false),
                        mutable: c.get("mutable").and_then(Json::as_bool).unwrap_or(true),
                    },
                );
            }
            let indexes = t
                .get("indexes")
                .and_then(Json::as_array)
                .map(|ix| {
                    ix.iter()
                        .filter_map(Json::as_array)
                        .map(|cols| {
                            cols.iter()
                                .filter_map(Json::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            tables.insert(
                tname.clone(),
                TableSchema {
                    columns,
                    max_rows: t.get("maxRows").and_then(Json::as_u64),
                    is_root: t.get("isRoot").and_then(Json::as_bool).unwrap_or(false),
                    indexes,
                },
            );
        }
        Ok(DatabaseSchema {
            name,
            version,
            cksum,
            tables,
        })
    }

    /// A table, or `Error::UnknownName`.
    pub fn table(&self, name: &str) -> Result<&TableSchema, Error> {
        self.tables.get(name).ok_or_else(|| Error::UnknownName {
            db: self.name.clone(),
            what: "table",
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_and_constraints() {
        let json = serde_json::json!({
            "name": "db", "version": "1.0.0",
            "tables": {"T": {"isRoot": true, "indexes": [["name"]], "columns": {
                "name": {"type": "string"},
                "ports": {"type": {"key": {"type": "uuid", "refTable": "P", "refType": "weak"},
                                   "min": 0, "max": "unlimited"}},
                "options": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "mode": {"type": {"key": {"type": "string", "enum": ["set", ["a", "b"]]}, "min": 0}},
                "n": {"type": {"key": {"type": "integer", "minInteger": 1, "maxInteger": 9}}}
            }}}
        });
        let schema = DatabaseSchema::from_json(&json).expect("schema");
        let t = schema.table("T").expect("T");
        assert!(t.is_root);
        let ports = &t.columns["ports"].column_type;
        assert_eq!(ports.key.ref_type, Some(RefType::Weak));
        assert_eq!(ports.max, None);
        assert!(t.columns["options"].column_type.is_map());
        assert_eq!(
            t.columns["mode"]
                .column_type
                .key
                .enumeration
                .as_ref()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(t.columns["n"].column_type.key.max_integer, Some(9));
        assert!(!t.columns["mode"].column_type.is_composite());
        assert!(schema.table("nope").is_err());
    }
}
