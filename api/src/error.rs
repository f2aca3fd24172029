//! The API's error type and the one place where an error becomes an HTTP status
//! and a JSON body `{"error": {"code", "message"}}`.
//!
//! [`ApiError::parts`] classifies every error; [`error_response`] builds every
//! error body, including the ones axum and tower-http produce on their own (an
//! unknown method, a timeout, a body over the limit), which
//! [`crate::middleware::json_errors`] rewrites into the same shape. Internal
//! failures (the engine, the lake, a broken config) are logged in full and
//! answered with a masked message, so no file path, key or other tenant's id
//! ever reaches a client.
//!
//! A denial (401, 403, or the 404 a tenant token gets for another tenant) also
//! carries a [`Denial`] in the response's extensions; the request observer writes
//! it to the audit log. The bytes of that 404 are the bytes of a missing tenant.

use std::borrow::Cow;

use allot_query::QueryError;
use allot_query::request::RequestError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a bearer token was not accepted (recorded in the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer …` header.
    MissingToken,
    /// Not a JWT, or a header or claims that do not parse.
    Malformed,
    /// An algorithm other than the configured ones (including `none`).
    Algorithm,
    /// The signature does not verify with the configured key.
    Signature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `exp` is further ahead than `api.max_token_ttl`.
    LifetimeTooLong,
    /// `iss` is not the configured issuer.
    Issuer,
    /// `aud` is not the configured audience.
    Audience,
    /// A required claim is missing or invalid (`sub`, `role`, `tenant`).
    Claims,
}

impl AuthFailure {
    /// A stable snake_case word for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::Malformed => "malformed_token",
            AuthFailure::Algorithm => "algorithm_not_allowed",
            AuthFailure::Signature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
            AuthFailure::Issuer => "wrong_issuer",
            AuthFailure::Audience => "wrong_audience",
            AuthFailure::Claims => "invalid_claims",
        }
    }

    fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "a bearer token is required (Authorization: Bearer <JWT>)",
            AuthFailure::Expired => "the token has expired",
            AuthFailure::LifetimeTooLong => {
                "the token lives longer than this server accepts; ask for a shorter one"
            }
            _ => "the token is not valid for this server",
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid bearer token (401).
    #[error("unauthenticated ({})", .0.reason())]
    Unauthenticated(AuthFailure),
    /// The token's role may not use this route (403).
    #[error("forbidden for this role")]
    Forbidden,
    /// A tenant that does not exist, or (`other_tenant`) one the token may not
    /// see: both answer the same 404.
    #[error("no such tenant")]
    TenantNotFound {
        /// Whether the tenant was hidden from a tenant token (audited).
        other_tenant: bool,
    },
    /// Nothing here (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// The request is malformed (400); the message is the caller's to read.
    #[error("{0}")]
    BadRequest(String),
    /// A report request whose range, bucket or instant cannot be used (400,
    /// with the message the CLI prints).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A report or query failed; bad input is 400, anything else 500.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The caller's token bucket is empty (429).
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// The caller already runs as many SQL queries as allowed (429).
    #[error("too many concurrent SQL queries")]
    SqlBusy,
    /// The request ran past `api.request_timeout` (408).
    #[error("the request took too long")]
    Timeout,
    /// The body is larger than `api.max_body` (413).
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The route exists but not with this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The lake cannot be read or has no data yet (503).
    #[error("not ready: {0}")]
    NotReady(String),
    /// Anything else; logged, answered with a masked 500.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server cannot start with this configuration.
    #[error("config key `{key}`: {message}")]
    Setup {
        /// The dotted config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A denied attempt, carried in a response's extensions to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// `unauthenticated`, `forbidden` or `other_tenant`.
    pub outcome: &'static str,
    /// A snake_case detail (the [`AuthFailure`] reason, or the outcome again).
    pub reason: &'static str,
}

/// Marks a response whose body already has the error shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapedError;

/// How an error answers: status, code, message and what else goes with it.
pub struct ErrorParts {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable snake_case code.
    pub code: &'static str,
    /// A message for the caller, never holding paths, keys or other tenants' ids.
    pub message: Cow<'static, str>,
    /// Set for denials, which are audited.
    pub denial: Option<Denial>,
    /// `Retry-After` seconds, for 429.
    pub retry_after_secs: Option<u64>,
}

const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

impl ApiError {
    /// Classifies the error: the only mapping from an error to an HTTP answer.
    pub fn parts(&self) -> ErrorParts {
        let parts = |status, code, message: Cow<'static, str>| ErrorParts {
            status,
            code,
            message,
            denial: None,
            retry_after_secs: None,
        };
        match self {
            ApiError::Unauthenticated(failure) => ErrorParts {
                denial: Some(Denial {
                    outcome: "unauthenticated",
                    reason: failure.reason(),
                }),
                ..parts(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    failure.message().into(),
                )
            },
            ApiError::Forbidden => ErrorParts {
                denial: Some(Denial {
                    outcome: "forbidden",
                    reason: "role_not_allowed",
                }),
                ..parts(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token's role may not use this resource".into(),
                )
            },
            ApiError::TenantNotFound { other_tenant } => ErrorParts {
                denial: other_tenant.then_some(Denial {
                    outcome: "other_tenant",
                    reason: "other_tenant",
                }),
                ..parts(StatusCode::NOT_FOUND, "not_found", "no such tenant".into())
            },
            ApiError::NotFound(what) => parts(StatusCode::NOT_FOUND, "not_found", (*what).into()),
            ApiError::BadRequest(message) => parts(
                StatusCode::BAD_REQUEST,
                "bad_request",
                message.clone().into(),
            ),
            ApiError::Request(error) => parts(
                StatusCode::BAD_REQUEST,
                "bad_request",
                error.to_string().into(),
            ),
            ApiError::Query(QueryError::Lake(allot_lake::LakeError::NoLake)) => parts(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the lake has no data yet".into(),
            ),
            // A query past its time limit is 408 like any slow request; a result
            // past the row or byte cap is 413, too large to answer; a refused
            // statement or one that needs more memory than a query may use is
            // the caller's to change, 400.
            ApiError::Query(error @ QueryError::TimeLimit { .. }) => parts(
                StatusCode::REQUEST_TIMEOUT,
                "sql_timeout",
                error.to_string().into(),
            ),
            ApiError::Query(
                error @ (QueryError::RowLimit { .. } | QueryError::ResultTooLarge { .. }),
            ) => parts(
                StatusCode::PAYLOAD_TOO_LARGE,
                "sql_result_too_large",
                error.to_string().into(),
            ),
            ApiError::Query(error) if error.is_bad_input() => {
                let code = match error {
                    QueryError::SqlRejected(_) => "sql_rejected",
                    QueryError::MemoryLimit { .. } => "sql_limit",
                    _ => "bad_request",
                };
                parts(StatusCode::BAD_REQUEST, code, error.to_string().into())
            }
            ApiError::Query(_) | ApiError::Internal(_) | ApiError::Setup { .. } => parts(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                INTERNAL_MESSAGE.into(),
            ),
            ApiError::RateLimited { retry_after_secs } => ErrorParts {
                retry_after_secs: Some(*retry_after_secs),
                ..parts(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests from this caller; retry later".into(),
                )
            },
            ApiError::SqlBusy => ErrorParts {
                retry_after_secs: Some(1),
                ..parts(
                    StatusCode::TOO_MANY_REQUESTS,
                    "sql_busy",
                    "this tenant already runs as many SQL queries as allowed; retry later".into(),
                )
            },
            ApiError::Timeout => parts(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request took longer than the server allows".into(),
            ),
            ApiError::PayloadTooLarge => parts(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the server accepts".into(),
            ),
            ApiError::MethodNotAllowed => parts(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method".into(),
            ),
            ApiError::NotReady(message) => parts(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                message.clone().into(),
            ),
        }
    }

    /// The error for a bare status that axum or tower-http answered with.
    pub fn from_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::NOT_FOUND => ApiError::NotFound("no such route"),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            status if status.is_client_error() => ApiError::BadRequest(
                status
                    .canonical_reason()
                    .unwrap_or("bad request")
                    .to_string(),
            ),
            status => ApiError::Internal(format!("status {status} without a body")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parts = self.parts();
        if parts.status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        error_response(&parts)
    }
}

/// The one builder of error responses.
pub fn error_response(parts: &ErrorParts) -> Response {
    let body = json!({"error": {"code": parts.code, "message": parts.message}});
    let mut response = (parts.status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Some(secs) = parts.retry_after_secs {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if parts.status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response.extensions_mut().insert(ShapedError);
    if let Some(denial) = parts.denial {
        response.extensions_mut().insert(denial);
    }
    response
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(format!("invalid JSON body: {}", rejection.body_text()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_are_masked_and_bad_input_is_not() {
        let lake = ApiError::Query(QueryError::Lake(allot_lake::LakeError::Unreadable {
            table: "usage_events",
            message: "/secret/path/part-0.parquet: broken".to_string(),
        }))
        .parts();
        assert_eq!(lake.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!lake.message.contains("/secret"));

        let sql = ApiError::Query(QueryError::SqlRejected("COPY is not allowed".into())).parts();
        assert_eq!(sql.status, StatusCode::BAD_REQUEST);
        assert_eq!(sql.message, "COPY is not allowed");
    }

    #[test]
    fn sql_limits_answer_by_kind() {
        let status = |error: QueryError| ApiError::Query(error).parts().status;
        assert_eq!(
            status(QueryError::TimeLimit {
                limit: "2 s".into()
            }),
            StatusCode::REQUEST_TIMEOUT
        );
        assert_eq!(
            status(QueryError::RowLimit { max_rows: 5 }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(QueryError::ResultTooLarge {
                limit: "64 MiB".into()
            }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(QueryError::MemoryLimit {
                limit: "512 MiB".into()
            }),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn hidden_and_missing_tenants_answer_alike() {
        let hidden = ApiError::TenantNotFound { other_tenant: true }.parts();
        let missing = ApiError::TenantNotFound {
            other_tenant: false,
        }
        .parts();
        assert_eq!(
            (hidden.status, hidden.code, &hidden.message),
            (missing.status, missing.code, &missing.message)
        );
        assert!(hidden.denial.is_some() && missing.denial.is_none());
    }
}
