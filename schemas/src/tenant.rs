//! Tenant ids: the one charset check every entry point shares.
//!
//! A tenant id becomes a path segment of the lake (`tenant_id=<id>/`), so only
//! `^[a-z0-9][a-z0-9_-]{0,62}$` is accepted: no dots, slashes, upper case,
//! spaces or non-ASCII, and at most 63 bytes.

/// Longest tenant id, in bytes.
pub const MAX_TENANT_ID_BYTES: usize = 63;

/// The tenant that receives a shared-cost pool whose driver had no usage.
pub const UNALLOCATED_TENANT: &str = "__unallocated__";

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
        }
    }
}
