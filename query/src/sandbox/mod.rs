//! Sandboxed SQL (`allot sql`, `POST /v1/sql`), the rules of
//! docs/reference.md#security-model.
//!
//! ```text
//! text ─▶ check::check_sql ─▶ plan ─▶ check_plan_size ─▶ optimise ─▶ execute ─▶ collect
//!         (length, nesting,            (operators,        (bounded       (rows and
//!          one query, tables)           expressions)       functions)     bytes capped)
//! └──────────────── all on a SqlPool thread, within the time limit ────────────────┘
//! ```
//!
//! Four layers, each enough on its own for what it guards:
//! 1. **Isolation by construction.** A tenant's query runs in a
//!    [`LakeSession`] whose tables were built from that tenant's files only, so
//!    no predicate, join or error path can reach another tenant's rows.
//! 2. **The statement check** ([`check`]). Exactly one statement, and it must be
//!    a query (`SELECT`, `WITH … SELECT`, `VALUES`) or an `EXPLAIN` of one; every
//!    relation it reads is one of the session's tables or a CTE it defines; no
//!    table functions, no `information_schema`, no file paths as tables; a
//!    bounded length, nesting and plan size, so planning cannot recurse or work
//!    without bound. DataFusion's own `SQLOptions` then refuses DDL, DML and
//!    `SET` again on the plan.
//! 3. **Its own threads** ([`pool`]). Everything from parsing on runs on a
//!    [`SqlPool`], never on the caller's runtime, within one time limit that
//!    aborts the query's task and that every operator checks on every batch
//!    ([`deadline`]).
//! 4. **Limits.** A memory pool with spilling disabled that also bounds what
//!    functions build ([`functions`]), and a row and a byte cap on the result,
//!    each answered with its own error.
//!
//! Error messages name the rule that was broken, never a file path or the name
//! of a table the caller may not see.

pub mod check;
mod deadline;
mod functions;
pub mod pg_catalog;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use allot_lake::dedup::DedupWindow;
use allot_lake::session::{LakeSession, REJECTED_EVENTS, Scope, SessionLimits, USAGE_EVENTS};
use allot_lake::snapshot::LakeSnapshot;
use allot_lake::sql_tables::{CLOSINGS, INVOICES, USAGE_HOURLY, USAGE_MONTHLY};
use allot_schemas::config::Config;
use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use check::{check_plan_size, only_queries, rejected};
pub use check::{check_request, check_sql};
pub use pool::{SqlPool, SqlStream};

use crate::error::QueryError;
use crate::render::csv_field;

/// The limits of one SQL query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlLimits {
    /// Wall-clock time limit, from the query's arrival to its last row.
    pub timeout: Duration,
    /// Memory its operators and function results may use, in bytes.
    pub memory_bytes: usize,
    /// Most rows a result may have.
    pub max_rows: usize,
    /// Most bytes a result's values may have, as text.
    pub max_bytes: usize,
    /// The dedup window `usage_events` applies (`ingest.dedup_window`).
    pub dedup_window: DedupWindow,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            max_rows: 100_000,
            max_bytes: 64 << 20,
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
            max_bytes: usize::try_from(api.sql_max_bytes.0).unwrap_or(usize::MAX),
            dedup_window: DedupWindow::new(config.ingest.dedup_window.0),
        }
    }
}

/// What else than the lake's tables a statement may read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Catalogs {
    /// The lake's tables only (`POST /v1/sql`, `allot sql`, Flight SQL).
    #[default]
    None,
    /// Also `pg_catalog` and `information_schema`, listing only the tables
    /// of the scope, and the session functions PostgreSQL clients call
    /// ([`pg_catalog`]); the PostgreSQL wire's statements.
    Postgres,
}

/// A statement to run: its text, the values of its `$1`, `$2`, … parameters
/// (bound into the plan as values, never spliced into the text) and the
/// catalogs it may read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlRequest {
    /// The statement's text.
    pub sql: String,
    /// The parameters' values, `$1` first.
    pub parameters: Vec<ScalarValue>,
    /// What it may read besides the lake's tables.
    pub catalogs: Catalogs,
}

