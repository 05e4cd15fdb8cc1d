//! Transactions (RFC 7047 §5.2): the operation builder, conditions, mutations, and the
//! typed results.
//!
//! Owns: building the `transact` params and reading the result array, including finding
//! which operation failed. Does not own: sending it (see `client`).

use serde_json::{Value as Json, json};

use crate::data::{Datum, NamedUuid, Row, Uuid};
use crate::error::{Error, json_excerpt};

/// A comparison function of a `where` clause (§5.1 `<function>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes`: the column's set/map contains all of the value.
    Includes,
    /// `excludes`: the column's set/map contains none of the value.
    Excludes,
}

impl Function {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One clause of a `where` (§5.1 `<condition>`): `[column, function, value]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The column (`_uuid` included).
    pub column: String,
    /// The comparison.
    pub function: Function,
    /// The value compared against.
    pub value: Datum,
}

impl Condition {
    /// A clause with any function.
    pub fn new(column: &str, function: Function, value: impl Into<Datum>) -> Condition {
        Condition {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }
    /// `column == value`.
    pub fn eq(column: &str, value: impl Into<Datum>) -> Condition {
        Condition::new(column, Function::Eq, value)
    }
    /// `column != value`.
    pub fn ne(column: &str, value: impl Into<Datum>) -> Condition {
        Condition::new(column, Function::Ne, value)
    }
    /// `column includes value`.
    pub fn includes(column: &str, value: impl Into<Datum>) -> Condition {
        Condition::new(column, Function::Includes, value)
    }
    /// `column excludes value`.
    pub fn excludes(column: &str, value: impl Into<Datum>) -> Condition {
        Condition::new(column, Function::Excludes, value)
    }
    /// `_uuid == uuid`: the one row with that UUID.
    pub fn uuid(uuid: &Uuid) -> Condition {
        Condition::eq("_uuid", uuid)
    }
    /// The JSON form.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// A mutator (§5.1 `<mutator>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=`
    Mod,
    /// `insert`: add elements to a set or pairs to a map (existing keys unchanged).
    Insert,
    /// `delete`: remove elements of a set, or map keys (a set of keys) or pairs.
    Delete,
}

impl Mutator {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// One mutation (§5.1 `<mutation>`): `[column, mutator, value]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    /// The column.
    pub column: String,
    /// The mutator.
    pub mutator: Mutator,
    /// The operand.
    pub value: Datum,
}

impl Mutation {
    /// A mutation with any mutator.
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Datum>) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator,
            value: value.into(),
        }
    }
    /// `column insert value`.
    pub fn insert(column: &str, value: impl Into<Datum>) -> Mutation {
        Mutation::new(column, Mutator::Insert, value)
    }
    /// `column delete value`.
    pub fn delete(column: &str, value: impl Into<Datum>) -> Mutation {
        Mutation::new(column, Mutator::Delete, value)
    }
    /// `column += value`.
    pub fn add(column: &str, value: impl Into<Datum>) -> Mutation {
        Mutation::new(column, Mutator::Add, value)
    }
    /// The JSON form.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// What a `wait` waits for (§5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitUntil {
    /// The selected rows equal the given rows.
    Equal,
    /// The selected rows differ from the given rows.
    NotEqual,
}

/// One operation (§5.2).
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// §5.2.1.
    Insert {
        /// Table.
        table: String,
        /// Initial column values.
        row: Row,
        /// Name other operations use to reference the new row.
        uuid_name: Option<String>,
    },
    /// §5.2.2.
    Select {
        /// Table.
        table: String,
        /// Conditions (all must hold).
        conditions: Vec<Condition>,
        /// Columns to return; all when `None`.
        columns: Option<Vec<String>>,
    },
    /// §5.2.3.
    Update {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// New column values.
        row: Row,
    },
    /// §5.2.4.
    Mutate {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Mutations.
        mutations: Vec<Mutation>,
    },
    /// §5.2.5.
    Delete {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
    },
    /// §5.2.6: optimistic concurrency.
    Wait {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// Equal or not equal.
        until: WaitUntil,
        /// The expected rows (only `columns` of each).
        rows: Vec<Row>,
        /// Milliseconds to wait; 0 fails at once if the condition does not hold.
        timeout: Option<u64>,
    },
    /// §5.2.7.
    Commit {
        /// Wait for the change to be on disk.
        durable: bool,
    },
    /// §5.2.8.
    Abort,
    /// §5.2.9: text for the server's log.
    Comment(String),
    /// §5.2.10: fail unless this session holds the lock.
    Assert(String),
}

