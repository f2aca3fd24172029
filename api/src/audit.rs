//! The audit log of denied attempts (docs/reference.md#security-model): one JSON line per
//! 401, 403, or 404 that hid another tenant, appended to `api.audit_log`.
//!
//! Lines are written by the request observer from the [`Denial`] a response
//! carries, so every denial is written exactly once, whichever code denied it.
//! A path is kept to its first [`MAX_AUDITED_PATH`] bytes, so a line stays
//! small whatever a client sends; requests without a valid token are also
//! rate-limited per source address before they reach the log
//! ([`crate::middleware::refuse_anonymous`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use allot_schemas::tenant::TenantId;
use serde::Serialize;

use crate::auth::Principal;
use crate::error::{ApiError, Denial};

/// The most bytes of a request's path an audit line keeps.
pub const MAX_AUDITED_PATH: usize = 512;

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry<'a> {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The token's `sub`, when it was verified.
    pub sub: Option<&'a str>,
    /// The token's role, when it was verified.
    pub role: Option<&'a str>,
    /// The token's tenant claim, when it was verified.
    pub tenant: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The request path as sent, cut to [`MAX_AUDITED_PATH`] bytes.
    pub path: &'a str,
    /// Whether `path` was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// The status answered.
    pub status: u16,
    /// `unauthenticated`, `forbidden` or `other_tenant`.
    pub outcome: &'a str,
    /// The detail, e.g. `expired` or `bad_signature`.
    pub reason: &'a str,
}

impl<'a> AuditEntry<'a> {
    /// The entry of a denial of `method path` answered with `status`.
    pub fn new(
        time: String,
        principal: Option<&'a Principal>,
        method: &'a str,
        path: &'a str,
        status: u16,
        denial: &'a Denial,
    ) -> AuditEntry<'a> {
        let kept = truncated(path, MAX_AUDITED_PATH);
        AuditEntry {
            time,
            sub: principal.map(|p| p.sub.as_str()),
            role: principal.map(|p| p.role.as_str()),
            tenant: principal.and_then(|p| p.tenant.as_ref().map(TenantId::as_str)),
            method,
            path: kept,
            path_truncated: kept.len() < path.len(),
            status,
            outcome: denial.outcome,
            reason: denial.reason,
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character.
fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An append-only JSON Lines file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it if needed) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<AuditLog, ApiError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ApiError::Setup {
                key: "api.audit_log",
                message: format!("cannot open {} for appending: {e}", path.display()),
            })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one line; a failure is logged, never turned into an answer.
    pub fn record(&self, entry: &AuditEntry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an audit entry");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_on_a_character_and_marked() {
        let denial = Denial {
            outcome: "unauthenticated",
            reason: "missing_token",
        };
        let long = format!("/v1/{}", "é".repeat(20_000));
        let entry = AuditEntry::new("t".to_string(), None, "GET", &long, 401, &denial);
        assert!(entry.path.len() <= MAX_AUDITED_PATH && entry.path.len() >= MAX_AUDITED_PATH - 1);
        assert!(long.starts_with(entry.path));
        let line = serde_json::to_value(&entry).unwrap();
        assert_eq!(line["path_truncated"], true);
        let short = AuditEntry::new("t".to_string(), None, "GET", "/v1/tenants", 401, &denial);
        let line = serde_json::to_value(&short).unwrap();
        assert_eq!(line["path"], "/v1/tenants");
        assert!(line.get("path_truncated").is_none());
    }
}
