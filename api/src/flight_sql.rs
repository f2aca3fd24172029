//! Arrow Flight SQL on `api.flight_sql_listen` (docs/reference.md#sql-over-the-wire):
//! the sandboxed SQL of `POST /v1/sql`, for the tools analysts already use
//! (ADBC in Python or R, JDBC and ODBC drivers, the Flight SQL CLI).
//!
//! Every call carries the caller's allot token, as `authorization: Bearer
//! <token>`; drivers that only do the Flight handshake send it as the
//! password of basic auth (any user name) and get it back as their bearer
//! token. A statement is planned and run on the server's [`SqlPool`] in the
//! caller's scope with the same statement check, limits, per-caller SQL slots
//! and rate limit as `POST /v1/sql`; refused tokens are audited like the HTTP
//! API's. Answers stream to the client as the engine makes them (the pool's
//! slot is held until the last batch is sent or the client goes away).
//!
//! A statement's handle (in a ticket, or a prepared statement's) is its SQL
//! text, and once a client has bound parameter values (`DoPut`), those
//! values too ([`Handle`]): it is planned again under the token of whoever
//! redeems it, so a handle carries no authority of its own. Catalog calls list the tables the
//! caller may query, in the catalog `allot` and schema `public`, under which
//! queries may also name them.
//!
//! [`SqlPool`]: allot_query::sandbox::SqlPool

use std::pin::Pin;
use std::sync::Arc;

use allot_lake::session::{SQL_CATALOG, SQL_SCHEMA, Scope};
use allot_query::QueryError;
use allot_query::sandbox::{Described, SqlRequest, visible_tables};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, Nullable,
    ProstMessageExt, Searchable, SqlInfo, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Principal;
use crate::error::{ApiError, AuthFailure};
use crate::state::AppState;
use crate::tls::ALPN_H2;
use crate::wire::{self, Wire};

/// What a Flight call answers with: a stream of Arrow data.
type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Statements over Flight SQL, by `outcome`: `ok` (its answer started),
/// `error` (refused by the sandbox, or failed before its answer started, when
/// planned or when run), `failed` (its answer ended by an error after it
/// started, a limit most often).
pub const FLIGHT_STATEMENTS: &str = "allot_flight_sql_statements_total";

/// Bytes of Arrow data sent over Flight SQL.
pub const FLIGHT_BYTES: &str = "allot_flight_sql_bytes_sent_total";

/// Flight SQL calls refused before they ran (bad or missing token, finance
/// running SQL, rate limit), by the HTTP `status` the same refusal has.
pub const FLIGHT_REFUSED: &str = "allot_flight_sql_refused_total";

/// Flight SQL as a wire: its audit method and refusal counter.
const FLIGHT: Wire = Wire {
    method: "FLIGHT",
    refused_metric: FLIGHT_REFUSED,
};

