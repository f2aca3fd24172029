//! PostgreSQL's catalogs for the PostgreSQL wire (docs/reference.md#sql-over-the-wire):
//! `pg_catalog` and `information_schema` as tools read them to list and
//! describe tables (psql's `\dt` and `\d`, Grafana's, Metabase's and DBeaver's
//! table pickers), and the session functions they call on connect.
//!
//! The catalogs are small in-memory tables built, per statement, from the
//! tables of the caller's scope ([`visible_tables`]) and their columns: a
//! tenant's catalogs list `usage_events` and nothing else, so no catalog
//! query can name another table, let alone its rows. They are registered in
//! the statement's own [`LakeSession`](allot_lake::session::LakeSession), so a
//! catalog query passes the same statement check and runs under the same
//! limits as any other.
//!
//! [`rewrite`] turns the PostgreSQL spellings these tools send into the
//! engine's: `OPERATOR(pg_catalog.~)` into `~`, `COLLATE` dropped, casts to
//! `regclass`, `regtype` or `oid` into `bigint`, `pg_catalog.`-qualified
//! functions and types unqualified. A `SELECT` that reads one of the
//! catalogs allot always leaves empty ([`EMPTY_TABLES`]: no column defaults,
//! collations, policies, …) answers no row, so its columns become NULL and
//! its condition false: psql's `\d` reads those catalogs in correlated
//! subqueries and with `ARRAY(…)`, which the engine does not plan, and whose
//! answer is known without planning them.

use std::ops::ControlFlow;
use std::sync::Arc;

use allot_lake::session::{SQL_CATALOG, SQL_SCHEMA, Scope};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self as sql, BinaryOperator, Expr, ObjectName, ObjectNamePart, Statement, Visit, VisitMut,
    VisitorMut, visit_expressions_mut,
};

use super::visible_tables;
use crate::error::QueryError;

/// The schema of PostgreSQL's system catalogs.
pub const PG_CATALOG: &str = "pg_catalog";
/// The schema of the SQL standard's catalog views.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// The version `version()` and `server_version` report: the PostgreSQL
/// whose catalogs these imitate, then allot's own.
pub const SERVER_VERSION: &str = "16.6";

/// The oid of the first lake table; each table keeps its place in
/// [`ALL_TABLES`], so a table's oid is the same in every scope.
const FIRST_TABLE_OID: i32 = 16_384;
/// Every lake table the catalogs may list, in the order of their oids.
const ALL_TABLES: [&str; 6] = [
    allot_lake::session::USAGE_EVENTS,
    allot_lake::session::REJECTED_EVENTS,
    allot_lake::sql_tables::USAGE_HOURLY,
    allot_lake::sql_tables::USAGE_MONTHLY,
    allot_lake::sql_tables::CLOSINGS,
    allot_lake::sql_tables::INVOICES,
];
/// The namespaces, with the oids PostgreSQL gives them.
const NAMESPACES: [(i32, &str); 3] = [
    (11, PG_CATALOG),
    (2200, SQL_SCHEMA),
    (13_000, INFORMATION_SCHEMA),
];

/// A PostgreSQL type: its oid, name, length in bytes (-1 variable) and
/// category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgType {
    /// The type's oid, as clients decode by.
    pub oid: u32,
    /// Its name (`format_type`'s answer).
    pub name: &'static str,
    /// Its size in bytes, -1 when variable.
    pub len: i16,
    /// Its category letter (`B`oolean, `N`umeric, `S`tring, `D`ate/time, `U`ser).
    pub category: &'static str,
}

/// The PostgreSQL types answers are sent as.
pub const PG_TYPES: [PgType; 13] = [
    pg_type(16, "boolean", 1, "B"),
    pg_type(17, "bytea", -1, "U"),
    pg_type(20, "bigint", 8, "N"),
    pg_type(21, "smallint", 2, "N"),
    pg_type(23, "integer", 4, "N"),
    pg_type(25, "text", -1, "S"),
    pg_type(26, "oid", 4, "N"),
    pg_type(700, "real", 4, "N"),
    pg_type(701, "double precision", 8, "N"),
    pg_type(1082, "date", 4, "D"),
    pg_type(1114, "timestamp without time zone", 8, "D"),
    pg_type(1184, "timestamp with time zone", 8, "D"),
    pg_type(1700, "numeric", -1, "N"),
];

const fn pg_type(oid: u32, name: &'static str, len: i16, category: &'static str) -> PgType {
    PgType {
        oid,
        name,
        len,
        category,
    }
}

/// The type of [`PG_TYPES`] with `oid`.
fn by_oid(oid: u32) -> PgType {
    PG_TYPES
        .iter()
        .copied()
        .find(|t| t.oid == oid)
        .unwrap_or(PG_TYPES[5])
}

/// The PostgreSQL type an Arrow column is sent as: integers by width
/// (unsigned ones one size up, `UInt64` as numeric), decimals as `numeric`
/// (exact), instants as `timestamp`/`timestamptz`, and anything else as
/// `text`.
pub fn pg_type_of(data_type: &DataType) -> PgType {
    let oid = match data_type {
        DataType::Boolean => 16,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => 17,
        DataType::FixedSizeBinary(_) => 17,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => 21,
        DataType::Int32 | DataType::UInt16 => 23,
        DataType::Int64 | DataType::UInt32 => 20,
        DataType::Float16 | DataType::Float32 => 700,
        DataType::Float64 => 701,
        DataType::UInt64 | DataType::Decimal32(..) | DataType::Decimal64(..) => 1700,
        DataType::Decimal128(..) | DataType::Decimal256(..) => 1700,
        DataType::Date32 | DataType::Date64 => 1082,
        DataType::Timestamp(_, None) => 1114,
        DataType::Timestamp(_, Some(_)) => 1184,
        _ => 25,
    };
    by_oid(oid)
}

