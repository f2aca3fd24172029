//! The layers every request passes through.
//!
//! Outermost first: [`observe`] (metrics, the access log, the audit log),
//! [`json_errors`] (every error in one JSON shape), the request timeout and the
//! body limit (tower-http), and on `/v1` routes [`authenticate`] (the bearer
//! token, then the caller's rate limit). A request without a valid token is
//! limited by its source address instead ([`refuse_anonymous`]), before its
//! denial reaches the audit log.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use allot_query::period::format_micros;
use allot_schemas::tenant::TenantId;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::error::{ApiError, AuthFailure, Denial, ShapedError};
use crate::metrics::record_request;
use crate::state::AppState;

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(request: &Request) -> Result<&str, AuthFailure> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AuthFailure::MissingToken)?;
    let text = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(token.trim())
}

/// Verifies the bearer token, applies the caller's rate limit and hands the
/// [`Principal`] to the handler (and, on the response, to [`observe`]).
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let verified =
        bearer(&request).and_then(|token| state.auth.verify(token, state.clock.now_secs()));
    let principal = match verified {
        Ok(principal) => principal,
        Err(failure) => {
            return refuse_anonymous(&state, &request, ApiError::Unauthenticated(failure));
        }
    };
    let mut response = match state.rate.check(&principal.limit_key()) {
        Ok(()) => {
            request.extensions_mut().insert(principal.clone());
            next.run(request).await
        }
        Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
    };
    response.extensions_mut().insert(principal);
    response
}

/// The answer to a request without a valid token: `denial` (audited), or a
/// 429 that is not audited once its source address has sent more than
/// `api.anonymous_rate_limit_per_s` such requests, so no one without a token
/// can fill the audit log.
pub fn refuse_anonymous(state: &AppState, request: &Request, denial: ApiError) -> Response {
    match state.anonymous_rate.check(&source_key(request)) {
        Ok(()) => denial.into_response(),
        Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
    }
}

/// The anonymous rate limit's key of a request: see [`peer_key`].
fn source_key(request: &Request) -> String {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    peer_key(peer)
}

/// The anonymous rate limit's key of a peer: its IPv4 address, or the /64
/// network of an IPv6 one (one host holds a whole /64).
pub(crate) fn peer_key(peer: Option<IpAddr>) -> String {
    match peer {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".to_string(),
    }
}

/// Rewrites error responses that axum or tower-http built (an unknown route or
/// method, a timeout, a body over the limit) into the JSON error shape.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ShapedError>().is_some()
    {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut shaped = ApiError::from_status(status).into_response();
    shaped.extensions_mut().extend(parts.extensions);
    shaped
}

/// Records the request's metrics, writes the access log line and, for a
/// denial, the audit log line.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    record_request(&route, method.as_str(), status, elapsed);
    let principal = response.extensions().get::<Principal>();
    if let Some(denial) = response.extensions().get::<Denial>() {
        let time = format_micros(state.now_micros());
        state.audit.record(&AuditEntry::new(
            time,
            principal,
            method.as_str(),
            &path,
            status,
            denial,
        ));
    }
    tracing::info!(
        method = %method,
        route = %route,
        status,
        millis = elapsed.as_secs_f64() * 1000.0,
        sub = principal.map(|p| p.sub.as_str()),
        role = principal.map(|p| p.role.as_str()),
        tenant = principal.and_then(|p| p.tenant.as_ref().map(TenantId::as_str)),
        "request"
    );
    response
}