/// The table type every table of the sandbox has.
const TABLE_TYPE: &str = "TABLE";

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve_flight_sql(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = state.tls.as_ref().map(|tls| tls.acceptor(&[ALPN_H2]));
    let handshake_timeout = state.connection_limits.header_read;
    let server = tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(FlightSql { state }));
    match tls {
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(acceptor) => {
            let incoming =
                crate::tls::incoming(listener, acceptor, handshake_timeout).map_ok(TlsConnection);
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
    .map_err(std::io::Error::other)
}

/// A TLS connection as gRPC takes it: with its peer's address, which the
/// anonymous rate limit keys on.
struct TlsConnection(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The Flight SQL service over the server's state.
#[derive(Clone)]
pub struct FlightSql {
    state: AppState,
}

impl FlightSql {
    /// The caller of a call, from its bearer token (or basic auth with the
    /// token as password), within its rate limit. A refusal is audited.
    fn caller(&self, call: &Call<'_>) -> Result<Principal, Status> {
        let token = token_of(call.metadata);
        let wired = wire::Call {
            token: token.as_deref().map_err(|failure| *failure),
            peer: call.peer,
            name: call.name,
        };
        FLIGHT.caller(&self.state, &wired).map_err(status_of)
    }

    /// The sandbox scope of the caller's SQL, as for `POST /v1/sql`.
    fn scope(&self, call: &Call<'_>) -> Result<(Principal, Scope), Status> {
        let principal = self.caller(call)?;
        let scope = FLIGHT
            .sql_scope(&self.state, &principal, call.name)
            .map_err(status_of)?;
        Ok((principal, scope))
    }

    /// The columns and parameters of `request` for the caller.
    async fn described(&self, call: &Call<'_>, request: SqlRequest) -> Result<Described, Status> {
        let (_, scope) = self.scope(call)?;
        let planned = self.describe(scope, request).await;
        if planned.is_err() {
            metrics::counter!(FLIGHT_STATEMENTS, "outcome" => "error").increment(1);
        }
        planned
    }

    /// The columns and parameters of `request` in `scope`, planned on the
    /// pool.
    async fn describe(&self, scope: Scope, request: SqlRequest) -> Result<Described, Status> {
        let served = self.state.served().await.map_err(status_of)?;
        self.state
            .sql_pool
            .describe(
                Arc::clone(&served.snapshot),
                scope,
                request,
                self.state.sql_limits.clone(),
            )
            .await
            .map_err(|e| status_of(ApiError::Query(e)))
    }

    /// Runs `request` for the caller and streams its answer.
    async fn run(
        &self,
        call: &Call<'_>,
        request: SqlRequest,
    ) -> Result<Response<DataStream>, Status> {
        let (principal, scope) = self.scope(call)?;
        let started = self.start(principal, scope, request).await;
        let outcome = if started.is_ok() { "ok" } else { "error" };
        metrics::counter!(FLIGHT_STATEMENTS, "outcome" => outcome).increment(1);
        started
    }

    /// Starts `request` in `scope` for `principal`; see [`run`](Self::run).
    async fn start(
        &self,
        principal: Principal,
        scope: Scope,
        request: SqlRequest,
    ) -> Result<Response<DataStream>, Status> {
        let slot = self
            .state
            .sql_slots
            .try_acquire(&principal.limit_key())
            .ok_or_else(|| status_of(ApiError::SqlBusy))?;
        let served = self.state.served().await.map_err(status_of)?;
        let answer = self
            .state
            .sql_pool
            .stream(
                Arc::clone(&served.snapshot),
                scope,
                request,
                self.state.sql_limits.clone(),
            )
            .await
            .map_err(|e| status_of(ApiError::Query(e)))?;
        let schema = Arc::clone(&answer.schema);
        let batches = answer
            .map_err(|e: QueryError| FlightError::Tonic(Box::new(status_of(ApiError::Query(e)))));
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(flight_status)
            // The caller's SQL slot is held until the answer is sent.
            .map(move |data| {
                let _slot = &slot;
                match &data {
                    Ok(sent) => metrics::counter!(FLIGHT_BYTES)
                        .increment((sent.data_header.len() + sent.data_body.len()) as u64),
                    Err(_) => {
                        metrics::counter!(FLIGHT_STATEMENTS, "outcome" => "failed").increment(1)
                    }
                }
                data
            });
        Ok(Response::new(Box::pin(data)))
    }

    /// The tables the caller may query, each with its columns.
    async fn tables_for(&self, call: &Call<'_>) -> Result<Vec<(&'static str, Schema)>, Status> {
        let (_, scope) = self.scope(call)?;
        let names = visible_tables(&scope);
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            let sql = format!("SELECT * FROM {name} LIMIT 0");
            let described = self.describe(scope.clone(), sql.into()).await?;
            tables.push((name, described.schema.as_ref().clone()));
        }
        Ok(tables)
    }
}

/// What authenticating a call needs: its headers, its peer's address and the
/// call's name (for the audit log).
struct Call<'a> {
    metadata: &'a MetadataMap,
    peer: Option<std::net::IpAddr>,
    name: &'static str,
}

/// The [`Call`] of `request`, named `name`.
fn call<'a, T>(request: &'a Request<T>, name: &'static str) -> Call<'a> {
    Call {
        metadata: request.metadata(),
        peer: request.remote_addr().map(|address| address.ip()),
        name,
    }
}

