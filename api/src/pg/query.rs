//! Statements over the PostgreSQL wire, in the simple and the extended
//! protocol: session commands answered by the [`Session`], every other
//! statement run on the server's SQL pool in the session's sandbox scope,
//! with PostgreSQL's catalogs ([`Catalogs::Postgres`]), the same statement
//! check, limits, per-caller SQL slots and rate limit as `POST /v1/sql`, and
//! the session's `statement_timeout` when shorter.
//!
//! A statement's parameters are decoded by their declared type and format
//! and bound into the plan as values ([`SqlRequest::parameters`]), never
//! spliced into its text. An answer streams as the engine makes it; the
//! caller's SQL slot is held until its last row is sent. A cancel request
//! stops the statement at once, whether it is still planning, waiting for
//! its first rows or streaming.

use std::fmt::Debug;
use std::sync::Arc;

use allot_query::QueryError;
use allot_query::sandbox::{Catalogs, SqlRequest, SqlStream};
use arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use futures::{Sink, Stream, StreamExt, stream};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_partial_query_response};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, DescribePortalResponse, DescribeResponse,
    DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, PgWireConnectionState, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Execute;
use tokio::sync::watch;

use super::encode::{self, wire_type};
use super::session::{Command, CopyFormat, Session, command};
use super::{PG, PG_BYTES, PG_STATEMENTS, error};
use crate::error::ApiError;
use crate::state::AppState;
use tokio::sync::OwnedSemaphorePermit;

/// The audit log's `path` of a refused statement.
const STATEMENT: &str = "statement";

/// The statements of every connection.
pub(super) struct Queries {
    state: AppState,
    parser: Arc<Parser>,
}

impl Queries {
    pub(super) fn new(state: AppState) -> Queries {
        Queries {
            state,
            parser: Arc::new(Parser),
        }
    }

