//! Answers in JSON or, when the client asks with `Accept: text/csv`, in CSV:
//! the same report either way, rendered by `allot_query::render`.

use std::convert::Infallible;

use allot_query::render::ReportTable;
use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The representation a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (the default).
    Json,
    /// `text/csv`.
    Csv,
}

impl<S: Send + Sync> FromRequestParts<S> for Format {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Format, Infallible> {
        let wants_csv = parts
            .headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|media| media.split(';').next().unwrap_or("").trim() == "text/csv");
        Ok(if wants_csv { Format::Csv } else { Format::Json })
    }
}

/// CSV text with its content type.
pub fn csv(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// The report as JSON (`json`) or as the CSV of `table`; only the one asked
/// for is built.
pub fn report(
    format: Format,
    json: impl FnOnce() -> Value,
    table: impl FnOnce() -> ReportTable,
) -> Response {
    match format {
        Format::Json => Json(json()).into_response(),
        Format::Csv => csv(table().to_csv()),
    }
}
