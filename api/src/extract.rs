//! The extractors of the route handlers: who calls ([`FinanceCaller`]), which
//! month ([`Month`]) and the query string ([`ApiQuery`]), each refused with
//! an [`ApiError`], so every refusal has the API's one JSON error shape.
//!
//! axum runs a handler's extractors in the order of its arguments, before
//! the handler's body. Where a refusal must wait for something the body does
//! first (a tenant route authorizes the tenant before it reads its month or
//! query string, so another tenant's route answers the same 404 whatever is
//! asked of it), the handler takes `Result<Extractor, ApiError>` and applies
//! `?` at that point.

use std::collections::HashMap;

use allot_query::period::Period;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::ApiError;

/// A caller authorized for the all-tenant views: a finance or admin token.
/// A tenant token is refused with 403.
#[derive(Debug, Clone)]
pub struct FinanceCaller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for FinanceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let principal = caller(parts)?;
        match principal.confined_to() {
            Some(_) => Err(ApiError::Forbidden),
            None => Ok(FinanceCaller(principal)),
        }
    }
}

/// The verified caller the authentication middleware put on the request.
fn caller(parts: &Parts) -> Result<Principal, ApiError> {
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("a route without a verified caller".to_string()))
}

/// The `{month}` segment of the path: a billing month `YYYY-MM`, refused
/// with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month(pub Period);

impl<S: Send + Sync> FromRequestParts<S> for Month {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(segments) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::from_status(rejection.status()))?;
        let text = segments
            .get("month")
            .ok_or_else(|| ApiError::Internal("a route without a {month} segment".to_string()))?;
        Ok(Month(Period::parse(text)?))
    }
}

/// The query string deserialized into `T`; one that does not fit is a 400
/// with serde's reason.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection: QueryRejection| ApiError::BadRequest(rejection.body_text()))?;
        Ok(ApiQuery(value))
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Role;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Live {
        #[serde(default)]
        live: bool,
    }

    async fn answer(role: Role, uri: &str) -> (StatusCode, serde_json::Value) {
        let app = Router::new()
            .route(
                "/v1/billing/{month}",
                get(
                    |_: FinanceCaller, ApiQuery(q): ApiQuery<Live>, Month(p): Month| async move {
                        format!("{p} {}", q.live)
                    },
                ),
            )
            .layer(axum::Extension(Principal {
                sub: "test".to_string(),
                role,
                tenant: (role == Role::Tenant).then(|| "acme".parse().unwrap()),
            }));
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, body)
    }

    #[tokio::test]
    async fn refusals_are_the_api_error_shape_in_argument_order() {
        let ok = answer(Role::Finance, "/v1/billing/2026-03?live=true").await;
        assert_eq!(ok, (StatusCode::OK, "2026-03 true".into()));
        // The caller is checked before the query string and the month.
        let (status, body) = answer(Role::Tenant, "/v1/billing/March?nope=1").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, body) = answer(Role::Admin, "/v1/billing/March?nope=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["error"]["message"].as_str().unwrap().contains("nope"),
            "{body}"
        );
        let (status, body) = answer(Role::Admin, "/v1/billing/2026-13").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("2026-13"),
            "{body}"
        );
    }
}