/// The oid of lake table `name`.
fn table_oid(name: &str) -> i32 {
    let place = ALL_TABLES.iter().position(|t| *t == name).unwrap_or(0);
    FIRST_TABLE_OID + i32::try_from(place).unwrap_or(0)
}

/// Whether `parts` (a relation's name, lower-cased) names a catalog table:
/// `pg_class`, `pg_catalog.pg_class`, `information_schema.tables`, or either
/// under the catalog `allot`.
pub fn is_catalog_table(parts: &[String]) -> bool {
    let parts = match parts {
        [catalog, rest @ ..] if catalog == SQL_CATALOG && rest.len() == 2 => rest,
        _ => parts,
    };
    match parts {
        [name] => is_pg_table(name),
        [schema, name] if schema == PG_CATALOG => is_pg_table(name),
        [schema, name] if schema == INFORMATION_SCHEMA => INFO_TABLES.contains(&name.as_str()),
        _ => false,
    }
}

/// Whether `name` is a `pg_catalog` table.
fn is_pg_table(name: &str) -> bool {
    PG_TABLES.contains(&name) || EMPTY_TABLES.contains(&name)
}

/// The `pg_catalog` tables with rows; [`EMPTY_TABLES`] are the others.
const PG_TABLES: [&str; 12] = [
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_database",
    "pg_am",
    "pg_roles",
    "pg_user",
    "pg_proc",
    "pg_tablespace",
    "pg_extension",
    "pg_settings",
];

/// The `pg_catalog` tables that never have a row: allot's tables have no
/// column defaults, collations, descriptions, indexes, constraints,
/// inheritance, policies, statistics, publications or triggers.
const EMPTY_TABLES: [&str; 12] = [
    "pg_description",
    "pg_attrdef",
    "pg_collation",
    "pg_index",
    "pg_constraint",
    "pg_inherits",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_trigger",
];

/// The `pg_type` columns that name a function (`regproc` in PostgreSQL).
const REGPROC_COLUMNS: [&str; 4] = ["typinput", "typoutput", "typreceive", "typsend"];

/// Aggregate functions: over no rows they still answer one.
const AGGREGATES: [&str; 14] = [
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "first_value",
    "last_value",
];

/// The `information_schema` views there are.
const INFO_TABLES: [&str; 5] = ["tables", "columns", "schemata", "views", "routines"];

/// Rewrites PostgreSQL's spellings in `statement` into the engine's (see
/// the module's documentation). Runs after the statement check has bounded
/// the statement's depth.
pub fn rewrite(statement: &mut Statement) {
    let _ = statement.visit(&mut EmptyReads);
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
}

/// Empties every `SELECT` that reads an always-empty catalog (see
/// [`is_always_empty`]).
struct EmptyReads;

impl VisitorMut for EmptyReads {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut sql::Query) -> ControlFlow<()> {
        empty_selects(&mut query.body);
        ControlFlow::Continue(())
    }
}

/// The `SELECT`s of `body` that answer no row whatever the catalogs hold,
/// with NULL columns (named as before, made unique) and a false condition.
fn empty_selects(body: &mut sql::SetExpr) {
    match body {
        sql::SetExpr::Select(select) if is_always_empty(select) => {
            let null = || Expr::Value(sql::Value::Null.into());
            let mut names = std::collections::HashSet::new();
            for (index, item) in select.projection.iter_mut().enumerate() {
                let name = match item {
                    sql::SelectItem::UnnamedExpr(expr) => column_name(expr),
                    sql::SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                    _ => continue,
                };
                let name = if names.insert(name.clone()) {
                    name
                } else {
                    format!("{name}_{}", index + 1)
                };
                *item = sql::SelectItem::ExprWithAlias {
                    expr: null(),
                    alias: sql::Ident::with_quote('"', name),
                };
            }
            select.selection = Some(Expr::Value(sql::Value::Boolean(false).into()));
        }
        sql::SetExpr::SetOperation { left, right, .. } => {
            empty_selects(left);
            empty_selects(right);
        }
        _ => {}
    }
}

/// The name PostgreSQL gives an unnamed column: the column's or the
/// function's, else `?column?`.
fn column_name(expr: &Expr) -> String {
    match expr {
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .map_or_else(|| "?column?".to_string(), |ident| ident.value.clone()),
        Expr::Function(function) => unqualified(&function.name),
        _ => "?column?".to_string(),
    }
}

fn rewrite_expr(expr: &mut Expr) {
    match expr {
        Expr::BinaryOp { op, left, right } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op
                && let Some(plain) = parts.last().and_then(|o| plain_operator(o))
            {
                *op = plain;
            }
            // A function column (`regproc`) holds the function's name here;
            // PostgreSQL's "no function", 0, reads as `-`.
            if is_regproc_column(left) {
                no_function_as_text(right);
            } else if is_regproc_column(right) {
                no_function_as_text(left);
            }
        }
        Expr::Collate { expr: inner, .. } => {
            let inner = std::mem::replace(inner.as_mut(), Expr::value(sql::Value::Null));
            *expr = inner;
            rewrite_expr(expr);
        }
        Expr::Cast { data_type, .. } => {
            if let sql::DataType::Custom(name, _) = data_type {
                let last = unqualified(name);
                *data_type = match last.as_str() {
                    "regclass" | "regtype" | "regproc" | "regprocedure" | "regnamespace"
                    | "regrole" | "regoper" | "oid" | "xid" => sql::DataType::BigInt(None),
                    "text" | "name" | "varchar" | "bpchar" | "char" => sql::DataType::Text,
                    "int2" => sql::DataType::SmallInt(None),
                    "int4" => sql::DataType::Int(None),
                    "int8" => sql::DataType::BigInt(None),
                    "bool" => sql::DataType::Boolean,
                    _ => return,
                };
            }
        }
        Expr::Function(function)
            if function.name.0.len() == 2
                && qualifier(&function.name).as_deref() == Some(PG_CATALOG) =>
        {
            let last = unqualified(&function.name);
            function.name = ObjectName(vec![ObjectNamePart::Identifier(sql::Ident::new(last))]);
        }
        _ => {}
    }
}