/// The token of a call: `authorization: Bearer <token>`, or basic auth with
/// the token as password.
fn token_of(metadata: &MetadataMap) -> Result<String, AuthFailure> {
    let value = metadata
        .get("authorization")
        .ok_or(AuthFailure::MissingToken)?
        .to_str()
        .map_err(|_| AuthFailure::Malformed)?;
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty() {
        return Ok(credentials.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .map_err(|_| AuthFailure::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthFailure::Malformed)?;
        let (_, password) = text.split_once(':').ok_or(AuthFailure::Malformed)?;
        if !password.is_empty() {
            return Ok(password.to_string());
        }
    }
    Err(AuthFailure::Malformed)
}

/// The gRPC status of an API error, with the message the HTTP API gives.
fn status_of(error: ApiError) -> Status {
    let parts = error.parts();
    let message = parts.message.into_owned();
    match parts.status.as_u16() {
        400 | 413 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        408 => Status::deadline_exceeded(message),
        429 => Status::resource_exhausted(message),
        503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// The status of an error while encoding an answer.
fn flight_status(error: FlightError) -> Status {
    match error {
        FlightError::Tonic(status) => *status,
        other => Status::internal(other.to_string()),
    }
}

/// What a statement's handle holds: its SQL and, once a client has bound
/// them with `DoPut`, its parameters' values (one row, `$1` first).
///
/// Without parameters a handle is the SQL's text. With them, it is a zero
/// byte, the SQL's length in bytes (u32, big-endian), the SQL, and the
/// values as an Arrow IPC stream of one row. Whoever redeems a handle is
/// authenticated again and the statement planned in their scope, so a
/// handle a client forges grants nothing a statement would not.
struct Handle;

impl Handle {
    /// The handle of `sql` with `parameters` (an Arrow IPC stream), if any.
    fn encode(sql: &str, parameters: Option<&[u8]>) -> Result<Vec<u8>, Status> {
        let Some(parameters) = parameters else {
            return Ok(sql.as_bytes().to_vec());
        };
        let length = u32::try_from(sql.len())
            .map_err(|_| Status::invalid_argument("the statement is too long"))?;
        let mut handle = Vec::with_capacity(5 + sql.len() + parameters.len());
        handle.push(0);
        handle.extend_from_slice(&length.to_be_bytes());
        handle.extend_from_slice(sql.as_bytes());
        handle.extend_from_slice(parameters);
        Ok(handle)
    }

    /// The SQL and the parameter values (an Arrow IPC stream) of `handle`.
    fn split(handle: &[u8]) -> Result<(String, Option<&[u8]>), Status> {
        let foreign =
            || Status::invalid_argument("the statement handle is not one this server gave");
        let (sql, parameters) = match handle {
            [0, rest @ ..] => {
                let (length, rest) = rest.split_first_chunk::<4>().ok_or_else(foreign)?;
                let length = u32::from_be_bytes(*length) as usize;
                if rest.len() < length {
                    return Err(foreign());
                }
                let (sql, parameters) = rest.split_at(length);
                (sql, Some(parameters))
            }
            sql => (sql, None),
        };
        let sql = String::from_utf8(sql.to_vec()).map_err(|_| foreign())?;
        Ok((sql, parameters))
    }

    /// The statement `handle` names, with its parameters' values.
    fn request(handle: &[u8]) -> Result<SqlRequest, Status> {
        let (sql, parameters) = Handle::split(handle)?;
        let parameters = match parameters {
            Some(ipc) => parameter_values(ipc)?,
            None => Vec::new(),
        };
        Ok(SqlRequest {
            parameters,
            ..SqlRequest::from(sql)
        })
    }
}

/// The values of the one-row Arrow IPC stream `ipc`, `$1` first.
fn parameter_values(ipc: &[u8]) -> Result<Vec<ScalarValue>, Status> {
    let bad = |e: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("the parameter values are not Arrow IPC: {e}"))
    };
    let reader = StreamReader::try_new(std::io::Cursor::new(ipc), None).map_err(|e| bad(&e))?;
    let mut values = None;
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        if batch.num_rows() > 1 || values.is_some() {
            return Err(Status::invalid_argument(
                "bind one row of parameter values: a query runs once per execution",
            ));
        }
        values = Some(
            batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?,
        );
    }
    Ok(values.unwrap_or_default())
}