impl From<String> for SqlRequest {
    fn from(sql: String) -> Self {
        SqlRequest {
            sql,
            ..SqlRequest::default()
        }
    }
}

impl From<&str> for SqlRequest {
    fn from(sql: &str) -> Self {
        SqlRequest::from(sql.to_string())
    }
}

/// The columns a statement answers with, and the types of its parameters as
/// the engine infers them from where they are used (`None` where it cannot).
#[derive(Debug, Clone)]
pub struct Described {
    /// The answer's columns.
    pub schema: SchemaRef,
    /// The type of `$1`, `$2`, …, in order.
    pub parameters: Vec<Option<arrow::datatypes::DataType>>,
}

/// The result of a query: column names and rows of text (`None` for SQL NULL).
/// Serializes as `{"columns": [...], "rows": [[...], ...]}`.
///
/// The values are held as one text with an end offset per value, so an
/// answer's memory is its text plus four bytes a value: what the byte cap
/// ([`SqlLimits::max_bytes`]) counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOutput {
    /// Column names.
    pub columns: Vec<String>,
    /// Every value's text, row by row (decimals exactly, instants RFC 3339).
    text: String,
    /// Where each value ends in `text`; `None` for NULL.
    ends: Vec<Option<u32>>,
}

impl SqlOutput {
    fn new(columns: Vec<String>) -> Self {
        SqlOutput {
            columns,
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// How many rows the answer has.
    pub fn row_count(&self) -> usize {
        self.ends.len().checked_div(self.columns.len()).unwrap_or(0)
    }

    /// The rows, each value `None` for NULL.
    pub fn rows(&self) -> impl Iterator<Item = Vec<Option<&str>>> + '_ {
        let width = self.columns.len().max(1);
        let mut start = 0;
        self.ends.chunks(width).map(move |row| {
            row.iter()
                .map(|end| {
                    end.map(|end| {
                        let end = end as usize;
                        let value = &self.text[start..end];
                        start = end;
                        value
                    })
                })
                .collect()
        })
    }

    /// CSV with a header row; NULL is an empty field.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| csv_field(c)).collect();
        out.push_str(&header.join(","));
        out.push('\n');
        for row in self.rows() {
            let fields: Vec<String> = row
                .iter()
                .map(|v| v.map(csv_field).unwrap_or_default())
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// `{"columns": [...], "rows": [[...], ...]}` with values as strings or null.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Serialize for SqlOutput {
    /// Written row by row from the held text, never copied into a tree first.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeSeq, SerializeStruct};

        struct Rows<'a>(&'a SqlOutput);
        impl Serialize for Rows<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut rows = serializer.serialize_seq(Some(self.0.row_count()))?;
                for row in self.0.rows() {
                    rows.serialize_element(&row)?;
                }
                rows.end()
            }
        }

        let mut output = serializer.serialize_struct("SqlOutput", 2)?;
        output.serialize_field("columns", &self.columns)?;
        output.serialize_field("rows", &Rows(self))?;
        output.end()
    }
}