/// Whether `select` answers no row whatever the catalogs hold: it has no
/// aggregate (which answers a row over none) and reads, through inner or
/// cross joins only, one of the [`EMPTY_TABLES`].
fn is_always_empty(select: &sql::Select) -> bool {
    let aggregates = select.projection.iter().any(|item| {
        let mut finder = AggregateFinder::default();
        item.visit(&mut finder).is_break()
    });
    let grouped =
        !matches!(&select.group_by, sql::GroupByExpr::Expressions(keys, _) if keys.is_empty());
    if aggregates && !grouped {
        return false;
    }
    let empty_relation = |relation: &sql::TableFactor| match relation {
        sql::TableFactor::Table { name, .. } => {
            let in_pg_catalog = match name.0.len() {
                1 => true,
                2 => qualifier(name).as_deref() == Some(PG_CATALOG),
                _ => false,
            };
            in_pg_catalog && EMPTY_TABLES.contains(&unqualified(name).as_str())
        }
        _ => false,
    };
    select.from.iter().any(|from| {
        let inner = from.joins.iter().all(|join| {
            matches!(
                join.join_operator,
                sql::JoinOperator::Join(_)
                    | sql::JoinOperator::Inner(_)
                    | sql::JoinOperator::CrossJoin(_)
            )
        });
        inner
            && (empty_relation(&from.relation)
                || from.joins.iter().any(|join| empty_relation(&join.relation)))
    })
}

/// Finds an aggregate call of a `SELECT` item's own, not of a subquery in
/// it (which answers its own rows).
#[derive(Default)]
struct AggregateFinder {
    /// Subqueries entered and not yet left.
    subqueries: usize,
}

impl sql::Visitor for AggregateFinder {
    type Break = ();

    fn pre_visit_query(&mut self, _query: &sql::Query) -> ControlFlow<()> {
        self.subqueries += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &sql::Query) -> ControlFlow<()> {
        self.subqueries -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(function)
                if self.subqueries == 0
                    && AGGREGATES.contains(&unqualified(&function.name).as_str()) =>
            {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Whether `expr` is one of the [`REGPROC_COLUMNS`].
fn is_regproc_column(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Identifier(ident) => &ident.value,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(ident) => &ident.value,
            None => return false,
        },
        _ => return false,
    };
    REGPROC_COLUMNS.contains(&name.as_str())
}

/// `0`, PostgreSQL's "no function", as the text a function column holds.
fn no_function_as_text(expr: &mut Expr) {
    if matches!(expr, Expr::Value(v) if v.value == sql::Value::Number("0".into(), false)) {
        *expr = Expr::value(sql::Value::SingleQuotedString("-".into()));
    }
}

/// The engine's operator for PostgreSQL operator `name`, where it has one.
fn plain_operator(name: &str) -> Option<BinaryOperator> {
    Some(match name {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "=" => BinaryOperator::Eq,
        "<>" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        ">" => BinaryOperator::Gt,
        "<=" => BinaryOperator::LtEq,
        ">=" => BinaryOperator::GtEq,
        _ => return None,
    })
}

/// The last part of `name`, lower-cased.
fn unqualified(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(ObjectNamePart::as_ident)
        .map(|ident| ident.value.to_lowercase())
        .unwrap_or_default()
}

/// The first part of a two-part `name`, lower-cased.
fn qualifier(name: &ObjectName) -> Option<String> {
    name.0
        .first()
        .and_then(ObjectNamePart::as_ident)
        .map(|ident| ident.value.to_lowercase())
}

/// Whether a statement's table `reference` is a catalog table.
pub fn is_catalog_reference(reference: &datafusion::common::TableReference) -> bool {
    let parts: Vec<String> = [
        reference.catalog(),
        reference.schema(),
        Some(reference.table()),
    ]
    .into_iter()
    .flatten()
    .map(str::to_lowercase)
    .collect();
    is_catalog_table(&parts)
}

/// Registers the session functions in `ctx` and, when `with_catalogs`, the
/// catalogs of `scope`, whose tables must all be registered in `ctx`.
pub(super) async fn install(
    ctx: &SessionContext,
    scope: &Scope,
    with_catalogs: bool,
) -> Result<(), QueryError> {
    for function in session_functions() {
        ctx.register_udf(function);
    }
    if !with_catalogs {
        return Ok(());
    }
    let mut tables = Vec::new();
    for name in visible_tables(scope) {
        let provider = ctx.table_provider(name).await.map_err(QueryError::Engine)?;
        tables.push((name, provider.schema()));
    }
    let catalog = ctx.catalog(SQL_CATALOG).ok_or_else(|| {
        QueryError::Engine(datafusion::error::DataFusionError::Internal(
            "the session has no catalog".into(),
        ))
    })?;
    let pg = Arc::new(MemorySchemaProvider::new());
    for (name, batch) in pg_tables(&tables)? {
        let table = Arc::new(
            MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(QueryError::Engine)?,
        );
        // Unqualified too: PostgreSQL searches pg_catalog first.
        ctx.register_table(name, Arc::clone(&table) as _)
            .map_err(QueryError::Engine)?;
        datafusion::catalog::SchemaProvider::register_table(pg.as_ref(), name.to_string(), table)
            .map_err(QueryError::Engine)?;
    }
    catalog
        .register_schema(PG_CATALOG, pg)
        .map_err(QueryError::Engine)?;
    let info = Arc::new(MemorySchemaProvider::new());
    for (name, batch) in info_tables(&tables)? {
        let table = Arc::new(
            MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(QueryError::Engine)?,
        );
        datafusion::catalog::SchemaProvider::register_table(info.as_ref(), name.to_string(), table)
            .map_err(QueryError::Engine)?;
    }
    catalog
        .register_schema(INFORMATION_SCHEMA, info)
        .map_err(QueryError::Engine)?;
    Ok(())
}

/// A column of a catalog table.
enum Column {
    Int(Vec<i32>),
    Small(Vec<i16>),
    Big(Vec<i64>),
    Bool(Vec<bool>),
    Text(Vec<Option<String>>),
}

impl Column {
    fn text<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Column {
        Column::Text(values.into_iter().map(|v| Some(v.into())).collect())
    }