/// `schema` as the IPC message Flight SQL carries schemas in.
fn schema_ipc(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let options = IpcWriteOptions::default();
    let IpcMessage(message) = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message)
}

fn info_for(
    command: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The server's `GetSqlInfo` answers.
fn sql_info() -> Result<SqlInfoData, Status> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "allot");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
    builder.append(SqlInfo::FlightSqlServerCancel, false);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.build().map_err(|e| Status::internal(e.to_string()))
}

/// The SQL types the sandbox's tables and answers use, for `GetXdbcTypeInfo`
/// (the JDBC and ODBC drivers' type listing).
fn xdbc_types() -> Result<XdbcTypeInfoData, Status> {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    for (name, data_type, size, prefix, scale) in [
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None, None),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(32), None, None),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(64), None, None),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), None, None),
        (
            "DECIMAL",
            XdbcDataType::XdbcDecimal,
            Some(38),
            None,
            Some(38),
        ),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, Some("'"), None),
        ("VARBINARY", XdbcDataType::XdbcVarbinary, None, None, None),
        (
            "DATE",
            XdbcDataType::XdbcDate,
            Some(10),
            Some("DATE '"),
            None,
        ),
        (
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            Some(32),
            Some("TIMESTAMP '"),
            None,
        ),
    ] {
        let numeric = matches!(
            data_type,
            XdbcDataType::XdbcInteger
                | XdbcDataType::XdbcBigint
                | XdbcDataType::XdbcDouble
                | XdbcDataType::XdbcDecimal
        );
        builder.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: size,
            literal_prefix: prefix.map(Into::into),
            literal_suffix: prefix.map(|_| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: data_type == XdbcDataType::XdbcVarchar,
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: data_type == XdbcDataType::XdbcDecimal,
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.into()),
            minimum_scale: scale.map(|_| 0),
            maximum_scale: scale,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: numeric.then_some(10),
            interval_precision: None,
        });
    }
    builder.build().map_err(|e| Status::internal(e.to_string()))
}

