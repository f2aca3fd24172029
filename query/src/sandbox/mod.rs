//! Sandboxed SQL (`allot sql`, `POST /v1/sql`), the rules of SPEC §5.3.
//!
//! Three layers, each enough on its own for what it guards:
//! 1. **Isolation by construction.** A tenant's query runs in a
//!    [`LakeSession`] whose tables were built from that tenant's files only, so
//!    no predicate, join or error path can reach another tenant's rows.
//! 2. **The statement check.** Exactly one statement, and it must be a query
//!    (`SELECT`, `WITH … SELECT`, `VALUES`) or an `EXPLAIN` of one; every relation
//!    it reads is one of the session's tables or a CTE it defines; no table
//!    functions, no `information_schema`, no file paths as tables. DataFusion's
//!    own `SQLOptions` then refuses DDL, DML and `SET` again on the plan.
//! 3. **Limits.** A memory pool with spilling disabled, a time limit and a row
//!    cap per query, each answered with its own error.
//!
//! Error messages name the rule that was broken, never a file path or the name
//! of a table the caller may not see.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::time::Duration;

use allot_lake::dedup::DedupWindow;
use allot_lake::session::{LakeSession, REJECTED_EVENTS, Scope, SessionLimits, USAGE_EVENTS};
use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::config::Config;
use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    ObjectName, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;
use serde_json::Value;

use crate::error::QueryError;
use crate::render::csv_field;

/// The limits of one SQL query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlLimits {
    /// Wall-clock time limit.
    pub timeout: Duration,
    /// Memory its operators may use, in bytes.
    pub memory_bytes: usize,
    /// Most rows a result may have.
    pub max_rows: usize,
    /// The dedup window `usage_events` applies (`ingest.dedup_window`).
    pub dedup_window: DedupWindow,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            max_rows: 100_000,
            dedup_window: DedupWindow::default(),
        }
    }
}

impl From<&Config> for SqlLimits {
    fn from(config: &Config) -> Self {
        let api = &config.api;
        SqlLimits {
            timeout: api.sql_timeout.0,
            memory_bytes: usize::try_from(api.sql_memory.0).unwrap_or(usize::MAX),
            max_rows: api.sql_max_rows,
            dedup_window: DedupWindow::new(config.ingest.dedup_window.0),
        }
    }
}

/// The result of a query: column names and rows of text (`None` for SQL NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOutput {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, values formatted as text (decimals exactly, instants RFC 3339).
    pub rows: Vec<Vec<Option<String>>>,
}

impl SqlOutput {
    /// CSV with a header row; NULL is an empty field.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| csv_field(c)).collect();
        out.push_str(&header.join(","));
        out.push('\n');
        for row in &self.rows {
            let fields: Vec<String> = row
                .iter()
                .map(|v| v.as_deref().map(csv_field).unwrap_or_default())
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// `{"columns": [...], "rows": [[...], ...]}` with values as strings or null.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "columns": self.columns,
            "rows": self.rows.iter().map(|row| row.iter().map(|v| match v {
                Some(text) => Value::String(text.clone()),
                None => Value::Null,
            }).collect::<Vec<_>>()).collect::<Vec<_>>(),
        })
    }
}

/// The tables a query in `scope` may name.
fn visible_tables(scope: &Scope) -> Vec<&'static str> {
    match scope {
        Scope::AllTenants => vec![USAGE_EVENTS, REJECTED_EVENTS],
        Scope::Tenant(_) => vec![USAGE_EVENTS],
    }
}

fn rejected(message: impl Into<String>) -> QueryError {
    QueryError::SqlRejected(message.into())
}

/// Checks `sql` against the statement rules and returns the parsed statement.
pub fn check_sql(sql: &str, scope: &Scope) -> Result<DfStatement, QueryError> {
    let mut statements =
        DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(|e| {
            rejected(format!(
                "SQL syntax error: {}",
                strip_prefixes(&e.to_string())
            ))
        })?;
    if statements.len() != 1 {
        return Err(rejected(format!(
            "exactly one statement is allowed, got {}",
            statements.len()
        )));
    }
    let statement = statements.pop_front().expect("one statement");
    let query = match &statement {
        DfStatement::Statement(inner) => query_of(inner)?,
        DfStatement::Explain(explain) => match explain.statement.as_ref() {
            DfStatement::Statement(inner) => query_of(inner)?,
            _ => return Err(only_queries()),
        },
        DfStatement::CreateExternalTable(_) => {
            return Err(rejected(
                "CREATE EXTERNAL TABLE is not allowed: only a single SELECT (or WITH … SELECT, EXPLAIN) may run",
            ));
        }
        DfStatement::CopyTo(_) => {
            return Err(rejected(
                "COPY is not allowed: only a single SELECT (or WITH … SELECT, EXPLAIN) may run",
            ));
        }
        DfStatement::Reset(_) => return Err(only_queries()),
    };
    let mut checker = RelationCheck {
        visible: visible_tables(scope),
        ctes: BTreeSet::new(),
    };
    if let ControlFlow::Break(error) = query.visit(&mut checker) {
        return Err(error);
    }
    Ok(statement)
}

