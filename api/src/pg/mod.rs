//! The PostgreSQL wire protocol on `api.pg_listen`
//! (docs/reference.md#sql-over-the-wire): the sandboxed SQL of `POST /v1/sql`
//! for psql, psycopg, Grafana, Metabase, DBeaver and every other PostgreSQL
//! client.
//!
//! ```text
//! accept ─▶ at most api.pg_max_connections (else FATAL 53300)
//!        ─▶ SSLRequest answered with api.tls_cert (when set)
//!        ─▶ login (login.rs): the password is an allot token; cleartext only
//!           over TLS unless api.pg_allow_plaintext; a refusal is 28P01, audited
//!        ─▶ statements (query.rs), each in the session's sandbox scope
//!           (session.rs), its values encoded by encode.rs
//!        ─▶ closed after api.pg_idle_timeout without a message (FATAL 57P05)
//! ```
//!
//! The protocol's messages are pgwire's; the connection loop is allot's own,
//! for the connection cap, the idle timeout and the login's TLS rule.

mod encode;
mod login;
mod query;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::{ClientInfo, NoopHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::state::AppState;
use crate::wire::Wire;

use pgwire::tokio::TlsAcceptor;

/// Statements over the PostgreSQL wire, by `outcome`: `ok` (its answer
/// started), `error` (refused by the sandbox, or failed before its answer
/// started), `failed` (its answer ended by an error after it started).
pub const PG_STATEMENTS: &str = "allot_pg_statements_total";

/// Bytes of rows sent over the PostgreSQL wire.
pub const PG_BYTES: &str = "allot_pg_bytes_sent_total";

/// Logins and statements refused before they ran (bad token, finance
/// running SQL, rate limit, no TLS, too many connections), by the HTTP
/// `status` the same refusal has.
pub const PG_REFUSED: &str = "allot_pg_refused_total";

/// Connections open on the PostgreSQL wire.
pub const PG_CONNECTIONS: &str = "allot_pg_connections";

/// The PostgreSQL wire as a wire: its audit method and refusal counter.
const PG: Wire = Wire {
    method: "PG",
    refused_metric: PG_REFUSED,
};

/// How long a client has to finish its login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How the PostgreSQL endpoint runs.
#[derive(Clone)]
pub struct PgOptions {
    /// Accepts TLS, from `api.tls_cert` and `api.tls_key`.
    pub tls: Option<TlsAcceptor>,
    /// `api.pg_allow_plaintext`.
    pub allow_plaintext: bool,
    /// `api.pg_idle_timeout`.
    pub idle_timeout: Duration,
    /// `api.pg_max_connections`.
    pub max_connections: usize,
    /// `api.header_read_timeout`: how long a client has to negotiate TLS
    /// (or say it will not).
    pub handshake_timeout: Duration,
}

impl PgOptions {
    /// The options of `state`'s configuration, with its TLS (no ALPN: the
    /// PostgreSQL wire negotiates TLS before any protocol is named).
    pub fn new(state: &AppState) -> PgOptions {
        let api = &state.settings.config.api;
        PgOptions {
            tls: state.tls.as_ref().map(|tls| tls.acceptor(&[])),
            allow_plaintext: api.pg_allow_plaintext,
            idle_timeout: api.pg_idle_timeout.0,
            max_connections: api.pg_max_connections,
            handshake_timeout: api.header_read_timeout.0,
        }
    }
}

/// Serves the PostgreSQL wire on `listener` until `shutdown` resolves.
pub async fn serve_pg(
    listener: TcpListener,
    state: AppState,
    options: PgOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cancels = Arc::new(Cancels::default());
    let login = Arc::new(login::Login::new(
        state.clone(),
        options.allow_plaintext,
        Arc::clone(&cancels),
    ));
    let queries = Arc::new(query::Queries::new(state));
    let open = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "PostgreSQL wire: accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let options = options.clone();
        match Arc::clone(&open).try_acquire_owned() {
            Ok(permit) => {
                let (login, queries, cancels) = (
                    Arc::clone(&login),
                    Arc::clone(&queries),
                    Arc::clone(&cancels),
                );
                tokio::spawn(async move {
                    metrics::gauge!(PG_CONNECTIONS).increment(1);
                    let served = connection(socket, &options, login, queries, cancels).await;
                    metrics::gauge!(PG_CONNECTIONS).decrement(1);
                    drop(permit);
                    if let Err(error) = served {
                        tracing::debug!(%error, "PostgreSQL wire connection ended");
                    }
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let _ = too_many(socket, &options).await;
                });
            }
        }
    }
}

