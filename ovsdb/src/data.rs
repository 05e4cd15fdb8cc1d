//! OVSDB data in RFC 7047 §5.1 JSON notation: atoms, sets, maps and rows.
//!
//! Owns: the typed values and their conversion to and from JSON, with and without a
//! column type from the schema. A set of one element and a bare atom are the same value
//! (§5.1), so a [`Datum`] is always a set or a map; the JSON form follows what
//! ovsdb-server itself emits (a one-element set as its bare atom).
//! Does not own: schema parsing (see `schema`) or the update2 diff rules (see `replica`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::error::{Error, json_excerpt};
use crate::schema::{AtomicType, BaseType, ColumnType};

/// A row UUID, kept in its canonical lowercase 8-4-4-4-12 text form inline (no heap
/// allocation: replicas clone sets of thousands of them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid([u8; 36]);

impl Uuid {
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, any case).
    pub fn parse(text: &str) -> Result<Uuid, Error> {
        let bytes = text.as_bytes();
        let ok = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if !ok {
            return Err(Error::Data {
                what: "uuid",
                reason: "expected 8-4-4-4-12 hex digits".into(),
                json: crate::error::excerpt(text),
            });
        }
        let mut out = [0u8; 36];
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = b.to_ascii_lowercase();
        }
        Ok(Uuid(out))
    }

    /// The all-zero UUID, the default value of a uuid column (and "no transaction" for
    /// `monitor_cond_since`).
    pub fn zero() -> Uuid {
        let mut out = [b'0'; 36];
        for i in [8, 13, 18, 23] {
            out[i] = b'-';
        }
        Uuid(out)
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({})", self.as_str())
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named UUID: a name for a row inserted earlier in the same transaction (§5.1,
/// `["named-uuid", NAME]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedUuid(pub String);

/// One atomic value (§5.1 `<atom>`).
#[derive(Clone, Debug)]
pub enum Atom {
    /// A 64-bit integer.
    Integer(i64),
    /// A real (never NaN or infinite: JSON cannot carry them).
    Real(f64),
    /// A boolean.
    Boolean(bool),
    /// A UTF-8 string.
    String(String),
    /// A reference to a row.
    Uuid(Uuid),
    /// A reference to a row inserted in the same transaction.
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The JSON notation.
    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => serde_json::Number::from_f64(*r).map_or(Json::Null, Json::Number),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.as_str()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// Parses an atom without knowing its type: integers stay integers, other numbers are
    /// reals.
    pub fn from_json(json: &Json) -> Result<Atom, Error> {
        let bad = |reason: &str| Error::Data {
            what: "atom",
            reason: reason.into(),
            json: json_excerpt(json),
        };
        match json {
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::String(s) => Ok(Atom::String(s.clone())),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Atom::Integer(i))
                } else {
                    n.as_f64()
                        .map(Atom::Real)
                        .ok_or_else(|| bad("number out of range"))
                }
            }
            Json::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                (Json::String(tag), Json::String(v)) if tag == "uuid" => {
                    Ok(Atom::Uuid(Uuid::parse(v)?))
                }
                (Json::String(tag), Json::String(v)) if tag == "named-uuid" => {
                    Ok(Atom::NamedUuid(v.clone()))
                }
                _ => Err(bad("expected [\"uuid\", UUID] or [\"named-uuid\", NAME]")),
            },
            _ => Err(bad("not an atom")),
        }
    }

    /// Parses an atom of a known base type, checking the type (not the constraints:
    /// the server enforces those).
    pub fn from_json_typed(json: &Json, base: &BaseType) -> Result<Atom, Error> {
        let atom = Atom::from_json(json)?;
        let ok = match (&atom, base.atomic) {
            (Atom::Integer(_), AtomicType::Integer)
            | (Atom::Real(_), AtomicType::Real)
            | (Atom::Boolean(_), AtomicType::Boolean)
            | (Atom::String(_), AtomicType::String)
            | (Atom::Uuid(_) | Atom::NamedUuid(_), AtomicType::Uuid) => true,
            (Atom::Integer(i), AtomicType::Real) => return Ok(Atom::Real(*i as f64)),
            _ => false,
        };
        if ok {
            Ok(atom)
        } else {
            Err(Error::Data {
                what: "atom",
                reason: format!("expected {}", base.atomic.name()),
                json: json_excerpt(json),
            })
        }
    }

    /// The default value of an atomic type (what OVSDB gives a column with `min` 1 that
    /// was never set).
    pub fn default_of(atomic: AtomicType) -> Atom {
        match atomic {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(Uuid::zero()),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The UUID, if this is a uuid atom.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Atom) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Atom) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Atom) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.to_owned())
    }
}
impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s)
    }
}
impl From<&String> for Atom {
    fn from(s: &String) -> Atom {
        Atom::String(s.clone())
    }
}
impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
}
impl From<f64> for Atom {
    fn from(r: f64) -> Atom {
        Atom::Real(r)
    }
}
impl From<bool> for Atom {
    fn from(b: bool) -> Atom {
        Atom::Boolean(b)
    }
}
impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Atom {
        Atom::Uuid(u)
    }
}
impl From<&Uuid> for Atom {
    fn from(u: &Uuid) -> Atom {
        Atom::Uuid(*u)
    }
}
impl From<NamedUuid> for Atom {
    fn from(n: NamedUuid) -> Atom {
        Atom::NamedUuid(n.0)
    }
}
impl From<&NamedUuid> for Atom {
    fn from(n: &NamedUuid) -> Atom {
        Atom::NamedUuid(n.0.clone())
    }
}