fn only_queries() -> QueryError {
    rejected("only a single SELECT (or WITH … SELECT, EXPLAIN) may run")
}

fn query_of(statement: &Statement) -> Result<&Query, QueryError> {
    match statement {
        Statement::Query(query) => Ok(query),
        Statement::Explain { statement, .. } => query_of(statement),
        other => {
            let keyword = other
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_uppercase();
            Err(rejected(format!(
                "{keyword} is not allowed: only a single SELECT (or WITH … SELECT, EXPLAIN) may run"
            )))
        }
    }
}

/// Walks a query and breaks on the first relation it may not read.
struct RelationCheck {
    visible: Vec<&'static str>,
    ctes: BTreeSet<String>,
}

impl Visitor for RelationCheck {
    type Break = QueryError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<QueryError> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if let SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) =
            query.body.as_ref()
        {
            return ControlFlow::Break(only_queries());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<QueryError> {
        match factor {
            TableFactor::Table { args: Some(_), .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. }
            | TableFactor::JsonTable { .. }
            | TableFactor::OpenJsonTable { .. }
            | TableFactor::XmlTable { .. } => ControlFlow::Break(rejected(
                "table functions are not allowed; read the tables usage_events and rejected_events",
            )),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<QueryError> {
        let parts: Vec<String> = relation
            .0
            .iter()
            .map(|part| {
                part.as_ident()
                    .map(|ident| ident.value.to_lowercase())
                    .unwrap_or_default()
            })
            .collect();
        if parts.iter().any(|p| p == "information_schema") {
            return ControlFlow::Break(rejected("information_schema is not available"));
        }
        let allowed = match parts.as_slice() {
            [name] => self.visible.contains(&name.as_str()) || self.ctes.contains(name),
            _ => false,
        };
        if allowed {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(rejected(format!(
                "unknown table; queries may read: {}",
                self.visible.join(", ")
            )))
        }
    }
}

/// Drops DataFusion's error-kind prefixes from a message.
fn strip_prefixes(message: &str) -> String {
    let mut text = message;
    for prefix in [
        "SQL error: ",
        "ParserError(\"",
        "Error during planning: ",
        "Schema error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
        "Execution error: ",
        "Optimizer rule 'type_coercion' failed\ncaused by\n",
    ] {
        while let Some(rest) = text.strip_prefix(prefix) {
            text = rest;
        }
    }
    let text = text.strip_suffix("\")").unwrap_or(text);
    text.lines().next().unwrap_or_default().to_string()
}

/// Maps an engine error to the caller's error (bad query, limits) or an
/// internal one, without leaking paths.
fn classify(error: DataFusionError, limits: &SqlLimits) -> QueryError {
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => QueryError::MemoryLimit {
            limit: format!("{} MiB", limits.memory_bytes >> 20),
        },
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => rejected(strip_prefixes(&error.to_string())),
        DataFusionError::ArrowError(arrow_error, _) => {
            rejected(strip_prefixes(&arrow_error.to_string()))
        }
        DataFusionError::Execution(message) if !message.contains("://") => {
            rejected(strip_prefixes(message))
        }
        _ => QueryError::Engine(error),
    }
}

/// Runs `sql` over `snapshot` within `scope` and `limits`.
pub async fn run_sql(
    snapshot: &LakeSnapshot,
    scope: &Scope,
    sql: &str,
    limits: &SqlLimits,
) -> Result<SqlOutput, QueryError> {
    let statement = check_sql(sql, scope)?;
    let session = LakeSession::new(
        snapshot,
        scope,
        &SessionLimits {
            memory_bytes: Some(limits.memory_bytes),
            dedup_window: limits.dedup_window,
        },
    )?;
    let state = session.context().state();
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(|e| classify(e, limits))?;
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|_| only_queries())?;
    let run = async {
        let frame = session
            .context()
            .execute_logical_plan(plan)
            .await
            .map_err(|e| classify(e, limits))?;
        let stream = frame
            .execute_stream()
            .await
            .map_err(|e| classify(e, limits))?;
        collect_capped(stream, limits).await
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(QueryError::TimeLimit {
            limit: format!("{} s", limits.timeout.as_secs_f64()),
        }),
    }
}

async fn collect_capped(
    mut stream: SendableRecordBatchStream,
    limits: &SqlLimits,
) -> Result<SqlOutput, QueryError> {
    let schema = stream.schema();
    let mut output = SqlOutput {
        columns: schema.fields().iter().map(|f| f.name().clone()).collect(),
        rows: Vec::new(),
    };
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| classify(e, limits))?;
        if output.rows.len() + batch.num_rows() > limits.max_rows {
            return Err(QueryError::RowLimit {
                max_rows: limits.max_rows,
            });
        }
        append_rows(&batch, &mut output.rows)?;
    }
    Ok(output)
}