/// The tables a query in `scope` may name (and the wire protocols list).
pub fn visible_tables(scope: &Scope) -> Vec<&'static str> {
    let mut tables = vec![
        CLOSINGS,
        INVOICES,
        USAGE_EVENTS,
        USAGE_HOURLY,
        USAGE_MONTHLY,
    ];
    if *scope == Scope::AllTenants {
        tables.push(REJECTED_EVENTS);
    }
    tables.sort_unstable();
    tables
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
        DataFusionError::Execution(message) if message == deadline::PAST_DEADLINE => {
            QueryError::TimeLimit {
                limit: format!("{} s", limits.timeout.as_secs_f64()),
            }
        }
        DataFusionError::ResourcesExhausted(_) => QueryError::MemoryLimit {
            limit: human_bytes(limits.memory_bytes),
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

/// Runs `sql` over `snapshot` within `scope` and `limits` on the calling
/// thread; [`SqlPool::run`] is the way in, with the time limit.
async fn execute(
    snapshot: &LakeSnapshot,
    scope: &Scope,
    request: &SqlRequest,
    limits: &SqlLimits,
    deadline: std::time::Instant,
) -> Result<SqlOutput, QueryError> {
    let stream = start(snapshot, scope, request, limits, deadline).await?;
    collect_capped(stream, limits).await
}

/// A checked statement's plan, in the session it reads.
struct Planned {
    session: LakeSession,
    plan: datafusion::logical_expr::LogicalPlan,
}

/// Checks `sql` and plans it in a session of `scope`, refusing what is not a
/// bounded query.
async fn plan(
    snapshot: &LakeSnapshot,
    scope: &Scope,
    request: &SqlRequest,
    limits: &SqlLimits,
) -> Result<Planned, QueryError> {
    let statement = check_request(&request.sql, scope, request.catalogs)?;
    let session = LakeSession::new(
        snapshot,
        scope,
        &SessionLimits {
            memory_bytes: Some(limits.memory_bytes),
            dedup_window: limits.dedup_window,
        },
    )?;
    functions::install(session.context());
    let state = session.context().state();
    let named = state
        .resolve_table_references(&statement)
        .map_err(|e| classify(e, limits))?;
    // A statement reading PostgreSQL's catalogs sees every table it may
    // name described there, so each is registered for it.
    let postgres = request.catalogs == Catalogs::Postgres;
    let reads_catalogs = postgres && named.iter().any(pg_catalog::is_catalog_reference);
    allot_lake::sql_tables::register(&session, scope, &snapshot.closed, |table| {
        reads_catalogs || named.iter().any(|r| r.table() == table)
    })
    .await?;
    if postgres {
        pg_catalog::install(session.context(), scope, reads_catalogs).await?;
    }
    let state = session.context().state();
    let plan = state
        .statement_to_plan(statement)
        .await
        .map_err(|e| classify(e, limits))?;
    let plan = bind_parameters(plan, &request.parameters, limits)?;
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|_| only_queries())?;
    check_plan_size(&plan)?;
    Ok(Planned { session, plan })
}