    fn data_type(&self) -> DataType {
        match self {
            Column::Int(_) => DataType::Int32,
            Column::Small(_) => DataType::Int16,
            Column::Big(_) => DataType::Int64,
            Column::Bool(_) => DataType::Boolean,
            Column::Text(_) => DataType::Utf8,
        }
    }

    fn array(self) -> ArrayRef {
        match self {
            Column::Int(v) => Arc::new(Int32Array::from(v)),
            Column::Small(v) => Arc::new(Int16Array::from(v)),
            Column::Big(v) => Arc::new(Int64Array::from(v)),
            Column::Bool(v) => Arc::new(BooleanArray::from(v)),
            Column::Text(v) => Arc::new(StringArray::from(v)),
        }
    }
}

/// A catalog table of `columns`.
fn batch(columns: Vec<(&str, Column)>) -> Result<RecordBatch, QueryError> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, column)| Field::new(*name, column.data_type(), true))
        .collect();
    let arrays = columns.into_iter().map(|(_, c)| c.array()).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| QueryError::Engine(e.into()))
}

/// A catalog table with no rows, of columns named `ints` (oids and numbers),
/// `bools` and `texts`.
fn empty(ints: &[&str], bools: &[&str], texts: &[&str]) -> Result<RecordBatch, QueryError> {
    let mut columns: Vec<(&str, Column)> = Vec::new();
    columns.extend(ints.iter().map(|n| (*n, Column::Int(vec![]))));
    columns.extend(bools.iter().map(|n| (*n, Column::Bool(vec![]))));
    columns.extend(texts.iter().map(|n| (*n, Column::Text(vec![]))));
    batch(columns)
}

/// `n` copies of `value`.
fn same<T: Clone>(value: T, n: usize) -> Vec<T> {
    vec![value; n]
}

