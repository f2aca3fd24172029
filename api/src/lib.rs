//! allot-api: the HTTP server over the query engine.
//!
//! Tenant-scoped JSON and CSV views, sandboxed SQL and the web dashboards, served
//! with axum. It depends on `allot-query`, never on the collectors.

pub use allot_query::LakeLocation;