/// The types the engine infers for a plan's `$1`, `$2`, … parameters.
fn parameter_types(
    plan: &datafusion::logical_expr::LogicalPlan,
    limits: &SqlLimits,
) -> Result<Vec<Option<arrow::datatypes::DataType>>, QueryError> {
    let mut types = plan
        .get_parameter_types()
        .map_err(|e| classify(e, limits))?;
    let count = types
        .keys()
        .filter_map(|id| id.strip_prefix('$')?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    Ok((1..=count)
        .map(|n| types.remove(&format!("${n}")).flatten())
        .collect())
}

/// `plan` with its parameters replaced by `values` (each cast to the type
/// its use gives it): values in the plan, never text in the statement.
fn bind_parameters(
    plan: datafusion::logical_expr::LogicalPlan,
    values: &[ScalarValue],
    limits: &SqlLimits,
) -> Result<datafusion::logical_expr::LogicalPlan, QueryError> {
    if values.is_empty() {
        return Ok(plan);
    }
    let types = parameter_types(&plan, limits)?;
    if types.len() != values.len() {
        return Err(check::rejected(format!(
            "the statement has {} parameters and {} values were given",
            types.len(),
            values.len()
        )));
    }
    let values = values
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(index, (value, wanted))| match wanted {
            Some(wanted) if value.data_type() != *wanted => value.cast_to(wanted).map_err(|_| {
                check::rejected(format!(
                    "parameter ${} cannot be read as {wanted}",
                    index + 1
                ))
            }),
            _ => Ok(value.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    plan.with_param_values(values)
        .map_err(|e| classify(e, limits))
}

/// The columns `request` answers with and its parameters' types, without
/// running it.
async fn describe(
    snapshot: &LakeSnapshot,
    scope: &Scope,
    request: &SqlRequest,
    limits: &SqlLimits,
) -> Result<Described, QueryError> {
    let planned = plan(snapshot, scope, request, limits).await?;
    Ok(Described {
        schema: Arc::clone(planned.plan.schema().inner()),
        parameters: parameter_types(&planned.plan, limits)?,
    })
}

/// Checks, plans and starts `sql`: its batches, each operator stopping at
/// `deadline`.
async fn start(
    snapshot: &LakeSnapshot,
    scope: &Scope,
    request: &SqlRequest,
    limits: &SqlLimits,
    deadline: std::time::Instant,
) -> Result<SendableRecordBatchStream, QueryError> {
    let Planned { session, plan } = plan(snapshot, scope, request, limits).await?;
    let frame = session
        .context()
        .execute_logical_plan(plan)
        .await
        .map_err(|e| classify(e, limits))?;
    let task = frame.task_ctx();
    let physical = frame
        .create_physical_plan()
        .await
        .and_then(|plan| deadline::with_deadline(plan, deadline))
        .map_err(|e| classify(e, limits))?;
    datafusion::physical_plan::execute_stream(physical, Arc::new(task))
        .map_err(|e| classify(e, limits))
}

/// Sends the batches of `stream` into `sink` as the engine makes them, within
/// the row cap and the byte cap (counted as the bytes of the batches' rows,
/// not of the buffers a slice shares with rows it does not hold); stops
/// at the first error, which it sends, or when nobody receives any more.
async fn forward_capped(
    mut stream: SendableRecordBatchStream,
    limits: &SqlLimits,
    sink: tokio::sync::mpsc::Sender<Result<RecordBatch, QueryError>>,
) {
    let (mut rows, mut bytes) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let checked = batch.map_err(|e| classify(e, limits)).and_then(|batch| {
            rows += batch.num_rows();
            bytes += batch
                .columns()
                .iter()
                .map(|column| column.to_data().get_slice_memory_size())
                .sum::<Result<usize, _>>()?;
            if rows > limits.max_rows {
                Err(QueryError::RowLimit {
                    max_rows: limits.max_rows,
                })
            } else if bytes > limits.max_bytes {
                Err(QueryError::ResultTooLarge {
                    limit: human_bytes(limits.max_bytes),
                })
            } else {
                Ok(batch)
            }
        });
        let failed = checked.is_err();
        if sink.send(checked).await.is_err() || failed {
            return;
        }
    }
}

async fn collect_capped(
    mut stream: SendableRecordBatchStream,
    limits: &SqlLimits,
) -> Result<SqlOutput, QueryError> {
    let schema = stream.schema();
    let mut output = SqlOutput::new(schema.fields().iter().map(|f| f.name().clone()).collect());
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| classify(e, limits))?;
        if output.row_count() + batch.num_rows() > limits.max_rows {
            return Err(QueryError::RowLimit {
                max_rows: limits.max_rows,
            });
        }
        append_rows(&batch, &mut output, limits)?;
    }
    Ok(output)
}

/// `n` bytes as `64 MiB`, `1 KiB` or `1000 bytes`.
fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Formats `batch` into `output`, stopping at the first value that takes the
/// answer past the byte cap.
fn append_rows(
    batch: &RecordBatch,
    output: &mut SqlOutput,
    limits: &SqlLimits,
) -> Result<(), QueryError> {
    use std::fmt::Write;

    let too_large = || QueryError::ResultTooLarge {
        limit: human_bytes(limits.max_bytes),
    };
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|array| ArrayFormatter::try_new(array.as_ref(), &options))
        .collect::<Result<_, _>>()
        .map_err(QueryError::from)?;
    // What the answer holds: the column names, each value's text and its end.
    let held = |output: &SqlOutput| {
        output.columns.iter().map(String::len).sum::<usize>()
            + output.text.len()
            + output.ends.len() * std::mem::size_of::<Option<u32>>()
    };
    for row in 0..batch.num_rows() {
        for (array, formatter) in batch.columns().iter().zip(&formatters) {
            let end = if array.is_valid(row) {
                // Written through a cap, so that one huge value stops at the
                // cap instead of being copied whole first.
                let room = limits.max_bytes.saturating_sub(held(output));
                let mut capped = CappedText {
                    text: &mut output.text,
                    room,
                };
                write!(capped, "{}", formatter.value(row)).map_err(|_| too_large())?;
                Some(u32::try_from(output.text.len()).map_err(|_| too_large())?)
            } else {
                None
            };
            output.ends.push(end);
            if held(output) > limits.max_bytes {
                return Err(too_large());
            }
        }
    }
    Ok(())
}