/// A column value: a set of atoms or a map between atoms (§5.1 `<value>`). A scalar is a
/// set of one.
///
/// The elements are shared (`Arc`) and copied on write: a replica hands out the row
/// before and after each change, and a `Bridge.ports` of thousands of references should
/// not be copied for every port added.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Datum {
    /// A set (possibly of one element: a scalar, or empty: an unset optional).
    Set(Arc<BTreeSet<Atom>>),
    /// A map.
    Map(Arc<BTreeMap<Atom, Atom>>),
}

impl Datum {
    /// The empty set.
    pub fn empty_set() -> Datum {
        Datum::Set(Arc::new(BTreeSet::new()))
    }

    /// The empty map.
    pub fn empty_map() -> Datum {
        Datum::Map(Arc::new(BTreeMap::new()))
    }

    /// A set of the given atoms.
    pub fn set<A: Into<Atom>>(items: impl IntoIterator<Item = A>) -> Datum {
        Datum::Set(Arc::new(items.into_iter().map(Into::into).collect()))
    }

    /// A map of the given pairs.
    pub fn map<K: Into<Atom>, V: Into<Atom>>(items: impl IntoIterator<Item = (K, V)>) -> Datum {
        Datum::Map(Arc::new(
            items
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    /// The JSON notation ovsdb-server uses: a one-element set as its bare atom, other
    /// sets as `["set", [...]]`, maps as `["map", [[k, v], ...]]`.
    pub fn to_json(&self) -> Json {
        match self {
            Datum::Set(s) if s.len() == 1 => s.iter().next().map_or(Json::Null, Atom::to_json),
            Datum::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Datum::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Parses a value without its column type.
    pub fn from_json(json: &Json) -> Result<Datum, Error> {
        Datum::parse(json, None)
    }

    /// Parses a value of a known column type, checking atom types and set/map shape.
    pub fn from_json_typed(json: &Json, ty: &ColumnType) -> Result<Datum, Error> {
        Datum::parse(json, Some(ty))
    }

    fn parse(json: &Json, ty: Option<&ColumnType>) -> Result<Datum, Error> {
        let bad = |reason: &str| Error::Data {
            what: "value",
            reason: reason.into(),
            json: json_excerpt(json),
        };
        let key = |j: &Json| match ty {
            Some(t) => Atom::from_json_typed(j, &t.key),
            None => Atom::from_json(j),
        };
        let value = |j: &Json| match ty.and_then(|t| t.value.as_ref()) {
            Some(v) => Atom::from_json_typed(j, v),
            None => Atom::from_json(j),
        };
        let tagged = match json {
            Json::Array(a) if a.len() == 2 => match &a[0] {
                Json::String(tag) if tag == "set" || tag == "map" => Some((tag.as_str(), &a[1])),
                _ => None,
            },
            _ => None,
        };
        if let Some(("set", items)) = tagged {
            let Json::Array(items) = items else {
                return Err(bad("expected [\"set\", [...]]"));
            };
            if ty.is_some_and(|t| t.value.is_some()) && !items.is_empty() {
                return Err(bad("a set where the column holds a map"));
            }
            if ty.is_some_and(|t| t.value.is_some()) {
                return Ok(Datum::empty_map());
            }
            return items
                .iter()
                .map(key)
                .collect::<Result<_, _>>()
                .map(|set| Datum::Set(Arc::new(set)));
        }
        if let Some((_, items)) = tagged {
            let Json::Array(items) = items else {
                return Err(bad("expected [\"map\", [[k, v], ...]]"));
            };
            if ty.is_some_and(|t| t.value.is_none()) {
                return Err(bad("a map where the column holds a set"));
            }
            let mut map = BTreeMap::new();
            for pair in items {
                match pair {
                    Json::Array(kv) if kv.len() == 2 => {
                        map.insert(key(&kv[0])?, value(&kv[1])?);
                    }
                    _ => return Err(bad("a map element must be [key, value]")),
                }
            }
            return Ok(Datum::Map(Arc::new(map)));
        }
        if ty.is_some_and(|t| t.value.is_some()) {
            return Err(bad("a bare atom where the column holds a map"));
        }
        Ok(Datum::Set(Arc::new(BTreeSet::from([key(json)?]))))
    }

    /// The default value of a column type (§3.2: the empty set/map when `min` is 0, else
    /// the atom type's default).
    pub fn default_of(ty: &ColumnType) -> Datum {
        if ty.value.is_some() {
            Datum::empty_map()
        } else if ty.min == 0 {
            Datum::empty_set()
        } else {
            Datum::Set(Arc::new(BTreeSet::from([Atom::default_of(ty.key.atomic)])))
        }
    }

    /// The single atom of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Datum::Set(s) if s.len() == 1 => s.iter().next(),
            _ => None,
        }
    }

    /// The string of a one-element string set.
    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    /// The integer of a one-element integer set.
    pub fn as_integer(&self) -> Option<i64> {
        self.as_atom().and_then(Atom::as_integer)
    }

    /// The boolean of a one-element boolean set.
    pub fn as_bool(&self) -> Option<bool> {
        match self.as_atom() {
            Some(Atom::Boolean(b)) => Some(*b),
            _ => None,
        }
    }

    /// The UUID of a one-element uuid set.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        self.as_atom().and_then(Atom::as_uuid)
    }

    /// The elements, if this is a set.
    pub fn as_set(&self) -> Option<&BTreeSet<Atom>> {
        match self {
            Datum::Set(s) => Some(s),
            Datum::Map(_) => None,
        }
    }

    /// The pairs, if this is a map.
    pub fn as_map(&self) -> Option<&BTreeMap<Atom, Atom>> {
        match self {
            Datum::Map(m) => Some(m),
            Datum::Set(_) => None,
        }
    }

    /// The UUIDs in a set of references (other atoms are skipped).
    pub fn uuids(&self) -> Vec<Uuid> {
        self.as_set()
            .map(|s| s.iter().filter_map(Atom::as_uuid).cloned().collect())
            .unwrap_or_default()
    }

    /// The strings of a set (other atoms are skipped).
    pub fn strings(&self) -> Vec<String> {
        self.as_set()
            .map(|s| {
                s.iter()
                    .filter_map(Atom::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A string→string map (pairs of other types are skipped): the shape of
    /// `external_ids`, `other_config`, `options`.
    pub fn string_map(&self) -> BTreeMap<String, String> {
        self.as_map()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies an update2 `modify` diff (RFC 7047 as extended by ovsdb-server(7),
    /// "update2 notification"): a column with `max` 1 takes the diff as its new value; a
    /// set toggles each element of the diff; a map removes a key whose pair equals the
    /// diff's, updates a key with a different value, and adds a missing key.
    pub fn apply_diff(&mut self, diff: &Datum, ty: &ColumnType) {
        if !ty.is_composite() {
            *self = diff.clone();
            return;
        }
        match (self, diff) {
            (Datum::Set(have), Datum::Set(d)) => {
                let have = Arc::make_mut(have);
                for atom in d.iter() {
                    if !have.remove(atom) {
                        have.insert(atom.clone());
                    }
                }
            }
            (Datum::Map(have), Datum::Map(d)) => {
                let have = Arc::make_mut(have);
                for (k, v) in d.iter() {
                    if have.get(k) == Some(v) {
                        have.remove(k);
                    } else {
                        have.insert(k.clone(), v.clone());
                    }
                }
            }
            (have, _) => *have = diff.clone(),
        }
    }
}

impl<T: Into<Atom>> From<T> for Datum {
    fn from(atom: T) -> Datum {
        Datum::Set(Arc::new(BTreeSet::from([atom.into()])))
    }
}

impl From<BTreeMap<String, String>> for Datum {
    fn from(map: BTreeMap<String, String>) -> Datum {
        Datum::map(map)
    }
}

/// One row: column name → value. Rows read from a replica hold every monitored column.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    columns: BTreeMap<String, Datum>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// Builder form of [`set`](Row::set).
    pub fn with(mut self, column: &str, value: impl Into<Datum>) -> Row {
        self.set(column, value);
        self
    }

    /// Sets a column.
    pub fn set(&mut self, column: &str, value: impl Into<Datum>) {
        self.columns.insert(column.to_owned(), value.into());
    }

    /// A column's value.
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.columns.get(column)
    }

    /// A mutable column value.
    pub fn get_mut(&mut self, column: &str) -> Option<&mut Datum> {
        self.columns.get_mut(column)
    }

    /// Removes a column, returning its value.
    pub fn remove(&mut self, column: &str) -> Option<Datum> {
        self.columns.remove(column)
    }

    /// The columns in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Datum)> {
        self.columns.iter()
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether no column is set.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// A string column, or `""` when absent or not a single string.
    pub fn str(&self, column: &str) -> &str {
        self.get(column).and_then(Datum::as_str).unwrap_or("")
    }

    /// A string→string map column (`external_ids` and the like), empty when absent.
    pub fn string_map(&self, column: &str) -> BTreeMap<String, String> {
        self.get(column).map(Datum::string_map).unwrap_or_default()
    }

    /// The JSON object `{"column": value, ...}`.
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.columns
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// Parses a JSON object of columns without a schema.
    pub fn from_json(json: &Json) -> Result<Row, Error> {
        let Json::Object(obj) = json else {
            return Err(Error::Data {
                what: "row",
                reason: "expected a JSON object".into(),
                json: json_excerpt(json),
            });
        };
        let mut row = Row::new();
        for (k, v) in obj {
            row.columns.insert(k.clone(), Datum::from_json(v)?);
        }
        Ok(row)
    }
}

impl FromIterator<(String, Datum)> for Row {
    fn from_iter<I: IntoIterator<Item = (String, Datum)>>(iter: I) -> Row {
        Row {
            columns: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_element_set_is_written_as_its_atom() {
        assert_eq!(Datum::from("br0").to_json(), json!("br0"));
        assert_eq!(Datum::empty_set().to_json(), json!(["set", []]));
        let u = Uuid::parse("360315E1-bb57-46c6-94e5-8c8c11d90f07").expect("uuid");
        assert_eq!(
            Datum::set([u, Uuid::zero()]).to_json(),
            json!([
                "set",
                [
                    ["uuid", "00000000-0000-0000-0000-000000000000"],
                    ["uuid", u.as_str()]
                ]
            ])
        );
        assert_eq!(
            Datum::map([("a", "b")]).to_json(),
            json!(["map", [["a", "b"]]])
        );
    }

    #[test]
    fn parse_round_trips() {
        for text in [
            r#""x""#,
            r#"["set",[]]"#,
            r#"["map",[["a",1],["b",2]]]"#,
            r#"["set",[1,2,3]]"#,
            r#"["named-uuid","row1"]"#,
        ] {
            let json: Json = serde_json::from_str(text).expect("json");
            assert_eq!(
                Datum::from_json(&json).expect("datum").to_json(),
                json,
                "{text}"
            );
        }
        assert!(Datum::from_json(&json!(["set", [["bogus", 1]]])).is_err());
        assert!(Datum::from_json(&json!({"a": 1})).is_err());
    }
}
