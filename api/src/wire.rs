//! What the SQL wire protocols (Arrow Flight SQL in [`crate::flight_sql`],
//! PostgreSQL in [`crate::pg`]) share: who the caller is, from the allot
//! token they present, and the audit line and metric of each refusal
//! (docs/reference.md#sql-over-the-wire).
//!
//! A caller without a valid token is limited by its address before it is
//! audited, as on the HTTP API, so no one without a token can fill the audit
//! log; a caller with one is limited by its own rate, and may run SQL only in
//! the scope its role gives ([`Principal::sql_scope`]).

use std::net::IpAddr;

use allot_lake::session::Scope;

use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::error::{ApiError, AuthFailure};
use crate::middleware::peer_key;
use crate::state::AppState;

/// One wire protocol: the method its refusals are audited under and the
/// counter of its refusals.
#[derive(Debug, Clone, Copy)]
pub struct Wire {
    /// The audit log's `method` for this protocol (`FLIGHT`, `PG`).
    pub method: &'static str,
    /// The counter of refused calls, by the HTTP `status` the same refusal has.
    pub refused_metric: &'static str,
}

/// A call on a wire: the token it presented (or why it has none), its peer's
/// address and its name (the audit log's `path`).
#[derive(Debug)]
pub struct Call<'a> {
    /// The token, or why the call carries none that could be read.
    pub token: Result<&'a str, AuthFailure>,
    /// The peer's address, when known.
    pub peer: Option<IpAddr>,
    /// What the call was, for the audit log.
    pub name: &'a str,
}

impl Wire {
    /// The caller of `call`, from its token, within its rate limit; a
    /// refusal is counted, and audited when it is a denial.
    pub fn caller(&self, state: &AppState, call: &Call<'_>) -> Result<Principal, ApiError> {
        let verified = call
            .token
            .and_then(|token| state.auth.verify(token, state.clock.now_secs()));
        let principal = match verified {
            Ok(principal) => principal,
            Err(failure) => {
                let denial = match state.anonymous_rate.check(&peer_key(call.peer)) {
                    Ok(()) => ApiError::Unauthenticated(failure),
                    Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs },
                };
                return Err(self.refuse(state, None, call.name, denial));
            }
        };
        self.within_rate(state, &principal, call.name)?;
        Ok(principal)
    }

    /// Refuses `principal`'s call named `call` past its rate limit.
    pub fn within_rate(
        &self,
        state: &AppState,
        principal: &Principal,
        call: &str,
    ) -> Result<(), ApiError> {
        state
            .rate
            .check(&principal.limit_key())
            .map_err(|retry_after_secs| {
                self.refuse(
                    state,
                    Some(principal),
                    call,
                    ApiError::RateLimited { retry_after_secs },
                )
            })
    }

    /// The scope `principal` runs SQL in; finance, which may not, is refused.
    pub fn sql_scope(
        &self,
        state: &AppState,
        principal: &Principal,
        call: &str,
    ) -> Result<Scope, ApiError> {
        principal
            .sql_scope()
            .ok_or_else(|| self.refuse(state, Some(principal), call, ApiError::Forbidden))
    }

    /// Counts a refused call, audits it when it is a denial, and hands the
    /// error back.
    pub fn refuse(
        &self,
        state: &AppState,
        principal: Option<&Principal>,
        call: &str,
        error: ApiError,
    ) -> ApiError {
        let parts = error.parts();
        metrics::counter!(self.refused_metric, "status" => parts.status.as_str().to_string())
            .increment(1);
        if let Some(denial) = &parts.denial {
            let time = allot_query::period::format_micros(state.now_micros());
            state.audit.record(&AuditEntry::new(
                time,
                principal,
                self.method,
                call,
                parts.status.as_u16(),
                denial,
            ));
        }
        error
    }
}