fn where_json(conditions: &[Condition]) -> Json {
    Json::Array(conditions.iter().map(Condition::to_json).collect())
}

impl Operation {
    /// The `op` name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Insert { .. } => "insert",
            Operation::Select { .. } => "select",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Commit { .. } => "commit",
            Operation::Abort => "abort",
            Operation::Comment(_) => "comment",
            Operation::Assert(_) => "assert",
        }
    }

    /// The JSON object.
    pub fn to_json(&self) -> Json {
        let mut op = match self {
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                let mut o = json!({"table": table, "row": row.to_json()});
                if let Some(n) = uuid_name {
                    o["uuid-name"] = json!(n);
                }
                o
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                let mut o = json!({"table": table, "where": where_json(conditions)});
                if let Some(c) = columns {
                    o["columns"] = json!(c);
                }
                o
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => json!({"table": table, "where": where_json(conditions), "row": row.to_json()}),
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => json!({
                "table": table,
                "where": where_json(conditions),
                "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>(),
            }),
            Operation::Delete { table, conditions } => {
                json!({"table": table, "where": where_json(conditions)})
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout,
            } => {
                let mut o = json!({
                    "table": table,
                    "where": where_json(conditions),
                    "columns": columns,
                    "until": match until { WaitUntil::Equal => "==", WaitUntil::NotEqual => "!=" },
                    "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
                });
                if let Some(t) = timeout {
                    o["timeout"] = json!(t);
                }
                o
            }
            Operation::Commit { durable } => json!({"durable": durable}),
            Operation::Abort => json!({}),
            Operation::Comment(c) => json!({"comment": c}),
            Operation::Assert(lock) => json!({"lock": lock}),
        };
        op["op"] = json!(self.name());
        op
    }
}

/// A transaction under construction: operations run in order, atomically.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transaction {
    operations: Vec<Operation>,
    next_name: u32,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// Inserts a row; the returned name references it from later operations of this
    /// transaction (as a value: `Datum::from(&named)`), and the result carries its UUID.
    pub fn insert(&mut self, table: &str, row: Row) -> NamedUuid {
        self.next_name += 1;
        let name = format!("row{}", self.next_name);
        self.operations.push(Operation::Insert {
            table: table.to_owned(),
            row,
            uuid_name: Some(name.clone()),
        });
        NamedUuid(name)
    }

    /// Selects rows (all columns when `columns` is `None`).
    pub fn select(
        &mut self,
        table: &str,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    ) {
        self.operations.push(Operation::Select {
            table: table.to_owned(),
            conditions,
            columns,
        });
    }

    /// Sets columns of the matching rows.
    pub fn update(&mut self, table: &str, conditions: Vec<Condition>, row: Row) {
        self.operations.push(Operation::Update {
            table: table.to_owned(),
            conditions,
            row,
        });
    }

    /// Mutates columns of the matching rows.
    pub fn mutate(&mut self, table: &str, conditions: Vec<Condition>, mutations: Vec<Mutation>) {
        self.operations.push(Operation::Mutate {
            table: table.to_owned(),
            conditions,
            mutations,
        });
    }

    /// Deletes the matching rows.
    pub fn delete(&mut self, table: &str, conditions: Vec<Condition>) {
        self.operations.push(Operation::Delete {
            table: table.to_owned(),
            conditions,
        });
    }

    /// Fails the transaction at once unless the matching rows' `columns` equal `rows`
    /// (optimistic concurrency: "commit only if what I read is still there").
    pub fn wait(
        &mut self,
        table: &str,
        conditions: Vec<Condition>,
        columns: &[&str],
        rows: Vec<Row>,
    ) {
        self.operations.push(Operation::Wait {
            table: table.to_owned(),
            conditions,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            until: WaitUntil::Equal,
            rows,
            timeout: Some(0),
        });
    }

    /// Adds a comment for the server's log.
    pub fn comment(&mut self, text: &str) {
        self.operations.push(Operation::Comment(text.to_owned()));
    }

    /// Fails the transaction unless this session holds `lock`.
    pub fn assert_lock(&mut self, lock: &str) {
        self.operations.push(Operation::Assert(lock.to_owned()));
    }

    /// Adds any operation.
    pub fn push(&mut self, operation: Operation) {
        self.operations.push(operation);
    }

    /// The operations so far.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The `transact` params: `[db, op, ...]`.
    pub fn to_params(&self, db: &str) -> Json {
        let mut params = vec![json!(db)];
        params.extend(self.operations.iter().map(Operation::to_json));
        Json::Array(params)
    }
}