/// Text that refuses to grow by more than `room` bytes.
struct CappedText<'a> {
    text: &'a mut String,
    room: usize,
}

impl std::fmt::Write for CappedText<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.room = self.room.checked_sub(s.len()).ok_or(std::fmt::Error)?;
        self.text.push_str(s);
        Ok(())
    }
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
        assert_eq!(
            message,
            "unknown table; queries may read: closings, invoices, usage_events, usage_hourly, \
             usage_monthly"
        );
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
            "SELECT * FROM datafusion.public.usage_events",
            "SELECT * FROM other.usage_events",
            "SELECT * FROM allot.other.usage_events",
        ] {
            assert!(
                refusal(sql, &Scope::AllTenants).starts_with("unknown table"),
                "{sql}"
            );
        }
        // Qualified as the wire protocols list them, the visible tables only.
        for sql in [
            "SELECT * FROM public.usage_events",
            "SELECT * FROM allot.public.usage_events",
        ] {
            assert!(check_sql(sql, &tenant()).is_ok(), "{sql}");
        }
        assert!(
            refusal("SELECT * FROM allot.public.rejected_events", &tenant())
                .starts_with("unknown table")
        );
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

#[cfg(test)]
mod bombs {
    //! Whole queries on a pool over an empty lake: statements built to crash,
    //! stall or exhaust the process get a clean error, quickly.

    use std::time::Instant;

    use allot_lake::snapshot::TableFiles;
    use allot_schemas::layout::LakeTable;
    use deltalake::logstore::object_store::ObjectStore;
    use deltalake::logstore::object_store::memory::InMemory;
    use proptest::prelude::*;

    use super::*;

