//! The login of a PostgreSQL wire connection: the password is an allot
//! token, asked for in cleartext (the only way to receive a token whole),
//! so only over TLS unless `api.pg_allow_plaintext` is set. The user name is
//! free. A bad, expired or forged token ends the login with SQLSTATE `28P01`
//! and an audit line; a finance token, which may not run SQL, with `42501`.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Sink, SinkExt};
use pgwire::api::RandomPidSecretKeyGenerator;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use allot_query::sandbox::pg_catalog::SERVER_VERSION;

use super::session::Session;
use super::{Cancels, PG};
use crate::error::{ApiError, AuthFailure};
use crate::state::AppState;
use crate::wire::Call;

/// The audit log's `path` of a login.
const LOGIN: &str = "login";

/// The login of every connection.
pub(super) struct Login {
    state: AppState,
    allow_plaintext: bool,
    cancels: Arc<Cancels>,
    keys: RandomPidSecretKeyGenerator,
}

impl Login {
    pub(super) fn new(state: AppState, allow_plaintext: bool, cancels: Arc<Cancels>) -> Login {
        Login {
            state,
            allow_plaintext,
            cancels,
            keys: RandomPidSecretKeyGenerator::default(),
        }
    }

    /// The session of the token `password`, or the login's refusal.
    fn session(&self, password: &str, peer: std::net::IpAddr) -> Result<Session, PgWireError> {
        let token = if password.is_empty() {
            Err(AuthFailure::MissingToken)
        } else {
            Ok(password)
        };
        let call = Call {
            token,
            peer: Some(peer),
            name: LOGIN,
        };
        let principal = PG.caller(&self.state, &call).map_err(refusal)?;
        let scope = PG
            .sql_scope(&self.state, &principal, LOGIN)
            .map_err(refusal)?;
        Ok(Session::new(principal, scope))
    }
}

/// The FATAL error that ends a refused login.
fn refusal(error: ApiError) -> PgWireError {
    let (code, message) = match &error {
        ApiError::Unauthenticated(failure) => (
            "28P01",
            format!(
                "password authentication failed: the password must be a valid allot token ({})",
                failure.reason().replace('_', " ")
            ),
        ),
        ApiError::Forbidden => (
            "42501",
            "this token's role may not run SQL (finance tokens read reports, not SQL)".to_string(),
        ),
        ApiError::RateLimited { retry_after_secs } => (
            "53400",
            format!("too many attempts: retry in {retry_after_secs} s"),
        ),
        other => ("XX000", other.parts().message.into_owned()),
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message,
    )))
}

/// What the server reports at login.
fn parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_string();
    parameters.is_superuser = false;
    parameters.default_transaction_read_only = true;
    parameters.time_zone = "UTC".to_string();
    parameters.date_style = "ISO, MDY".to_string();
    parameters
}

#[async_trait::async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if !client.is_secure() && !self.allow_plaintext {
                    metrics::counter!(super::PG_REFUSED, "status" => "403").increment(1);
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".to_owned(),
                        "28000".to_owned(),
                        "the password is an allot token and is only taken over TLS: connect with sslmode=require (or set api.pg_allow_plaintext for a loopback address)".to_owned(),
                    ))));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let session = self.session(&password.password, client.socket_addr().ip())?;
                tracing::debug!(
                    user = client.metadata().get(METADATA_USER).map(String::as_str),
                    sub = %session.principal.sub,
                    "PostgreSQL wire login"
                );
                let (pid, key) = self.keys.generate(client);
                client.set_pid_and_secret_key(pid, key.clone());
                let (cancelled, registered) = self.cancels.register(pid, &key);
                client
                    .session_extensions()
                    .insert(session.with_cancel(cancelled));
                client.session_extensions().insert(registered);
                finish_authentication(client, &parameters()).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