    /// Answers `sql` with `parameters` in `session`, its columns in
    /// `format`.
    async fn answer(
        &self,
        session: &Session,
        sql: &str,
        parameters: Vec<ScalarValue>,
        format: &Format,
    ) -> PgWireResult<Response> {
        Ok(match command(sql) {
            Command::Set { name, value } => {
                session
                    .set(&name, &value, self.state.sql_limits.timeout)
                    .map_err(|rule| error("42501", rule))?;
                Response::Execution(Tag::new("SET"))
            }
            Command::Show(name) => {
                let value = session.show(&name).ok_or_else(|| {
                    error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                let fields = Arc::new(vec![show_field(&name, format.format_for(0))]);
                let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
                encoder.encode_field(&value)?;
                let row = encoder.take_row();
                Response::Query(QueryResponse::new(fields, stream::iter([Ok(row)])))
            }
            Command::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Command::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Command::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Command::Nothing(tag) => Response::Execution(Tag::new(tag)),
            Command::Unsupported(rule) => return Err(error("0A000", rule)),
            Command::Query => counted(self.run(session, sql, parameters, format).await)?,
            Command::CopyOut { query, format } => {
                counted(self.copy_out(session, &query, format).await)?
            }
        })
    }

    /// Runs `sql` in the session's sandbox and streams its answer as rows,
    /// each column in `format`.
    async fn run(
        &self,
        session: &Session,
        sql: &str,
        parameters: Vec<ScalarValue>,
        format: &Format,
    ) -> PgWireResult<Response> {
        let answer = self.start(session, sql, parameters).await?;
        let fields = Arc::new(encode::fields(&answer.answer.schema, |i| {
            format.format_for(i)
        }));
        let row_fields = Arc::clone(&fields);
        let rows = answer.batches().flat_map(move |batch| {
            let encoded = batch.and_then(|batch| {
                let (rows, bytes) = encode::rows(&batch, &row_fields)?;
                metrics::counter!(PG_BYTES).increment(bytes as u64);
                Ok(rows)
            });
            stream::iter(match encoded {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(failure) => vec![Err(failure)],
            })
        });
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// Runs `query` in the session's sandbox and streams its answer as the
    /// data of `COPY … TO STDOUT` in `format`.
    async fn copy_out(
        &self,
        session: &Session,
        query: &str,
        format: CopyFormat,
    ) -> PgWireResult<Response> {
        let answer = self.start(session, query, Vec::new()).await?;
        let encoder = encode::CopyRows::new(&answer.answer.schema, format);
        let columns = answer.answer.schema.fields().len();
        let batches = Box::pin(answer.batches());
        let data = stream::unfold(Some((batches, encoder)), |state| async move {
            let (mut batches, mut encoder) = state?;
            match batches.next().await {
                Some(Ok(batch)) => match encoder.encode(&batch) {
                    Ok(messages) => {
                        let bytes: usize = messages.iter().map(|m| m.data.len()).sum();
                        metrics::counter!(PG_BYTES).increment(bytes as u64);
                        let messages = messages.into_iter().map(Ok).collect();
                        Some((messages, Some((batches, encoder))))
                    }
                    Err(failure) => Some((vec![Err(failure)], None)),
                },
                Some(Err(failure)) => Some((vec![Err(failure)], None)),
                None => encoder.finish().map(|last| (vec![Ok(last)], None)),
            }
        })
        .flat_map(stream::iter);
        // Made as text and then marked binary when it is: `CopyResponse`
        // would send binary's trailer as a message of its own, which clients
        // that read the signature and the first row from one message (the
        // ADBC driver) do not take; `CopyRows` frames it instead.
        let mut response = CopyResponse::new(0, columns, data);
        response.format = match format {
            CopyFormat::Binary => 1,
            CopyFormat::Text | CopyFormat::Csv { .. } => 0,
        };
        Ok(Response::CopyOut(response))
    }

    /// Starts `sql` with `parameters` in the session's sandbox, within the
    /// caller's rate limit and SQL slots and the session's time limit, and
    /// waits for its first rows, so that a statement that fails before
    /// answering (a limit, most often) fails cleanly.
    async fn start(
        &self,
        session: &Session,
        sql: &str,
        parameters: Vec<ScalarValue>,
    ) -> PgWireResult<Answer> {
        let principal = &session.principal;
        PG.within_rate(&self.state, principal, STATEMENT)
            .map_err(api_error)?;
        let slot = self
            .state
            .sql_slots
            .try_acquire(&principal.limit_key())
            .ok_or_else(|| api_error(ApiError::SqlBusy))?;
        let served = self.state.served().await.map_err(api_error)?;
        let mut limits = self.state.sql_limits.clone();
        limits.timeout = session.time_limit(limits.timeout);
        let request = SqlRequest {
            sql: sql.to_string(),
            parameters,
            catalogs: Catalogs::Postgres,
        };
        let mut cancel = session.cancel_signal();
        let started = async {
            let mut answer = self
                .state
                .sql_pool
                .stream(
                    Arc::clone(&served.snapshot),
                    session.scope.clone(),
                    request,
                    limits,
                )
                .await?;
            let first = answer.next().await.transpose()?;
            Ok::<_, QueryError>((answer, first))
        };
        let (answer, first) = tokio::select! {
            started = started => started.map_err(sql_error)?,
            () = cancelled(&mut cancel) => return Err(canceled()),
        };
        Ok(Answer {
            first,
            answer,
            cancel,
            _slot: slot,
        })
    }

    /// The columns and parameter types of `sql` in `session`.
    async fn describe(
        &self,
        session: &Session,
        sql: &str,
        declared: &[Option<Type>],
        format: impl Fn(usize) -> FieldFormat,
    ) -> PgWireResult<(Vec<Type>, Vec<FieldInfo>)> {
        match command(sql) {
            Command::Show(name) => return Ok((vec![], vec![show_field(&name, format(0))])),
            Command::Query => {}
            _ => return Ok((vec![], vec![])),
        }
        let served = self.state.served().await.map_err(api_error)?;
        let request = SqlRequest {
            sql: sql.to_string(),
            parameters: Vec::new(),
            catalogs: Catalogs::Postgres,
        };
        let described = self
            .state
            .sql_pool
            .describe(
                Arc::clone(&served.snapshot),
                session.scope.clone(),
                request,
                self.state.sql_limits.clone(),
            )
            .await
            .map_err(sql_error)?;
        let count = declared.len().max(described.parameters.len());
        let parameters =
            (0..count)
                .map(|i| {
                    declared
                        .get(i)
                        .cloned()
                        .flatten()
                        .filter(|t| *t != Type::UNKNOWN)
                        .or_else(|| {
                            described.parameters.get(i).cloned().flatten().map(|t| {
                                wire_type(allot_query::sandbox::pg_catalog::pg_type_of(&t))
                            })
                        })
                        .unwrap_or(Type::TEXT)
                })
                .collect();
        Ok((parameters, encode::fields(&described.schema, format)))
    }
}

/// `started`, counted as a statement that started (`ok`) or not (`error`).
fn counted(started: PgWireResult<Response>) -> PgWireResult<Response> {
    let outcome = if started.is_ok() { "ok" } else { "error" };
    metrics::counter!(PG_STATEMENTS, "outcome" => outcome).increment(1);
    started
}

/// The column `SHOW name` answers with.
fn show_field(name: &str, format: FieldFormat) -> FieldInfo {
    FieldInfo::new(name.to_string(), None, None, Type::TEXT, format)
}

/// The session of a logged-in connection.
fn session_of<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| error("08P01", "the connection has not logged in"))
}

/// Resolves when the connection is sent a cancel request (never, without a
/// cancel signal).
async fn cancelled(signal: &mut Option<watch::Receiver<u64>>) {
    match signal {
        Some(signal) => {
            if signal.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The error of a cancelled statement.
fn canceled() -> PgWireError {
    error("57014", "canceling statement due to user request")
}

/// The wire error of an API refusal.
fn api_error(refusal: ApiError) -> PgWireError {
    let code = match refusal {
        ApiError::Query(failure) => return sql_error(failure),
        ApiError::RateLimited { .. } | ApiError::SqlBusy => "53400",
        ApiError::Forbidden => "42501",
        ApiError::NotReady(_) => "57P03",
        _ => "XX000",
    };
    error(code, refusal.parts().message.into_owned())
}

/// The wire error of a statement's failure: the rule it broke or the limit
/// it reached, with the message `POST /v1/sql` gives.
fn sql_error(failure: QueryError) -> PgWireError {
    let code = match &failure {
        QueryError::SqlRejected(_) => "42000",
        QueryError::TimeLimit { .. } => "57014",
        QueryError::MemoryLimit { .. } => "53200",
        QueryError::RowLimit { .. } | QueryError::ResultTooLarge { .. } => "54000",
        _ => "XX000",
    };
    error(code, ApiError::Query(failure).parts().message.into_owned())
}

/// A statement's answer on its way to the client.
struct Answer {
    first: Option<RecordBatch>,
    answer: SqlStream,
    cancel: Option<watch::Receiver<u64>>,
    /// The caller's SQL slot, held until the last row is sent.
    _slot: OwnedSemaphorePermit,
}

/// The most rows of an answer encoded at once. The engine may answer a scan
/// in batches of hundreds of thousands of rows, and a row reaches the client
/// only once the rows encoded with it are: slices this small let the first
/// row leave at once and bound the encoded rows held in memory.
const ROWS_PER_SLICE: usize = 1024;

impl Answer {
    /// Its batches, in slices of at most [`ROWS_PER_SLICE`] rows, ended by
    /// the statement's failure or a cancel request.
    fn batches(self) -> impl Stream<Item = PgWireResult<RecordBatch>> + Send + 'static {
        self.whole_batches().flat_map(|batch| {
            stream::iter(match batch {
                Ok(batch) => (0..batch.num_rows())
                    .step_by(ROWS_PER_SLICE)
                    .map(|start| {
                        Ok(batch.slice(start, ROWS_PER_SLICE.min(batch.num_rows() - start)))
                    })
                    .collect(),
                Err(failure) => vec![Err(failure)],
            })
        })
    }

    /// Its batches as the engine makes them, ended by the statement's failure
    /// or a cancel request.
    fn whole_batches(self) -> impl Stream<Item = PgWireResult<RecordBatch>> + Send + 'static {
        stream::unfold(Some(self), |answer| async move {
            let mut answer = answer?;
            let next = match answer.first.take() {
                Some(first) => Some(Ok(first)),
                None => tokio::select! {
                    batch = answer.answer.next() => batch,
                    () = cancelled(&mut answer.cancel) => {
                        metrics::counter!(PG_STATEMENTS, "outcome" => "failed").increment(1);
                        return Some((Err(canceled()), None));
                    }
                },
            };
            match next? {
                Ok(batch) => Some((Ok(batch), Some(answer))),
                Err(failure) => {
                    metrics::counter!(PG_STATEMENTS, "outcome" => "failed").increment(1);
                    Some((Err(sql_error(failure)), None))
                }
            }
        })
    }
}

/// Statements are kept as their text: each is checked and planned when it
/// is described or run.
#[derive(Debug)]
pub(super) struct Parser;

#[async_trait::async_trait]
impl QueryParser for Parser {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<String>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(Some(sql.to_string()))
    }

    fn get_parameter_types(&self, _statement: &String) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        _statement: &String,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(Vec::new())
    }
}