/// Serves one connection until the client leaves, idles past the timeout,
/// or a fatal error ends it.
async fn connection(
    socket: TcpStream,
    options: &PgOptions,
    login: Arc<login::Login>,
    queries: Arc<query::Queries>,
    cancels: Arc<Cancels>,
) -> std::io::Result<()> {
    let negotiated = tokio::time::timeout(
        options.handshake_timeout,
        negotiate_tls::<<query::Queries as ExtendedQueryHandler>::Statement>(
            socket,
            options.tls.clone(),
        ),
    )
    .await;
    let Ok(Ok(Some(mut socket))) = negotiated else {
        return Ok(());
    };
    let copies = Arc::new(NoopHandler);
    let login_ends = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    loop {
        let logging_in = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let until = if logging_in {
            login_ends
        } else {
            tokio::time::Instant::now() + options.idle_timeout
        };
        let message = match tokio::time::timeout_at(until, socket.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(_) => return Ok(()),
            Err(_) if logging_in => return Ok(()),
            Err(_) => {
                let idle = fatal(
                    "57P05",
                    format!(
                        "terminating connection due to idle-session timeout ({} s, api.pg_idle_timeout)",
                        options.idle_timeout.as_secs()
                    ),
                );
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(idle.into()))
                    .await;
                return Ok(());
            }
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let is_cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let processed = process_message(
            message,
            &mut socket,
            Arc::clone(&login),
            Arc::clone(&queries),
            Arc::clone(&queries),
            Arc::clone(&copies),
            Arc::clone(&cancels),
        )
        .await;
        if let Err(error) = processed {
            let is_fatal = error.is_fatal();
            process_error(&mut socket, error, extended).await?;
            if is_fatal {
                return Ok(());
            }
        }
        if is_cancel {
            return Ok(());
        }
    }
}

/// Answers a connection past `api.pg_max_connections` as PostgreSQL does:
/// after its startup message, FATAL 53300, then closes it.
async fn too_many(socket: TcpStream, options: &PgOptions) -> std::io::Result<()> {
    metrics::counter!(PG_REFUSED, "status" => "503").increment(1);
    let answer = async {
        let negotiated = negotiate_tls::<String>(socket, options.tls.clone()).await?;
        let Some(mut socket) = negotiated else {
            return Ok(());
        };
        let _startup = socket.next().await;
        let refusal = fatal(
            "53300",
            format!(
                "sorry, too many clients already (api.pg_max_connections = {})",
                options.max_connections
            ),
        );
        socket
            .send(PgWireBackendMessage::ErrorResponse(refusal.into()))
            .await
    };
    tokio::time::timeout(options.handshake_timeout, answer)
        .await
        .unwrap_or(Ok(()))
}

/// A FATAL error with SQLSTATE `code`.
fn fatal(code: &str, message: String) -> ErrorInfo {
    ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message)
}

/// An ERROR with SQLSTATE `code`, as a wire error.
fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// The connections a cancel request may name, by process id and secret key:
/// each connection's cancel signal, a counter its running statement watches.
#[derive(Default)]
struct Cancels {
    signals: Mutex<HashMap<(i32, Bytes), watch::Sender<u64>>>,
}

impl Cancels {
    /// Registers a connection; the entry goes with the returned guard.
    fn register(self: &Arc<Self>, pid: i32, key: &SecretKey) -> (watch::Receiver<u64>, Registered) {
        let (signal, watched) = watch::channel(0);
        let entry = (pid, key.to_bytes());
        self.signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.clone(), signal);
        (
            watched,
            Registered {
                cancels: Arc::clone(self),
                entry,
            },
        )
    }
}

#[async_trait::async_trait]
impl pgwire::api::cancel::CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: pgwire::messages::cancel::CancelRequest) {
        let entry = (request.pid, request.secret_key.to_bytes());
        if let Some(signal) = self
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&entry)
        {
            signal.send_modify(|generation| *generation += 1);
        }
    }
}

/// A connection's place in [`Cancels`], removed when the connection ends.
struct Registered {
    cancels: Arc<Cancels>,
    entry: (i32, Bytes),
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.cancels
            .signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.entry);
    }
}