/// The result of one successful operation.
#[derive(Clone, Debug, PartialEq)]
pub enum OperationResult {
    /// `insert`: the new row's UUID.
    Insert(Uuid),
    /// `select`: the rows.
    Select(Vec<Row>),
    /// `update`, `mutate`, `delete`: the number of rows matched.
    Count(u64),
    /// Operations whose result carries nothing (`wait`, `commit`, `comment`, `assert`,
    /// `abort`).
    Empty,
}

impl OperationResult {
    /// The UUID of an insert.
    pub fn uuid(&self) -> Option<&Uuid> {
        match self {
            OperationResult::Insert(u) => Some(u),
            _ => None,
        }
    }

    /// The rows of a select.
    pub fn rows(&self) -> &[Row] {
        match self {
            OperationResult::Select(r) => r,
            _ => &[],
        }
    }

    /// The count of an update, mutate or delete.
    pub fn count(&self) -> Option<u64> {
        match self {
            OperationResult::Count(c) => Some(*c),
            _ => None,
        }
    }
}

/// Reads a `transact` result array: the typed results, or the first failed operation
/// (§4.1.3: an element with `error`; an extra element past the operations when the
/// commit itself failed).
pub fn parse_results(
    db: &str,
    operations: &[Operation],
    result: &Json,
) -> Result<Vec<OperationResult>, Error> {
    let bad = |reason: &str| Error::Protocol {
        reason: format!("transact result: {reason}"),
        message: json_excerpt(result),
    };
    let items = result.as_array().ok_or_else(|| bad("not an array"))?;
    for (index, item) in items.iter().enumerate() {
        if let Some(error) = item.get("error") {
            return Err(Error::Operation {
                db: db.to_owned(),
                index,
                op: operations
                    .get(index)
                    .map_or("commit", Operation::name)
                    .to_owned(),
                error: error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_owned),
                details: item
                    .get("details")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
            });
        }
    }
    if items.len() < operations.len() {
        return Err(bad("fewer results than operations"));
    }
    let mut out = Vec::with_capacity(operations.len());
    for (op, item) in operations.iter().zip(items) {
        out.push(match op {
            Operation::Insert { .. } => {
                let uuid = item
                    .get("uuid")
                    .map(crate::data::Atom::from_json)
                    .transpose()?
                    .and_then(|a| a.as_uuid().cloned())
                    .ok_or_else(|| bad("insert result without a uuid"))?;
                OperationResult::Insert(uuid)
            }
            Operation::Select { .. } => {
                let rows = item
                    .get("rows")
                    .and_then(Json::as_array)
                    .ok_or_else(|| bad("select result without rows"))?;
                OperationResult::Select(rows.iter().map(Row::from_json).collect::<Result<_, _>>()?)
            }
            Operation::Update { .. } | Operation::Mutate { .. } | Operation::Delete { .. } => {
                OperationResult::Count(item.get("count").and_then(Json::as_u64).unwrap_or(0))
            }
            _ => OperationResult::Empty,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_params_with_named_uuid_references() {
        let mut txn = Transaction::new();
        let iface = txn.insert("Interface", Row::new().with("name", "p1"));
        let port = txn.insert(
            "Port",
            Row::new().with("name", "p1").with("interfaces", &iface),
        );
        txn.mutate(
            "Bridge",
            vec![Condition::eq("name", "br0")],
            vec![Mutation::insert("ports", &port)],
        );
        let p = txn.to_params("Open_vSwitch");
        assert_eq!(p[0], "Open_vSwitch");
        assert_eq!(p[2]["row"]["interfaces"], json!(["named-uuid", "row1"]));
        assert_eq!(
            p[3]["mutations"],
            json!([["ports", "insert", ["named-uuid", "row2"]]])
        );
        assert_eq!(p[3]["where"], json!([["name", "==", "br0"]]));
    }

    #[test]
    fn failed_operation_and_failed_commit_are_located() {
        let ops = [Operation::Comment("x".into()), Operation::Abort];
        let r = json!([{}, {"error": "aborted", "details": "aborted by request"}]);
        match parse_results("db", &ops, &r) {
            Err(Error::Operation {
                index: 1,
                op,
                error,
                details,
                ..
            }) => {
                assert_eq!((op.as_str(), error.as_str()), ("abort", "aborted"));
                assert_eq!(details.as_deref(), Some("aborted by request"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let r = json!([{}, {}, {"error": "referential integrity violation"}]);
        assert!(matches!(
            parse_results("db", &ops, &r),
            Err(Error::Operation { index: 2, .. })
        ));
    }
}
