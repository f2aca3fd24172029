//! Every tenant's health and the alert signals, followed from one lake refresh
//! to the next (docs/reference.md#alert-states): the figures of
//! [`crate::reports::health`] and [`crate::reports::alert_signals`], exactly,
//! with the lake read again only for the tenants it changed.
//!
//! ```text
//!  (snapshot, now) ─▶ tenants whose files changed or whose inputs no longer hold at `now`
//!      ─▶ their inputs, read from a snapshot of their files only ─┐
//!  the other tenants' inputs, kept ───────────────────────────────┴▶ noisy flags (again only
//!      when some tenant's buckets changed) ─▶ health rows and signals as of `now`
//! ```
//!
//! A tenant's inputs are read as of an instant `at`: its month-to-date usage,
//! the count and latest time of its events from the hour after the one where
//! the last 24 h start up to `at`, the time of each event in that hour, its
//! latest event of the 7 days before `at`, and its usage per noisy-neighbour
//! bucket of the detector's window. They hold at a later `now` while
//! - the tenant's files are the same (a commit that adds, rewrites or removes
//!   any of them, a compaction included, makes them read again),
//! - `now` is in the same month, the last 24 h start in the same hour and the
//!   detector searches the same buckets (each of these moves once an hour),
//! - the tenant had no event at or after `at` (events ahead of the clock are
//!   read again at every instant),
//!
//! and then the figures as of `now` are those computed from scratch: the
//! month to date holds the same events; the last 24 h are the events of the
//! first hour from `now − 24 h` on, counted from the kept times, plus those
//! after it; the latest event of the last 7 days is the latest before `at`
//! when it is within 7 days of `now`, else none; buckets are whole. Rejected
//! events are counted afresh every time (their table is partitioned by day
//! only), and so is everything `now` enters directly (cost, forecast, gauge
//! levels, staleness) from the inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::config::MetricKind;
use allot_schemas::time::{LATEST_REPORT_MICROS, MICROS_PER_DAY, MICROS_PER_HOUR};

use crate::error::QueryError;
use crate::health::{HEALTH_WINDOW_MICROS, TenantHealth};
use crate::noisy::{BucketUsage, Keep, NoisyRow};
use crate::pricing::TenantUsage;
use crate::reports::{
    HealthWindows, ReportSettings, health_rows, noisy_rows_of, noisy_usage, period_usage,
    session_for,
};
use crate::usage::{Activity, UsageFilter, activity, event_times, rejected_counts};

/// How far back a silent tenant must have sent events (the `silent` rules').
pub const SILENT_ACTIVE_WINDOW_MICROS: i64 = 7 * MICROS_PER_DAY;
/// The window of a `rejected` rule's count.
pub const REJECTED_WINDOW_MICROS: i64 = MICROS_PER_HOUR;

/// Health rows and alert signals as of one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFacts {
    /// The instant, UTC microseconds.
    pub as_of_micros: i64,
    /// Every tenant's health, by tenant id (the rows of
    /// [`crate::reports::health`]).
    pub health: Arc<Vec<TenantHealth>>,
    /// Per tenant, its latest accepted event of the last 7 days.
    pub last_event_7d: BTreeMap<String, i64>,
    /// Per tenant, its rejected events of the last hour.
    pub rejected_last_hour: BTreeMap<String, u64>,
    /// How many tenants' inputs were read from the lake for these facts (the
    /// others' were kept from earlier instants).
    pub tenants_read: usize,
}

/// Health followed across refreshes of one lake; see the module docs.
#[derive(Default)]
pub struct LiveHealth {
    followed: tokio::sync::Mutex<Followed>,
}

#[derive(Default)]
struct Followed {
    tenants: BTreeMap<String, TenantInputs>,
    /// The noisy-neighbour flags of the buckets searched, computed from the
    /// buckets of `tenants`.
    flags: Option<((i64, i64), Vec<NoisyRow>)>,
    /// The last facts, and what they were computed on.
    last: Option<(FactsKey, Arc<LiveFacts>)>,
}

/// What one set of facts was computed on: the instant and the tables' versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FactsKey {
    now: i64,
    versions: [Option<u64>; 3],
}

impl FactsKey {
    fn of(snapshot: &LakeSnapshot, now: i64) -> FactsKey {
        FactsKey {
            now,
            versions: [
                snapshot.usage.version,
                snapshot.rejected.version,
                snapshot.hourly.version,
            ],
        }
    }
}

/// The hours and buckets that fix a tenant's inputs: they hold until one moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    period_start: i64,
    /// The hour where the last 24 h start.
    edge_hour: i64,
    /// The noisy-neighbour buckets searched.
    noisy_range: (i64, i64),
}