    fn empty_lake() -> Arc<LakeSnapshot> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let table = |table| TableFiles {
            table,
            version: Some(0),
            store: Arc::clone(&store),
            files: Vec::new(),
        };
        Arc::new(LakeSnapshot {
            usage: table(LakeTable::UsageEvents),
            rejected: table(LakeTable::RejectedEvents),
            hourly: table(LakeTable::UsageHourly),
            closed: Arc::default(),
        })
    }

    fn limits() -> SqlLimits {
        SqlLimits {
            timeout: Duration::from_secs(10),
            ..SqlLimits::default()
        }
    }

    async fn run(pool: &SqlPool, sql: &str, limits: &SqlLimits) -> Result<SqlOutput, QueryError> {
        pool.run(
            empty_lake(),
            Scope::Tenant("acme".into()),
            sql.to_string(),
            limits.clone(),
        )
        .await
    }

    /// A streamed answer its reader stops taking: at the time limit the query
    /// gives its pool slot back at once, and the reader, when it comes back,
    /// finds the answer ended by the time-limit error, never cut short as if
    /// it were complete.
    #[tokio::test]
    async fn a_stalled_stream_ends_with_its_time_limit_and_frees_the_pool() {
        use futures::StreamExt;

        let pool = SqlPool::new(1).unwrap();
        // Its first batch follows a 10-million-element list: room for that
        // under the load of the other tests running beside it.
        let limits = SqlLimits {
            timeout: Duration::from_secs(8),
            max_rows: usize::MAX,
            max_bytes: usize::MAX,
            ..SqlLimits::default()
        };
        let mut answer = pool
            .stream(
                empty_lake(),
                Scope::Tenant("acme".into()),
                "SELECT n FROM (SELECT unnest(range(0, 10000000)) AS n) t",
                limits.clone(),
            )
            .await
            .expect("the query starts");
        tokio::time::sleep(Duration::from_secs(9)).await;
        // The only slot is free again while the stalled answer is unread.
        let next = run(&pool, "SELECT 1", &limits).await;
        assert!(next.is_ok(), "{next:?}");
        let mut last = None;
        while let Some(item) = answer.next().await {
            last = Some(item);
        }
        assert!(
            matches!(last, Some(Err(QueryError::TimeLimit { .. }))),
            "the answer must end with the time limit, not stop: {last:?}"
        );
    }

    /// The row cap over a streamed answer: the batches up to it, then the
    /// row-limit error.
    #[tokio::test]
    async fn a_streamed_answer_past_the_row_cap_ends_with_its_error() {
        use futures::StreamExt;

        let pool = SqlPool::new(1).unwrap();
        let limits = SqlLimits {
            max_rows: 10_000,
            ..limits()
        };
        let mut answer = pool
            .stream(
                empty_lake(),
                Scope::Tenant("acme".into()),
                "SELECT n FROM (SELECT unnest(range(0, 1000000)) AS n) t",
                limits,
            )
            .await
            .expect("the query starts");
        let (mut rows, mut last) = (0, None);
        while let Some(item) = answer.next().await {
            if let Ok(batch) = &item {
                rows += batch.num_rows();
            }
            last = Some(item);
        }
        assert!(rows <= 10_000, "{rows} rows sent past the cap");
        assert!(
            matches!(last, Some(Err(QueryError::RowLimit { max_rows: 10_000 }))),
            "{last:?}"
        );
    }

    /// The byte cap of a streamed answer counts the rows sent, not the
    /// buffers a sliced batch shares with rows it does not hold: ten rows cut
    /// from a batch of thousands pass a cap the whole batch would break.
    #[tokio::test]
    async fn a_streamed_answer_counts_the_bytes_of_its_rows() {
        use futures::StreamExt;

        let pool = SqlPool::new(1).unwrap();
        let limits = SqlLimits {
            max_bytes: 16 << 10,
            ..limits()
        };
        let answer = |sql: &str| {
            let (pool, limits) = (&pool, limits.clone());
            let sql = sql.to_string();
            async move {
                let mut stream = pool
                    .stream(empty_lake(), Scope::Tenant("acme".into()), sql, limits)
                    .await?;
                let mut rows = 0;
                while let Some(batch) = stream.next().await {
                    rows += batch?.num_rows();
                }
                Ok::<_, QueryError>(rows)
            }
        };
        let numbers = "SELECT n FROM (SELECT unnest(range(0, 100000)) AS n) t";
        assert_eq!(answer(&format!("{numbers} LIMIT 10")).await.unwrap(), 10);
        assert!(matches!(
            answer(numbers).await,
            Err(QueryError::ResultTooLarge { .. })
        ));
    }

    /// `open` `n` times, `middle`, then `close` `n` times.
    fn nest(open: &str, middle: &str, close: &str, n: usize) -> String {
        format!("SELECT {}{middle}{}", open.repeat(n), close.repeat(n))
    }

    #[tokio::test]
    async fn deep_expressions_are_refused_at_any_depth() {
        let pool = SqlPool::new(2).unwrap();
        for n in [1_800, 20_000, 200_000] {
            for sql in [
                format!("SELECT {}1", "1+".repeat(n)),
                format!("SELECT {}value FROM usage_events", "value+".repeat(n)),
                format!("SELECT {}'x'", "'x'||".repeat(n)),
                format!("SELECT {}true", "true AND ".repeat(n)),
                format!("SELECT 1{}", "::bigint".repeat(n)),
                nest("(", "1", ")", n),
                nest("abs(", "1", ")", n),
                nest("-", "1", "", n),
                nest("NOT ", "true", "", n),
                nest("CASE WHEN true THEN ", "1", " END", n),
                nest("CASE WHEN false THEN 0 ELSE ", "1", " END", n),
                nest("(SELECT ", "1", ")", n),
                format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(n)),
            ] {
                let started = Instant::now();
                let answer = run(&pool, &sql, &limits()).await;
                assert!(
                    matches!(answer, Err(QueryError::SqlRejected(_))),
                    "{}…: {answer:?}",
                    &sql[..40]
                );
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{}…",
                    &sql[..40]
                );
            }
        }
        // Under the limits, the same shapes run.
        let sum = run(&pool, &format!("SELECT {}1", "1+".repeat(199)), &limits())
            .await
            .unwrap();
        assert_eq!(sum.rows().collect::<Vec<_>>(), vec![vec![Some("200")]]);
        let nested = run(&pool, &nest("abs(", "-1", ")", 20), &limits())
            .await
            .unwrap();
        assert_eq!(nested.rows().collect::<Vec<_>>(), vec![vec![Some("1")]]);
    }

    #[tokio::test]
    async fn growing_functions_are_refused_before_they_allocate() {
        let pool = SqlPool::new(2).unwrap();
        let doubling = |step: &str, levels: usize| {
            let mut sql = "WITH t0 AS (SELECT repeat('x', 1000000) AS s)".to_string();
            for level in 1..=levels {
                sql.push_str(&format!(
                    ", t{level} AS (SELECT {} AS s FROM t{})",
                    step,
                    level - 1
                ));
            }
            sql + &format!(" SELECT length(s) FROM t{levels}")
        };
        for sql in [
            "SELECT length(repeat('x', 1500000000))".to_string(),
            "SELECT cardinality(range(0, 300000000))".to_string(),
            "SELECT cardinality(generate_series(1, 300000000))".to_string(),
            "SELECT cardinality(range(TIMESTAMP '1970-01-01T00:00:00', TIMESTAMP '2200-01-01T00:00:00', INTERVAL '1 second'))".to_string(),
            "SELECT cardinality(array_repeat(1, 300000000))".to_string(),
            "SELECT cardinality(array_resize([1], 300000000, 7))".to_string(),
            "SELECT length(lpad('x', 1500000000, 'y'))".to_string(),
            "SELECT length(rpad('x', 1500000000))".to_string(),
            "SELECT length(replace(repeat('x', 10000000), 'x', repeat('y', 100)))".to_string(),
            "SELECT length(regexp_replace(repeat('x', 10000000), 'x', repeat('y', 100), 'g'))".to_string(),
            doubling("s || s", 12),
            doubling("concat(s, s)", 12),
            doubling("concat_ws(s, s, s)", 12),
            doubling("encode(s, 'hex')", 12),
            doubling("overlay(s placing s from 1 for 0)", 12),
            doubling("array_to_string([s, s], s)", 12),
        ] {
            let started = Instant::now();
            let answer = run(&pool, &sql, &limits()).await;
            assert!(
                matches!(answer, Err(QueryError::MemoryLimit { .. })),
                "{sql}: {answer:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(5), "{sql}");
        }
        // A memory limit is a limit on everything the query builds.
        let small = SqlLimits {
            memory_bytes: 1 << 20,
            ..limits()
        };
        let answer = run(&pool, "SELECT length(repeat('ab', 1000000))", &small).await;
        assert!(
            matches!(answer, Err(QueryError::MemoryLimit { .. })),
            "{answer:?}"
        );
    }

    #[tokio::test]
    async fn growing_functions_still_answer_within_the_limits() {
        let pool = SqlPool::new(2).unwrap();
        let output = run(
            &pool,
            "SELECT repeat('ab', 3), lpad('x', 3, '-'), rpad('x', 2), cardinality(range(0, 10)), \
             'a' || 'b', 'a' || NULL, concat('a', NULL, 'b'), concat_ws('-', 'a', 'b'), \
             replace('aXa', 'X', 'yy'), regexp_replace('abc', 'b', 'B'), \
             array_to_string(array_repeat('q', 2), ','), cardinality(generate_series(1, 3)), \
             cardinality(generate_series(DATE '2026-01-01', DATE '2026-01-31', INTERVAL '1 day')), \
             encode('ab', 'hex'), length(repeat('x', 1000000))",
            &limits(),
        )
        .await
        .unwrap();
        let row: Vec<Option<&str>> = output.rows().next().unwrap();
        assert_eq!(
            row,
            [
                Some("ababab"),
                Some("--x"),
                Some("x "),
                Some("10"),
                Some("ab"),
                None,
                Some("ab"),
                Some("a-b"),
                Some("ayya"),
                Some("aBc"),
                Some("q,q"),
                Some("3"),
                Some("31"),
                Some("6162"),
                Some("1000000"),
            ]
        );
        // `||` keeps its column name.
        let named = run(&pool, "SELECT 'a' || 'b'", &limits()).await.unwrap();
        assert_eq!(named.columns, ["Utf8(\"a\") || Utf8(\"b\")"]);
    }

    #[tokio::test]
    async fn a_result_is_capped_in_bytes_as_well_as_rows() {
        let pool = SqlPool::new(1).unwrap();
        let capped = SqlLimits {
            max_bytes: 10 << 10,
            ..limits()
        };
        let answer = run(&pool, "SELECT repeat('x', 20000)", &capped).await;
        assert!(
            matches!(&answer, Err(QueryError::ResultTooLarge { limit }) if limit == "10 KiB"),
            "{answer:?}"
        );
        let answer = run(&pool, "SELECT unnest(range(0, 5000)) AS n", &capped).await;
        assert!(
            matches!(answer, Err(QueryError::ResultTooLarge { .. })),
            "{answer:?}"
        );
        let fits = run(&pool, "SELECT unnest(range(0, 500)) AS n", &capped)
            .await
            .unwrap();
        assert_eq!(fits.row_count(), 500);
    }

    #[tokio::test]
    async fn the_time_limit_stops_the_work_and_frees_the_pool() {
        let pool = SqlPool::new(1).unwrap();
        let endless = "SELECT count(*) FROM (SELECT unnest(range(0, 1000000)) AS a) x \
                       CROSS JOIN (SELECT unnest(range(0, 1000000)) AS b) y";
        let short = SqlLimits {
            timeout: Duration::from_secs(1),
            ..limits()
        };
        let started = Instant::now();
        let answer = run(&pool, endless, &short).await;
        assert!(
            matches!(answer, Err(QueryError::TimeLimit { .. })),
            "{answer:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // The one thread is free again: the aborted query no longer runs.
        let started = Instant::now();
        let next = run(&pool, "SELECT 1", &short).await;
        assert!(next.is_ok(), "{next:?}");
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    /// One way to wrap an expression: recursive in the parser (parentheses,
    /// calls, prefixes) or iterative (operator chains, casts).
    fn wrap(expr: String, how: u8) -> String {
        match how % 10 {
            0 => format!("({expr})"),
            1 => format!("abs({expr})"),
            2 => format!("-{expr}"),
            3 => format!("{expr} + 1"),
            4 => format!("{expr} * value"),
            5 => format!("CASE WHEN value > 0 THEN {expr} ELSE 0 END"),
            6 => format!("{expr}::bigint"),
            7 => format!("coalesce({expr}, 1, 2)"),
            8 => format!("length(repeat('x', {expr}))"),
            _ => format!("(SELECT {expr})"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Deep and wide expressions of every shape: an answer or a clean
        /// error, never a crash (which would abort this test binary).
        #[test]
        fn any_expression_gets_an_answer_or_a_clean_error(
            shape in proptest::collection::vec(any::<u8>(), 0..3_000),
            width in 1usize..400,
        ) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let pool = SqlPool::new(2).unwrap();
            let expr = shape.iter().fold("1".to_string(), |expr, how| wrap(expr, *how));
            let columns = vec![expr; width].join(", ");
            let sql = format!("SELECT {columns} FROM usage_events");
            let answer = runtime.block_on(run(&pool, &sql, &limits()));
            prop_assert!(
                matches!(
                    answer,
                    Ok(_) | Err(QueryError::SqlRejected(_)) | Err(QueryError::MemoryLimit { .. })
                ),
                "{answer:?}"
            );
            drop(pool);
        }
    }
}
