//! Tenant ids: the one charset check every entry point shares, and
//! [`TenantId`], an id that passed it.
//!
//! A tenant id becomes a path segment of the lake (`tenant_id=<id>/`), so only
//! `^[a-z0-9][a-z0-9_-]{0,62}$` is accepted: no dots, slashes, upper case,
//! spaces or non-ASCII, and at most 63 bytes. The edges (CLI flags, API path
//! segments and tokens) parse a [`TenantId`] once and hand it on; event
//! decoding checks borrowed text with [`is_valid_tenant_id`] and allocates
//! nothing.

use std::fmt;
use std::str::FromStr;

/// Longest tenant id, in bytes.
pub const MAX_TENANT_ID_BYTES: usize = 63;

/// The tenant that receives a shared-cost pool whose driver had no usage.
pub const UNALLOCATED_TENANT: &str = "__unallocated__";

/// The rule of [`is_valid_tenant_id`], as messages print it.
pub const TENANT_ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// A valid tenant id: only [`TenantId::parse`] (or `FromStr`, `TryFrom`)
/// makes one.
///
/// ```
/// use allot_schemas::tenant::TenantId;
/// let id = TenantId::parse("acme-eu_1").unwrap();
/// assert_eq!(id.as_str(), "acme-eu_1");
/// assert!(TenantId::parse("../x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

/// Text that is not a tenant id; it prints the text and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tenant id ({TENANT_ID_PATTERN})")]
pub struct InvalidTenantId(pub String);

impl TenantId {
    /// `text` as a tenant id, if it is one.
    pub fn parse(text: &str) -> Result<TenantId, InvalidTenantId> {
        if is_valid_tenant_id(text) {
            Ok(TenantId(text.to_string()))
        } else {
            Err(InvalidTenantId(text.to_string()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(text: &str) -> Result<TenantId, InvalidTenantId> {
        TenantId::parse(text)
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;

    fn try_from(text: String) -> Result<TenantId, InvalidTenantId> {
        if is_valid_tenant_id(&text) {
            Ok(TenantId(text))
        } else {
            Err(InvalidTenantId(text))
        }
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `id` is a valid tenant id.
///
/// ```
/// use allot_schemas::tenant::is_valid_tenant_id;
/// assert!(is_valid_tenant_id("acme-eu_1"));
/// assert!(!is_valid_tenant_id("../x"));
/// assert!(!is_valid_tenant_id("Acme"));
/// ```
pub fn is_valid_tenant_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.len() <= MAX_TENANT_ID_BYTES
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_charset_only() {
        for ok in ["a", "0", "acme", "a-b_c", &"a".repeat(63)] {
            assert!(is_valid_tenant_id(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "..",
            "A",
            "aB",
            "a/b",
            "a b",
            "é",
            "-a",
            "_a",
            "a.b",
            &"a".repeat(64),
            "a\0",
            UNALLOCATED_TENANT,
        ] {
            assert!(!is_valid_tenant_id(bad), "{bad:?}");
            assert_eq!(
                TenantId::parse(bad),
                Err(InvalidTenantId(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_tenant_id_is_its_text() {
        let id: TenantId = "acme".parse().unwrap();
        assert_eq!((id.as_str(), id.to_string()), ("acme", "acme".to_string()));
        assert_eq!(TenantId::try_from("acme".to_string()), Ok(id));
        assert_eq!(
            InvalidTenantId("A".to_string()).to_string(),
            format!("\"A\" is not a tenant id ({TENANT_ID_PATTERN})")
        );
    }
}