impl Grid {
    fn of(windows: &HealthWindows) -> Grid {
        Grid {
            period_start: windows.period.start_micros(),
            edge_hour: windows.activity_from.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR,
            noisy_range: windows.noisy_range,
        }
    }

    /// The end of the hour where the last 24 h start.
    fn edge_end(&self) -> i64 {
        self.edge_hour + MICROS_PER_HOUR
    }
}

/// What the lake says of one tenant, read as of `at`.
#[derive(Debug, Clone)]
struct TenantInputs {
    /// The hash of its files when read (`None`: it had none).
    files: Option<u64>,
    at: i64,
    grid: Grid,
    /// It had events at or after `at`.
    ahead: bool,
    /// Month-to-date usage, `[period start, at)`.
    usage: TenantUsage,
    /// Its events of `[grid.edge_end(), at)`.
    after_edge: Option<Activity>,
    /// The times of its events in the hour where the last 24 h start, ascending.
    edge_times: Vec<i64>,
    /// Its latest event of `[at − 7 days, at)`.
    last_event_7d: Option<i64>,
    /// Its usage per counter metric and bucket of the detector's window.
    buckets: BTreeMap<String, Vec<BucketUsage>>,
}

impl TenantInputs {
    fn hold(&self, files: Option<u64>, grid: &Grid, now: i64) -> bool {
        self.files == files && self.grid == *grid && !self.ahead && now >= self.at
    }

    /// Its events of `[now − 24 h, now)`.
    fn activity_at(&self, now: i64) -> Option<Activity> {
        let from = now - HEALTH_WINDOW_MICROS;
        let edge = &self.edge_times[self.edge_times.partition_point(|t| *t < from)..];
        let edge_events = u64::try_from(edge.len()).unwrap_or(u64::MAX);
        let last_event_micros = self
            .after_edge
            .as_ref()
            .map(|a| a.last_event_micros)
            .into_iter()
            .chain(edge.last().copied())
            .max()?;
        Some(Activity {
            events: self.after_edge.as_ref().map_or(0, |a| a.events) + edge_events,
            last_event_micros,
        })
    }

    /// Its latest event of `[now − 7 days, now)`.
    fn last_event_7d_at(&self, now: i64) -> Option<i64> {
        self.last_event_7d
            .filter(|last| *last >= now.saturating_sub(SILENT_ACTIVE_WINDOW_MICROS))
    }
}

impl LiveHealth {
    /// Nothing read yet: the first call reads every tenant.
    pub fn new() -> LiveHealth {
        LiveHealth::default()
    }

    /// Health rows and signals as of `now` on `snapshot`, the same as
    /// [`LiveFacts::from_scratch`]. Calls on the same tables and instant share
    /// one computation.
    pub async fn facts(
        &self,
        snapshot: &LakeSnapshot,
        settings: &ReportSettings,
        now: i64,
    ) -> Result<Arc<LiveFacts>, QueryError> {
        let mut followed = self.followed.lock().await;
        let key = FactsKey::of(snapshot, now);
        if let Some((last_key, facts)) = &followed.last
            && *last_key == key
        {
            return Ok(Arc::clone(facts));
        }
        let windows = HealthWindows::at(settings, now)?;
        let grid = Grid::of(&windows);
        let files = snapshot.usage.fingerprints_by_tenant();
        let tenants: BTreeSet<String> = files
            .keys()
            .cloned()
            .chain(settings.config.tenants.keys().cloned())
            .collect();
        let to_read: BTreeSet<String> = tenants
            .iter()
            .filter(|tenant| {
                !followed
                    .tenants
                    .get(*tenant)
                    .is_some_and(|kept| kept.hold(files.get(*tenant).copied(), &grid, now))
            })
            .cloned()
            .collect();
        let rejected_lake = snapshot.for_tenants(&BTreeSet::new());
        let rejected_session = session_for(&rejected_lake, settings, None).await?;
        let (fresh, rejected_24h, rejected_last_hour) = tokio::try_join!(
            read_inputs(snapshot, settings, &to_read, now, &windows),
            rejected_counts(&rejected_session, windows.activity_from, now),
            rejected_counts(
                &rejected_session,
                now.saturating_sub(REJECTED_WINDOW_MICROS),
                now
            ),
        )?;

        let gone = followed.tenants.keys().any(|t| !tenants.contains(t));
        followed
            .tenants
            .retain(|tenant, _| tenants.contains(tenant));
        let mut buckets_moved = gone
            || followed
                .flags
                .as_ref()
                .is_none_or(|(range, _)| *range != windows.noisy_range);
        for (tenant, mut inputs) in fresh {
            inputs.files = files.get(&tenant).copied();
            let kept = followed.tenants.get(&tenant);
            buckets_moved |= kept.is_none_or(|kept| kept.buckets != inputs.buckets);
            followed.tenants.insert(tenant, inputs);
        }
        if buckets_moved {
            let counters = settings.metrics_of(MetricKind::Counter);
            let mut usage: BTreeMap<String, Vec<BucketUsage>> = BTreeMap::new();
            for inputs in followed.tenants.values() {
                for (metric, rows) in &inputs.buckets {
                    usage
                        .entry(metric.clone())
                        .or_default()
                        .extend(rows.iter().cloned());
                }
            }
            let flags = noisy_rows_of(
                &windows.noisy,
                &counters,
                windows.noisy_range,
                &usage,
                Keep::Flagged,
            )?;
            followed.flags = Some((windows.noisy_range, flags));
        }
        let flags = followed
            .flags
            .as_ref()
            .map_or(&[][..], |(_, f)| f.as_slice());
        let kept = &followed.tenants;
        let health = health_rows(
            settings,
            now,
            tenants,
            |tenant| kept.get(tenant).map(|inputs| &inputs.usage),
            |tenant| kept.get(tenant).and_then(|inputs| inputs.activity_at(now)),
            &rejected_24h,
            flags,
        )?;
        let last_event_7d = kept
            .iter()
            .filter_map(|(tenant, inputs)| {
                inputs
                    .last_event_7d_at(now)
                    .map(|last| (tenant.clone(), last))
            })
            .collect();
        let facts = Arc::new(LiveFacts {
            as_of_micros: now,
            health: Arc::new(health),
            last_event_7d,
            rejected_last_hour,
            tenants_read: to_read.len(),
        });
        followed.last = Some((key, Arc::clone(&facts)));
        Ok(facts)
    }
}

