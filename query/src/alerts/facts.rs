//! The facts rules are evaluated on, one set per lake refresh: every tenant's
//! health (the rows the server already holds for its dashboards) plus the two
//! figures health does not keep, read once for all rules
//! ([`crate::reports::alert_signals`]).

use std::sync::Arc;

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

use crate::error::QueryError;
use crate::health::TenantHealth;
use crate::reports::{ReportSettings, alert_signals};

/// How far back a silent tenant must have sent events.
pub const SILENT_ACTIVE_WINDOW_MICROS: i64 = 7 * MICROS_PER_DAY;
/// The window of a `rejected` rule's count.
pub const REJECTED_WINDOW_MICROS: i64 = MICROS_PER_HOUR;

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

/// The facts as of `now` on `snapshot`, from `health` (every tenant's health
/// as of `now` on the same snapshot, read by the caller). The two signals are
/// read while `health` runs: neither waits for the other, so a crossing is
/// evaluated in the time of the longer read, not of both.
pub async fn alert_facts<E: From<QueryError>>(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    now: i64,
    lake_version: Option<u64>,
    health: impl Future<Output = Result<Arc<Vec<TenantHealth>>, E>>,
) -> Result<AlertFacts, E> {
    let signals = async {
        alert_signals(
            snapshot,
            settings,
            now,
            SILENT_ACTIVE_WINDOW_MICROS,
            REJECTED_WINDOW_MICROS,
        )
        .await
        .map_err(E::from)
    };
    let (health, (last_events, rejected)) = tokio::try_join!(health, signals)?;
    Ok(AlertFacts {
        as_of_micros: now,
        lake_version,
        tenants: health
            .iter()
            .map(|row| TenantFacts {
                last_event_7d_micros: last_events.get(&row.tenant_id).copied(),
                rejected_last_hour: rejected.get(&row.tenant_id).copied().unwrap_or(0),
                health: row.clone(),
            })
            .collect(),
    })
}