/// The `pg_catalog` tables over `tables`.
fn pg_tables(tables: &[(&str, SchemaRef)]) -> Result<Vec<(&'static str, RecordBatch)>, QueryError> {
    let n = tables.len();
    let oids: Vec<i32> = tables.iter().map(|(name, _)| table_oid(name)).collect();
    let public = NAMESPACES[1].0;
    let namespace = batch(vec![
        ("oid", Column::Int(NAMESPACES.iter().map(|n| n.0).collect())),
        ("nspname", Column::text(NAMESPACES.iter().map(|n| n.1))),
        ("nspowner", Column::Int(same(10, NAMESPACES.len()))),
        ("nspacl", Column::Text(same(None, NAMESPACES.len()))),
    ])?;
    let class = batch(vec![
        ("oid", Column::Int(oids.clone())),
        ("relname", Column::text(tables.iter().map(|(n, _)| *n))),
        ("relnamespace", Column::Int(same(public, n))),
        ("reltype", Column::Int(same(0, n))),
        ("reloftype", Column::Int(same(0, n))),
        ("relowner", Column::Int(same(10, n))),
        ("relam", Column::Int(same(2, n))),
        ("relfilenode", Column::Int(oids.clone())),
        ("reltablespace", Column::Int(same(0, n))),
        ("relpages", Column::Int(same(0, n))),
        ("reltuples", Column::Big(same(-1, n))),
        ("relallvisible", Column::Int(same(0, n))),
        ("reltoastrelid", Column::Int(same(0, n))),
        ("relhasindex", Column::Bool(same(false, n))),
        ("relisshared", Column::Bool(same(false, n))),
        ("relpersistence", Column::text(same("p", n))),
        ("relkind", Column::text(same("r", n))),
        (
            "relnatts",
            Column::Small(
                tables
                    .iter()
                    .map(|(_, s)| i16::try_from(s.fields().len()).unwrap_or(i16::MAX))
                    .collect(),
            ),
        ),
        ("relchecks", Column::Small(same(0, n))),
        ("relhasrules", Column::Bool(same(false, n))),
        ("relhastriggers", Column::Bool(same(false, n))),
        ("relhassubclass", Column::Bool(same(false, n))),
        ("relrowsecurity", Column::Bool(same(false, n))),
        ("relforcerowsecurity", Column::Bool(same(false, n))),
        ("relispopulated", Column::Bool(same(true, n))),
        ("relreplident", Column::text(same("d", n))),
        ("relispartition", Column::Bool(same(false, n))),
        ("relrewrite", Column::Int(same(0, n))),
        ("relacl", Column::Text(same(None, n))),
        ("reloptions", Column::Text(same(None, n))),
        ("relpartbound", Column::Text(same(None, n))),
    ])?;
    let mut attribute = AttributeRows::default();
    for ((_, schema), oid) in tables.iter().zip(&oids) {
        for (index, field) in schema.fields().iter().enumerate() {
            attribute.push(*oid, index, field);
        }
    }
    let types = batch(vec![
        (
            "oid",
            Column::Int(PG_TYPES.iter().map(|t| t.oid as i32).collect()),
        ),
        (
            "typname",
            Column::text(PG_TYPES.iter().map(|t| short_name(t.oid))),
        ),
        (
            "typnamespace",
            Column::Int(same(NAMESPACES[0].0, PG_TYPES.len())),
        ),
        ("typowner", Column::Int(same(10, PG_TYPES.len()))),
        (
            "typlen",
            Column::Small(PG_TYPES.iter().map(|t| t.len).collect()),
        ),
        (
            "typbyval",
            Column::Bool(PG_TYPES.iter().map(|t| t.len > 0).collect()),
        ),
        ("typtype", Column::text(same("b", PG_TYPES.len()))),
        (
            "typcategory",
            Column::text(PG_TYPES.iter().map(|t| t.category)),
        ),
        ("typisdefined", Column::Bool(same(true, PG_TYPES.len()))),
        ("typdelim", Column::text(same(",", PG_TYPES.len()))),
        ("typrelid", Column::Int(same(0, PG_TYPES.len()))),
        ("typelem", Column::Int(same(0, PG_TYPES.len()))),
        ("typarray", Column::Int(same(0, PG_TYPES.len()))),
        ("typbasetype", Column::Int(same(0, PG_TYPES.len()))),
        ("typtypmod", Column::Int(same(-1, PG_TYPES.len()))),
        ("typndims", Column::Int(same(0, PG_TYPES.len()))),
        ("typnotnull", Column::Bool(same(false, PG_TYPES.len()))),
        ("typcollation", Column::Int(same(0, PG_TYPES.len()))),
        (
            "typinput",
            Column::text(PG_TYPES.iter().map(|t| format!("{}in", short_name(t.oid)))),
        ),
        (
            "typoutput",
            Column::text(PG_TYPES.iter().map(|t| format!("{}out", short_name(t.oid)))),
        ),
        (
            "typreceive",
            Column::text(PG_TYPES.iter().map(|t| binary_io(t.oid, "recv"))),
        ),
        (
            "typsend",
            Column::text(PG_TYPES.iter().map(|t| binary_io(t.oid, "send"))),
        ),
        ("typdefault", Column::Text(same(None, PG_TYPES.len()))),
    ])?;
    let database = batch(vec![
        ("oid", Column::Int(vec![16_383])),
        ("datname", Column::text([SQL_CATALOG])),
        ("datdba", Column::Int(vec![10])),
        ("encoding", Column::Int(vec![6])),
        ("datcollate", Column::text(["C"])),
        ("datctype", Column::text(["C"])),
        ("datistemplate", Column::Bool(vec![false])),
        ("datallowconn", Column::Bool(vec![true])),
        ("datconnlimit", Column::Int(vec![-1])),
        ("dattablespace", Column::Int(vec![1663])),
        ("datacl", Column::Text(vec![None])),
    ])?;
    let am = batch(vec![
        ("oid", Column::Int(vec![2])),
        ("amname", Column::text(["heap"])),
        ("amhandler", Column::text(["heap_tableam_handler"])),
        ("amtype", Column::text(["t"])),
    ])?;
    let roles = |name_column: &'static str| {
        batch(vec![
            ("oid", Column::Int(vec![10])),
            (name_column, Column::text([SQL_CATALOG])),
            ("rolsuper", Column::Bool(vec![false])),
            ("rolcanlogin", Column::Bool(vec![true])),
        ])
    };
    let tablespace = batch(vec![
        ("oid", Column::Int(vec![1663])),
        ("spcname", Column::text(["pg_default"])),
        ("spcowner", Column::Int(vec![10])),
    ])?;
    Ok(vec![
        ("pg_namespace", namespace),
        ("pg_class", class),
        ("pg_attribute", attribute.batch()?),
        ("pg_type", types),
        ("pg_database", database),
        ("pg_am", am),
        (
            "pg_description",
            empty(&["objoid", "classoid", "objsubid"], &[], &["description"])?,
        ),
        (
            "pg_attrdef",
            empty(&["oid", "adrelid", "adnum"], &[], &["adbin"])?,
        ),
        (
            "pg_collation",
            empty(&["oid", "collnamespace", "collowner"], &[], &["collname"])?,
        ),
        (
            "pg_index",
            empty(
                &["indexrelid", "indrelid", "indnatts", "indnkeyatts"],
                &[
                    "indisunique",
                    "indisprimary",
                    "indisexclusion",
                    "indimmediate",
                    "indisclustered",
                    "indisvalid",
                    "indisreplident",
                ],
                &["indkey", "indexprs", "indpred"],
            )?,
        ),
        (
            "pg_constraint",
            empty(
                &[
                    "oid",
                    "connamespace",
                    "conrelid",
                    "contypid",
                    "conindid",
                    "confrelid",
                ],
                &["condeferrable", "condeferred", "convalidated", "conislocal"],
                &["conname", "contype", "conkey", "confkey", "conbin"],
            )?,
        ),
        (
            "pg_inherits",
            empty(
                &["inhrelid", "inhparent", "inhseqno"],
                &["inhdetachpending"],
                &[],
            )?,
        ),
        (
            "pg_policy",
            empty(
                &["oid", "polrelid"],
                &["polpermissive"],
                &["polname", "polcmd", "polroles", "polqual", "polwithcheck"],
            )?,
        ),
        (
            "pg_statistic_ext",
            empty(
                &[
                    "oid",
                    "stxrelid",
                    "stxnamespace",
                    "stxowner",
                    "stxstattarget",
                ],
                &[],
                &["stxname", "stxkeys", "stxkind", "stxexprs"],
            )?,
        ),
        (
            "pg_publication",
            empty(
                &["oid", "pubowner"],
                &[
                    "puballtables",
                    "pubinsert",
                    "pubupdate",
                    "pubdelete",
                    "pubtruncate",
                    "pubviaroot",
                ],
                &["pubname"],
            )?,
        ),
        (
            "pg_publication_rel",
            empty(&["oid", "prpubid", "prrelid"], &[], &["prqual", "prattrs"])?,
        ),
        (
            "pg_publication_namespace",
            empty(&["oid", "pnpubid", "pnnspid"], &[], &[])?,
        ),
        (
            "pg_trigger",
            empty(
                &["oid", "tgrelid", "tgparentid", "tgfoid", "tgtype"],
                &["tgisinternal"],
                &["tgname", "tgenabled"],
            )?,
        ),
        ("pg_roles", roles("rolname")?),
        ("pg_user", roles("usename")?),
        (
            "pg_proc",
            empty(
                &["oid", "pronamespace", "proowner", "prorettype", "pronargs"],
                &["proretset"],
                &["proname", "prokind", "proargtypes"],
            )?,
        ),
        ("pg_tablespace", tablespace),
        (
            "pg_extension",
            empty(
                &["oid", "extowner", "extnamespace"],
                &[],
                &["extname", "extversion"],
            )?,
        ),
        ("pg_settings", settings()?),
    ])
}

