//! The web dashboards: the files of `dashboards/web/`, embedded in the binary at
//! build time, served at `/` (index.html) and by their path, with their content
//! types and a policy that lets pages load nothing from another origin.

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};

use crate::error::ApiError;
use crate::state::AppState;

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../dashboards/web");

/// Scripts, styles and data only from this server (no CDN), inline styles
/// allowed for charts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

/// `GET /`; every other file is served by [`fallback`].
pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> Response {
    file("index.html").unwrap_or_else(|| ApiError::NotFound("no such route").into_response())
}

/// Serves an embedded file for `GET` and `HEAD`; anything else is a 404.
pub async fn fallback(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let found = (method == Method::GET || method == Method::HEAD)
        .then(|| file(path))
        .flatten();
    found.unwrap_or_else(|| ApiError::NotFound("no such route").into_response())
}

fn file(path: &str) -> Option<Response> {
    let file = WEB.get_file(path)?;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let content_type = if mime.type_() == mime_guess::mime::TEXT
        || mime.subtype() == mime_guess::mime::JAVASCRIPT
        || mime.subtype() == mime_guess::mime::JSON
    {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).ok()?,
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
    ];
    Some((headers, file.contents()).into_response())
}

/// The embedded files' paths, for tests.
pub fn embedded_files() -> Vec<String> {
    fn walk(dir: &Dir<'static>, out: &mut Vec<String>) {
        for file in dir.files() {
            out.push(file.path().to_string_lossy().into_owned());
        }
        for sub in dir.dirs() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&WEB, &mut out);
    out
}