fn append_rows(batch: &RecordBatch, rows: &mut Vec<Vec<Option<String>>>) -> Result<(), QueryError> {
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|array| ArrayFormatter::try_new(array.as_ref(), &options))
        .collect::<Result<_, _>>()
        .map_err(QueryError::from)?;
    for row in 0..batch.num_rows() {
        rows.push(
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(array, formatter)| {
                    array
                        .is_valid(row)
                        .then(|| formatter.value(row).to_string())
                })
                .collect(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The statement check on its own: no lake, no session, no engine run.

    use super::*;

    fn tenant() -> Scope {
        Scope::Tenant("acme".to_string())
    }

    /// The message of a refused statement.
    fn refusal(sql: &str, scope: &Scope) -> String {
        match check_sql(sql, scope) {
            Err(QueryError::SqlRejected(message)) => message,
            Err(other) => panic!("{sql}: not a refusal: {other}"),
            Ok(_) => panic!("{sql}: accepted"),
        }
    }

    #[test]
    fn queries_over_the_visible_tables_and_their_ctes_pass() {
        for sql in [
            "SELECT metric, sum(value) FROM usage_events GROUP BY metric",
            "select * from USAGE_EVENTS limit 1",
            "WITH daily AS (SELECT day, count(*) AS n FROM usage_events GROUP BY day) SELECT * FROM daily",
            "EXPLAIN SELECT count(*) FROM usage_events",
            "VALUES (1), (2)",
            "SELECT 1",
        ] {
            assert!(check_sql(sql, &tenant()).is_ok(), "{sql}");
        }
        assert!(check_sql("SELECT * FROM rejected_events", &Scope::AllTenants).is_ok());
    }

    #[test]
    fn a_tenant_cannot_name_rejected_events_and_learns_only_its_tables() {
        let message = refusal("SELECT * FROM rejected_events", &tenant());
        assert_eq!(message, "unknown table; queries may read: usage_events");
        let message = refusal(
            "SELECT * FROM usage_events u JOIN other o ON true",
            &tenant(),
        );
        assert!(!message.contains("other"), "{message}");
    }

    #[test]
    fn only_one_query_statement_runs() {
        assert_eq!(
            refusal("SELECT 1; SELECT 2", &tenant()),
            "exactly one statement is allowed, got 2"
        );
        assert!(refusal("", &tenant()).starts_with("exactly one statement"));
        for (sql, keyword) in [
            ("DROP TABLE usage_events", "DROP"),
            ("INSERT INTO usage_events VALUES (1)", "INSERT"),
            ("DELETE FROM usage_events", "DELETE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ] {
            let message = refusal(sql, &tenant());
            assert!(
                message.starts_with(&format!("{keyword} is not allowed")),
                "{sql}: {message}"
            );
        }
        assert!(
            refusal("COPY usage_events TO '/tmp/x.csv'", &tenant())
                .starts_with("COPY is not allowed")
        );
        assert!(
            refusal(
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                &tenant()
            )
            .starts_with("CREATE EXTERNAL TABLE is not allowed")
        );
    }

    #[test]
    fn paths_schemas_and_table_functions_are_refused() {
        assert_eq!(
            refusal(
                "SELECT * FROM information_schema.tables",
                &Scope::AllTenants
            ),
            "information_schema is not available"
        );
        for sql in [
            "SELECT * FROM '/etc/passwd'",
            "SELECT * FROM public.usage_events",
            "SELECT * FROM datafusion.public.usage_events",
        ] {
            assert!(
                refusal(sql, &Scope::AllTenants).starts_with("unknown table"),
                "{sql}"
            );
        }
        assert!(
            refusal("SELECT * FROM generate_series(1, 10)", &tenant())
                .starts_with("table functions are not allowed")
        );
    }

    #[test]
    fn a_relation_inside_a_subquery_is_checked_too() {
        let sql =
            "SELECT * FROM usage_events WHERE tenant_id IN (SELECT tenant_id FROM rejected_events)";
        assert!(refusal(sql, &tenant()).starts_with("unknown table"));
        assert!(check_sql(sql, &Scope::AllTenants).is_ok());
    }

    #[test]
    fn syntax_errors_name_the_problem_without_engine_prefixes() {
        let message = refusal("SELEC 1", &tenant());
        assert!(message.starts_with("SQL syntax error: "), "{message}");
        assert!(!message.contains("ParserError"), "{message}");
    }

    #[test]
    fn engine_errors_are_the_callers_or_internal_by_kind() {
        let limits = SqlLimits::default();
        let plan = classify(DataFusionError::Plan("no field named x".into()), &limits);
        assert!(matches!(&plan, QueryError::SqlRejected(m) if m == "no field named x"));
        let memory = classify(DataFusionError::ResourcesExhausted("pool".into()), &limits);
        assert!(matches!(memory, QueryError::MemoryLimit { .. }));
        let path = classify(
            DataFusionError::Execution("file:///lake/usage_events/x.parquet: gone".into()),
            &limits,
        );
        assert!(matches!(path, QueryError::Engine(_)), "{path}");
    }
}