#[async_trait::async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let answer = self
            .answer(&session, query, Vec::new(), &Format::UnifiedText)
            .await?;
        Ok(vec![answer])
    }
}

#[async_trait::async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = String;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    /// An `Execute` of a query without a row limit (what psycopg, JDBC and
    /// most drivers send) streams its answer as the simple protocol does.
    /// pgwire's default gathers every row of such an answer before sending
    /// the first, which held a tenant's month back for seconds and in memory.
    /// A row limit, a portal already started or a statement that is not a
    /// query takes the default.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal))
                if message.max_rows == 0
                    && matches!(command(&portal.statement.statement), Command::Query)
                    && matches!(*portal.state.lock().await, PortalExecutionState::Initial) =>
            {
                portal
            }
            _ => return self._on_execute(client, message).await,
        };
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let answer = ExtendedQueryHandler::do_query(self, client, &portal, 0).await?;
        if let Response::Query(mut answer) = answer {
            send_partial_query_response(client, &mut answer, 0).await?;
        }
        // Executed again, the portal answers no more rows, as PostgreSQL's do.
        *portal.state.lock().await = PortalExecutionState::Finished;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<String>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let declared = &portal.statement.parameter_types;
        let parameters = portal
            .parameters
            .iter()
            .enumerate()
            .map(|(index, value)| {
                encode::parameter(
                    value.as_deref(),
                    declared.get(index).and_then(Option::as_ref),
                    portal.parameter_format.is_binary(index),
                )
                .map_err(|problem| error("22P02", format!("parameter ${}: {problem}", index + 1)))
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        self.answer(
            &session,
            &portal.statement.statement,
            parameters,
            &portal.result_column_format,
        )
        .await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let (parameters, fields) = self
            .describe(&session, &target.statement, &target.parameter_types, |_| {
                FieldFormat::Text
            })
            .await?;
        if parameters.is_empty() && fields.is_empty() {
            return Ok(DescribeStatementResponse::no_data());
        }
        Ok(DescribeStatementResponse::new(parameters, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let format = &portal.result_column_format;
        let (_, fields) = self
            .describe(
                &session,
                &portal.statement.statement,
                &portal.statement.parameter_types,
                |i| format.format_for(i),
            )
            .await?;
        if fields.is_empty() {
            return Ok(DescribePortalResponse::no_data());
        }
        Ok(DescribePortalResponse::new(fields))
    }
}
