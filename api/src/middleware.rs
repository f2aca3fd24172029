//! The layers every request passes through.
//!
//! Outermost first: [`observe`] (metrics, the access log, the audit log),
//! [`json_errors`] (every error in one JSON shape), the request timeout and the
//! body limit (tower-http), and on `/v1` routes [`authenticate`] (the bearer
//! token, then the caller's rate limit).

use std::time::Instant;

use allot_query::period::format_micros;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::error::{ApiError, AuthFailure, Denial, ShapedError};
use crate::metrics::record_request;
use crate::state::AppState;

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(request: &Request) -> Result<&str, AuthFailure> {
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
        Err(failure) => return ApiError::Unauthenticated(failure).into_response(),
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
        tenant = principal.and_then(|p| p.tenant.as_deref()),
        "request"
    );
    response
}