/// An answer of one batch (a catalog call's), encoded for Flight.
fn one_batch(
    batch: Result<arrow::array::RecordBatch, impl std::fmt::Display>,
) -> Result<Response<DataStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let data = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async move { Ok(batch) }))
        .map_err(flight_status);
    Ok(Response::new(Box::pin(data)))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        self.caller(&call(&request, "Handshake"))?;
        let token = token_of(request.metadata()).map_err(|_| Status::unauthenticated(""))?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::unauthenticated("the token is not valid header text"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let described = self
            .described(&call(&request, "GetFlightInfo"), query.query.clone().into())
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        info_for(ticket, &described.schema, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        let statement = Handle::request(&ticket.statement_handle)?;
        self.run(&call(&request, "DoGet"), statement).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let described = self
            .described(
                &call(&request, "CreatePreparedStatement"),
                query.query.clone().into(),
            )
            .await?;
        let parameters = Schema::new(
            described
                .parameters
                .iter()
                .enumerate()
                .map(|(index, data_type)| {
                    let data_type = data_type.clone().unwrap_or(DataType::Utf8);
                    Field::new(format!("${}", index + 1), data_type, true)
                })
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: schema_ipc(&described.schema)?,
            parameter_schema: schema_ipc(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // A handle holds nothing on the server: closing it frees nothing.
        self.caller(&call(&request, "ClosePreparedStatement"))?;
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = Handle::request(&command.prepared_statement_handle)?;
        let described = self
            .described(&call(&request, "GetFlightInfo"), statement)
            .await?;
        info_for(command, &described.schema, request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        let statement = Handle::request(&command.prepared_statement_handle)?;
        self.run(&call(&request, "DoGet"), statement).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.caller(&call(&request, "DoPut"))?;
        let (sql, _) = Handle::split(&command.prepared_statement_handle)?;
        // The values are read within the request body's cap, then kept as
        // the IPC stream they arrive as.
        let most = self.state.settings.config.api.max_body.0;
        let mut received = 0_u64;
        let mut batches = Vec::new();
        let mut stream = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(flight_status)?;
            received += batch.get_array_memory_size() as u64;
            if received > most {
                return Err(Status::invalid_argument(format!(
                    "the parameter values exceed {most} bytes (api.max_body)"
                )));
            }
            batches.push(batch);
        }
        let mut ipc = Vec::new();
        if let Some(first) = batches.first() {
            let mut writer = StreamWriter::try_new(&mut ipc, &first.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
            for batch in &batches {
                writer
                    .write(batch)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            writer
                .finish()
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        // Checked now, so a bad binding fails at DoPut rather than later.
        parameter_values(&ipc)?;
        let parameters = (!ipc.is_empty()).then_some(ipc.as_slice());
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(Handle::encode(&sql, parameters)?.into()),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&call(&request, "GetCatalogs"))?;
        let schema = query.into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.caller(&call(&request, "GetCatalogs"))?;
        let mut builder = query.into_builder();
        builder.append(SQL_CATALOG);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&call(&request, "GetDbSchemas"))?;
        let schema = query.clone().into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.caller(&call(&request, "GetDbSchemas"))?;
        let mut builder = query.into_builder();
        builder.append(SQL_CATALOG, SQL_SCHEMA);
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&call(&request, "GetTables"))?;
        let schema = query.clone().into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        let tables = self.tables_for(&call(&request, "GetTables")).await?;
        let mut builder = query.into_builder();
        for (table, schema) in &tables {
            builder
                .append(SQL_CATALOG, SQL_SCHEMA, *table, TABLE_TYPE, schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&call(&request, "GetTableTypes"))?;
        let schema = table_types()
            .map_err(|e| Status::internal(e.to_string()))?
            .schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.caller(&call(&request, "GetTableTypes"))?;
        one_batch(table_types())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&call(&request, "GetSqlInfo"))?;
        let info = sql_info()?;
        let schema = query.clone().into_builder(&info).schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.caller(&call(&request, "GetSqlInfo"))?;
        let info = sql_info()?;
        one_batch(query.into_builder(&info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&call(&request, "GetXdbcTypeInfo"))?;
        let types = xdbc_types()?;
        let schema = query.into_builder(&types).schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.caller(&call(&request, "GetXdbcTypeInfo"))?;
        let types = xdbc_types()?;
        one_batch(query.into_builder(&types).build())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&call(&request, "DoGet"))?;
        Err(Status::unimplemented(format!(
            "{} is not supported",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The one table type the sandbox has.
fn table_types() -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        "table_type",
        arrow::datatypes::DataType::Utf8,
        false,
    )]));
    arrow::array::RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::StringArray::from(vec![TABLE_TYPE]))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_info_lists_the_sandboxs_types_and_filters_by_type() {
        let types = xdbc_types().unwrap();
        let all = CommandGetXdbcTypeInfo { data_type: None }
            .into_builder(&types)
            .build()
            .unwrap();
        assert_eq!(all.num_rows(), 9);
        let decimal = CommandGetXdbcTypeInfo {
            data_type: Some(XdbcDataType::XdbcDecimal as i32),
        }
        .into_builder(&types)
        .build()
        .unwrap();
        assert_eq!(decimal.num_rows(), 1);
    }

    #[test]
    fn a_token_comes_from_a_bearer_header_or_a_basic_password() {
        let with = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", value.parse().unwrap());
            token_of(&metadata)
        };
        assert_eq!(with("Bearer abc.def").unwrap(), "abc.def");
        let basic = base64::engine::general_purpose::STANDARD.encode("analyst:abc.def");
        assert_eq!(with(&format!("Basic {basic}")).unwrap(), "abc.def");
        let empty = base64::engine::general_purpose::STANDARD.encode("analyst:");
        assert!(with(&format!("Basic {empty}")).is_err());
        assert!(with("Bearer ").is_err());
        assert!(with("Digest abc").is_err());
        assert!(token_of(&MetadataMap::new()).is_err());
    }
}