/// The type names `pg_type` lists (PostgreSQL's internal short names).
fn short_name(oid: u32) -> &'static str {
    match oid {
        16 => "bool",
        17 => "bytea",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        700 => "float4",
        701 => "float8",
        1082 => "date",
        1114 => "timestamp",
        1184 => "timestamptz",
        1700 => "numeric",
        _ => "text",
    }
}

/// The name of type `oid`'s binary input (`recv`) or output (`send`)
/// function, by which clients such as the ADBC driver pick a decoder.
fn binary_io(oid: u32, direction: &str) -> String {
    let name = short_name(oid);
    match oid {
        1082 | 1114 | 1184 | 1700 => format!("{name}_{direction}"),
        _ => format!("{name}{direction}"),
    }
}

/// The rows of `pg_attribute`.
#[derive(Default)]
struct AttributeRows {
    relid: Vec<i32>,
    name: Vec<Option<String>>,
    type_oid: Vec<i32>,
    len: Vec<i16>,
    num: Vec<i16>,
    typmod: Vec<i32>,
    not_null: Vec<bool>,
}

impl AttributeRows {
    fn push(&mut self, relid: i32, index: usize, field: &Field) {
        let pg = pg_type_of(field.data_type());
        self.relid.push(relid);
        self.name.push(Some(field.name().clone()));
        self.type_oid.push(pg.oid as i32);
        self.len.push(pg.len);
        self.num.push(i16::try_from(index + 1).unwrap_or(i16::MAX));
        self.typmod.push(type_modifier(field.data_type()));
        self.not_null.push(!field.is_nullable());
    }

    fn batch(self) -> Result<RecordBatch, QueryError> {
        let n = self.relid.len();
        batch(vec![
            ("attrelid", Column::Int(self.relid)),
            ("attname", Column::Text(self.name)),
            ("atttypid", Column::Int(self.type_oid)),
            ("attstattarget", Column::Int(same(-1, n))),
            ("attlen", Column::Small(self.len)),
            ("attnum", Column::Small(self.num)),
            ("attndims", Column::Int(same(0, n))),
            ("atttypmod", Column::Int(self.typmod)),
            ("attbyval", Column::Bool(same(false, n))),
            ("attalign", Column::text(same("i", n))),
            ("attstorage", Column::text(same("p", n))),
            ("attcompression", Column::text(same("", n))),
            ("attnotnull", Column::Bool(self.not_null)),
            ("atthasdef", Column::Bool(same(false, n))),
            ("atthasmissing", Column::Bool(same(false, n))),
            ("attidentity", Column::text(same("", n))),
            ("attgenerated", Column::text(same("", n))),
            ("attisdropped", Column::Bool(same(false, n))),
            ("attislocal", Column::Bool(same(true, n))),
            ("attinhcount", Column::Int(same(0, n))),
            ("attcollation", Column::Int(same(0, n))),
            ("attacl", Column::Text(same(None, n))),
            ("attoptions", Column::Text(same(None, n))),
            ("attfdwoptions", Column::Text(same(None, n))),
        ])
    }
}

/// PostgreSQL's type modifier of a column: `numeric(p, s)` as
/// `((p << 16) | s) + 4`, none (-1) for the others.
fn type_modifier(data_type: &DataType) -> i32 {
    match data_type {
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            ((i32::from(*p) << 16) | i32::from(*s).max(0)) + 4
        }
        _ => -1,
    }
}

/// `format_type(oid, typmod)`: the type's name, with its precision and scale
/// for `numeric`.
fn format_type(oid: u32, typmod: Option<i32>) -> String {
    let pg = by_oid(oid);
    match typmod {
        Some(m) if pg.oid == 1700 && m >= 4 => {
            let m = m - 4;
            format!("numeric({},{})", m >> 16, m & 0xffff)
        }
        _ => pg.name.to_string(),
    }
}

