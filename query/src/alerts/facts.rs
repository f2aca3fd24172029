//! The facts rules are evaluated on, one set per lake refresh: every tenant's
//! health (the rows the server holds for its dashboards) plus the two figures
//! health does not keep, read once for all rules; all three followed from
//! refresh to refresh by [`crate::live_health`].

use crate::health::TenantHealth;
use crate::live_health::LiveFacts;
pub use crate::live_health::{REJECTED_WINDOW_MICROS, SILENT_ACTIVE_WINDOW_MICROS};

/// One tenant's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantFacts {
    /// Its health as of the refresh.
    pub health: TenantHealth,
    /// Its latest accepted event of the last 7 days.
    pub last_event_7d_micros: Option<i64>,
    /// Its rejected events of the last hour.
    pub rejected_last_hour: u64,
}

/// The facts of one lake refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFacts {
    /// The instant they are as of, UTC microseconds.
    pub as_of_micros: i64,
    /// The `usage_events` version they were read at.
    pub lake_version: Option<u64>,
    /// Every tenant, by id.
    pub tenants: Vec<TenantFacts>,
}

impl AlertFacts {
    /// The facts of `live`, read at `usage_events` version `lake_version`.
    pub fn new(live: &LiveFacts, lake_version: Option<u64>) -> AlertFacts {
        AlertFacts {
            as_of_micros: live.as_of_micros,
            lake_version,
            tenants: live
                .health
                .iter()
                .map(|row| TenantFacts {
                    last_event_7d_micros: live.last_event_7d.get(&row.tenant_id).copied(),
                    rejected_last_hour: live
                        .rejected_last_hour
                        .get(&row.tenant_id)
                        .copied()
                        .unwrap_or(0),
                    health: row.clone(),
                })
                .collect(),
        }
    }
}