impl LiveFacts {
    /// The same facts, every figure read from the whole lake: what
    /// [`LiveHealth::facts`] must equal.
    pub async fn from_scratch(
        snapshot: &LakeSnapshot,
        settings: &ReportSettings,
        now: i64,
    ) -> Result<LiveFacts, QueryError> {
        let (health, (last_event_7d, rejected_last_hour)) = tokio::try_join!(
            crate::reports::health(snapshot, settings, now, None),
            crate::reports::alert_signals(
                snapshot,
                settings,
                now,
                SILENT_ACTIVE_WINDOW_MICROS,
                REJECTED_WINDOW_MICROS,
            ),
        )?;
        Ok(LiveFacts {
            as_of_micros: now,
            tenants_read: health.len(),
            health: Arc::new(health),
            last_event_7d,
            rejected_last_hour,
        })
    }
}

/// The inputs of `tenants` as of `now`, read from their files only.
async fn read_inputs(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    tenants: &BTreeSet<String>,
    now: i64,
    windows: &HealthWindows,
) -> Result<BTreeMap<String, TenantInputs>, QueryError> {
    if tenants.is_empty() {
        return Ok(BTreeMap::new());
    }
    let grid = Grid::of(windows);
    let theirs = snapshot.for_tenants(tenants);
    let session = session_for(&theirs, settings, None).await?;
    let every = UsageFilter::default();
    let counters = settings.metrics_of(MetricKind::Counter);
    let (mut usage, mut after_edge, mut edge_times, mut week, ahead, buckets) = tokio::try_join!(
        period_usage(&session, settings, &every, None, windows.period, now),
        activity(&session, &every, grid.edge_end(), now),
        event_times(&session, &every, grid.edge_hour, grid.edge_end()),
        activity(
            &session,
            &every,
            now.saturating_sub(SILENT_ACTIVE_WINDOW_MICROS),
            now
        ),
        activity(&session, &every, now, LATEST_REPORT_MICROS.max(now)),
        noisy_usage(&session, &windows.noisy, &counters, windows.noisy_range),
    )?;
    let mut buckets_by_tenant: BTreeMap<String, BTreeMap<String, Vec<BucketUsage>>> =
        BTreeMap::new();
    for (metric, rows) in buckets {
        for row in rows {
            buckets_by_tenant
                .entry(row.tenant_id.clone())
                .or_default()
                .entry(metric.clone())
                .or_default()
                .push(row);
        }
    }
    Ok(tenants
        .iter()
        .map(|tenant| {
            let inputs = TenantInputs {
                files: None,
                at: now,
                grid,
                ahead: ahead.contains_key(tenant),
                usage: usage.remove(tenant).unwrap_or_else(|| TenantUsage {
                    tenant_id: tenant.clone(),
                    ..TenantUsage::default()
                }),
                after_edge: after_edge.remove(tenant),
                edge_times: edge_times.remove(tenant).unwrap_or_default(),
                last_event_7d: week.remove(tenant).map(|a| a.last_event_micros),
                buckets: buckets_by_tenant.remove(tenant).unwrap_or_default(),
            };
            (tenant.clone(), inputs)
        })
        .collect())
}
