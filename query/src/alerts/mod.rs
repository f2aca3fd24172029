//! Alerts (docs/reference.md#alerts): rules evaluated after each lake refresh,
//! a state machine per (rule, tenant), and the Delta table that holds their
//! state and outbox.
//!
//! ```text
//! lake refresh ─▶ facts ─▶ evaluate (rules × last notices) ─▶ notices
//!     ─▶ commit to `alerts` (fenced) ─▶ deliveries (claimed, attempted, recorded)
//! ```
//!
//! - [`facts`]: what rules read, from the health rows of the refresh;
//! - [`evaluate`]: the pure state machine;
//! - [`store`]: the `alerts` table, its records and their fold.
//!
//! Sending (HTTP, signatures, backoff) is the server's (`allot-api`).

pub mod evaluate;
pub mod facts;
pub mod store;

pub use evaluate::{AlertState, LastNotice, NewNotice, evaluate, notice_key};
pub use facts::{AlertFacts, TenantFacts};
pub use store::{
    AlertLog, AlertRecord, AlertStore, AttemptDetails, Delivery, DeliveryOutcome, Notice,
};