/// The `information_schema` views over `tables`.
fn info_tables(
    tables: &[(&str, SchemaRef)],
) -> Result<Vec<(&'static str, RecordBatch)>, QueryError> {
    let n = tables.len();
    let listed = batch(vec![
        ("table_catalog", Column::text(same(SQL_CATALOG, n))),
        ("table_schema", Column::text(same(SQL_SCHEMA, n))),
        ("table_name", Column::text(tables.iter().map(|(t, _)| *t))),
        ("table_type", Column::text(same("BASE TABLE", n))),
        ("is_insertable_into", Column::text(same("NO", n))),
    ])?;
    let mut rows: Vec<(&str, usize, &Field)> = Vec::new();
    for (table, schema) in tables {
        for (index, field) in schema.fields().iter().enumerate() {
            rows.push((table, index, field.as_ref()));
        }
    }
    let m = rows.len();
    let numeric = |f: &Field| match f.data_type() {
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
            (Some(i32::from(*p)), Some(i32::from(*s)))
        }
        DataType::Int16 | DataType::Int8 | DataType::UInt8 => (Some(16), Some(0)),
        DataType::Int32 | DataType::UInt16 => (Some(32), Some(0)),
        DataType::Int64 | DataType::UInt32 => (Some(64), Some(0)),
        _ => (None, None),
    };
    let columns = batch(vec![
        ("table_catalog", Column::text(same(SQL_CATALOG, m))),
        ("table_schema", Column::text(same(SQL_SCHEMA, m))),
        ("table_name", Column::text(rows.iter().map(|r| r.0))),
        (
            "column_name",
            Column::text(rows.iter().map(|r| r.2.name().as_str())),
        ),
        (
            "ordinal_position",
            Column::Int(
                rows.iter()
                    .map(|r| i32::try_from(r.1 + 1).unwrap_or(i32::MAX))
                    .collect(),
            ),
        ),
        ("column_default", Column::Text(same(None, m))),
        (
            "is_nullable",
            Column::text(
                rows.iter()
                    .map(|r| if r.2.is_nullable() { "YES" } else { "NO" }),
            ),
        ),
        (
            "data_type",
            Column::text(rows.iter().map(|r| pg_type_of(r.2.data_type()).name)),
        ),
        (
            "udt_name",
            Column::text(
                rows.iter()
                    .map(|r| short_name(pg_type_of(r.2.data_type()).oid)),
            ),
        ),
        ("character_maximum_length", Column::Text(same(None, m))),
        (
            "numeric_precision",
            Column::Text(
                rows.iter()
                    .map(|r| numeric(r.2).0.map(|p| p.to_string()))
                    .collect(),
            ),
        ),
        (
            "numeric_scale",
            Column::Text(
                rows.iter()
                    .map(|r| numeric(r.2).1.map(|s| s.to_string()))
                    .collect(),
            ),
        ),
        (
            "datetime_precision",
            Column::Text(
                rows.iter()
                    .map(|r| {
                        matches!(
                            r.2.data_type(),
                            DataType::Timestamp(TimeUnit::Microsecond, _)
                        )
                        .then(|| "6".to_string())
                    })
                    .collect(),
            ),
        ),
    ])?;
    let schemata = batch(vec![
        (
            "catalog_name",
            Column::text(same(SQL_CATALOG, NAMESPACES.len())),
        ),
        ("schema_name", Column::text(NAMESPACES.iter().map(|n| n.1))),
        (
            "schema_owner",
            Column::text(same(SQL_CATALOG, NAMESPACES.len())),
        ),
    ])?;
    Ok(vec![
        ("tables", listed),
        ("columns", columns),
        ("schemata", schemata),
        (
            "views",
            empty(
                &[],
                &[],
                &[
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "view_definition",
                ],
            )?,
        ),
        (
            "routines",
            empty(
                &[],
                &[],
                &[
                    "routine_catalog",
                    "routine_schema",
                    "routine_name",
                    "routine_type",
                ],
            )?,
        ),
    ])
}

/// `pg_settings`: the settings a session can `SHOW`, as the wire reports
/// them at login.
fn settings() -> Result<RecordBatch, QueryError> {
    let rows = [
        ("server_version", SERVER_VERSION),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("max_identifier_length", "63"),
        ("transaction_read_only", "on"),
        ("default_transaction_read_only", "on"),
    ];
    batch(vec![
        ("name", Column::text(rows.iter().map(|r| r.0))),
        ("setting", Column::text(rows.iter().map(|r| r.1))),
    ])
}

/// A session function: a name, the numbers of arguments it takes, and what
/// it answers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    answer: Answer,
}

/// What a session function answers.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Answer {
    /// The same text for every row.
    Text(String),
    /// NULL text.
    NullText,
    /// True for every row.
    True,
    /// `format_type(oid, typmod)`.
    FormatType,
}

fn session_functions() -> Vec<ScalarUDF> {
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (allot {})",
        env!("CARGO_PKG_VERSION")
    );
    let arities = |counts: &[usize]| {
        Signature::one_of(
            counts
                .iter()
                .map(|n| match n {
                    0 => TypeSignature::Nullary,
                    n => TypeSignature::Any(*n),
                })
                .collect(),
            Volatility::Stable,
        )
    };
    let text = |name, counts: &[usize], value: &str| SessionFunction {
        name,
        signature: arities(counts),
        returns: DataType::Utf8,
        answer: Answer::Text(value.to_string()),
    };
    let null_text = |name, counts: &[usize]| SessionFunction {
        name,
        signature: arities(counts),
        returns: DataType::Utf8,
        answer: Answer::NullText,
    };
    [
        text("version", &[0], &version),
        text("current_schema", &[0], SQL_SCHEMA),
        text("current_database", &[0], SQL_CATALOG),
        text("current_user", &[0], SQL_CATALOG),
        text("session_user", &[0], SQL_CATALOG),
        text("pg_get_userbyid", &[1], SQL_CATALOG),
        text("pg_encoding_to_char", &[1], "UTF8"),
        SessionFunction {
            name: "format_type",
            signature: arities(&[2]),
            returns: DataType::Utf8,
            answer: Answer::FormatType,
        },
        null_text("obj_description", &[1, 2]),
        null_text("col_description", &[2]),
        null_text("shobj_description", &[2]),
        null_text("pg_get_expr", &[2, 3]),
        SessionFunction {
            name: "pg_table_is_visible",
            signature: arities(&[1]),
            returns: DataType::Boolean,
            answer: Answer::True,
        },
        SessionFunction {
            name: "has_table_privilege",
            signature: arities(&[2, 3]),
            returns: DataType::Boolean,
            answer: Answer::True,
        },
        SessionFunction {
            name: "has_schema_privilege",
            signature: arities(&[2, 3]),
            returns: DataType::Boolean,
            answer: Answer::True,
        },
    ]
    .into_iter()
    .map(ScalarUDF::new_from_impl)
    .collect()
}

impl ScalarUDFImpl for SessionFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(match &self.answer {
            Answer::Text(value) => ColumnarValue::Scalar(ScalarValue::Utf8(Some(value.clone()))),
            Answer::NullText => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
            Answer::True => ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))),
            Answer::FormatType => {
                let arrays = ColumnarValue::values_to_arrays(&args.args)?;
                let as_i64 = |array: &ArrayRef| {
                    arrow::compute::cast(array, &DataType::Int64).map(|a| {
                        let a = a.as_any().downcast_ref::<Int64Array>().cloned();
                        a.unwrap_or_else(|| Int64Array::from(vec![None::<i64>; array.len()]))
                    })
                };
                let (oids, mods) = match arrays.as_slice() {
                    [oids, mods] => (as_i64(oids)?, as_i64(mods)?),
                    _ => return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
                };
                let names: StringArray = (0..oids.len())
                    .map(|i| {
                        oids.is_valid(i).then(|| {
                            let typmod = mods.is_valid(i).then(|| mods.value(i));
                            format_type(
                                u32::try_from(oids.value(i)).unwrap_or(0),
                                typmod.and_then(|m| i32::try_from(m).ok()),
                            )
                        })
                    })
                    .collect();
                ColumnarValue::Array(Arc::new(names))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_numeric_with_their_precision_and_scale() {
        let decimal = DataType::Decimal128(38, 9);
        assert_eq!(pg_type_of(&decimal).oid, 1700);
        assert_eq!(
            format_type(1700, Some(type_modifier(&decimal))),
            "numeric(38,9)"
        );
        assert_eq!(format_type(20, Some(-1)), "bigint");
        assert_eq!(pg_type_of(&DataType::Utf8View).name, "text");
    }

    #[test]
    fn catalog_tables_are_named_as_postgresql_names_them() {
        let parts = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        assert!(is_catalog_table(&parts("pg_class")));
        assert!(is_catalog_table(&parts("pg_catalog.pg_attribute")));
        assert!(is_catalog_table(&parts("information_schema.columns")));
        assert!(is_catalog_table(&parts("allot.pg_catalog.pg_class")));
        assert!(!is_catalog_table(&parts("public.pg_class")));
        assert!(!is_catalog_table(&parts("pg_catalog.usage_events")));
        assert!(!is_catalog_table(&parts("information_schema.pg_class")));
    }

    #[test]
    fn a_select_of_an_always_empty_catalog_is_emptied() {
        let rewritten = |sql: &str| {
            let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
            let mut statement =
                datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
                    .unwrap()
                    .remove(0);
            rewrite(&mut statement);
            statement.to_string()
        };
        // psql's `\d`: a column's default and collation.
        let described = rewritten(
            "SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) \
             FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND a.atthasdef), \
             (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t \
             WHERE c.oid = a.attcollation AND t.oid = a.atttypid) AS attcollation \
             FROM pg_catalog.pg_attribute a",
        );
        assert_eq!(
            described,
            "SELECT a.attname, (SELECT NULL AS \"pg_get_expr\" FROM pg_catalog.pg_attrdef d \
             WHERE false), (SELECT NULL AS \"collname\" FROM pg_catalog.pg_collation c, \
             pg_catalog.pg_type t WHERE false) AS attcollation FROM pg_catalog.pg_attribute a"
        );
        // An aggregate answers a row over no rows; an outer join keeps the
        // other side's; a table of the same name elsewhere is not a catalog.
        // A function column compared with PostgreSQL's "no function".
        assert_eq!(
            rewritten("SELECT typname FROM pg_type WHERE typreceive != 0 OR 0 <> t.typsend"),
            "SELECT typname FROM pg_type WHERE typreceive <> '-' OR '-' <> t.typsend"
        );
        // An aggregate of a subquery is the subquery's own.
        assert!(
            rewritten(
                "SELECT p.pubname, (SELECT string_agg(attname, ',') FROM pg_attribute) \
             FROM pg_catalog.pg_publication p"
            )
            .contains("WHERE false")
        );
        for kept in [
            "SELECT (SELECT count(*) FROM pg_attrdef) AS n",
            "SELECT (SELECT t.typname FROM pg_type t LEFT JOIN pg_collation c ON true LIMIT 1)",
            "SELECT (SELECT x FROM public.pg_attrdef) AS x",
        ] {
            assert!(!rewritten(kept).contains("WHERE false"), "{kept}");
        }
    }
}
