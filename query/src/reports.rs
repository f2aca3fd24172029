//! The reports of docs/reference.md#figures over a lake snapshot: invoices, shared-cost
//! allocation, noisy neighbours, tenant health, and usage series for charts.
//!
//! Each report opens a [`LakeSession`] (tenant-scoped when it is about one
//! tenant), aggregates the lake with [`crate::usage`] and hands the exact inputs to
//! the pure semantics of [`crate::pricing`], [`crate::allocation`],
//! [`crate::noisy`] and [`crate::health`]. The CLI and the HTTP API both call these
//! functions, so a figure is computed in one place only; the requests they take
//! come checked from [`crate::request`].

use std::collections::{BTreeMap, BTreeSet};

use allot_lake::dedup::DedupWindow;
use allot_lake::session::{LakeSession, Scope, SessionLimits};
use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::config::{Config, DEFAULT_GAUGE_HOLD, MetricCatalog, MetricKind};
use allot_schemas::gauge::gauge_weighted_sum;
use allot_schemas::tenant::TenantId;
use allot_schemas::time::{EARLIEST_REPORT_MICROS, MICROS_PER_DAY};
use bigdecimal::{BigDecimal, Zero};

use crate::allocation::{AllocationRow, CostPool, allocate};
use crate::error::QueryError;
use crate::health::{
    HEALTH_WINDOW_MICROS, HealthInputs, TenantHealth, gauge_levels, tenant_health,
};
use crate::noisy::BucketUsage;
use crate::noisy::{Keep, NoisyParams, NoisyRow, noisy_neighbours};
use crate::period::Period;
use crate::pricing::{Invoice, PriceBook, TenantUsage, invoice_until, period_quantity};
use crate::request::{NoisyRequest, UsageRequest};
use crate::usage::{
    Activity, ClassGrouping, GaugeSamples, UsageFilter, activity, bucket_usage, ceil_to_grid,
    counter_days, dimensional_counter_days, gauge_series, meter_buckets, meter_days,
    rejected_counts,
};

/// The configuration a report needs, resolved once.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The whole configuration (tenants, thresholds).
    pub config: Config,
    /// The metric catalog.
    pub catalog: MetricCatalog,
    /// The price book.
    pub book: PriceBook,
    /// Whether reports read the up-to-date rollups of `usage_hourly` or every
    /// event raw (`reports.rollups`); the figures are the same.
    pub use_rollups: bool,
}

impl ReportSettings {
    /// The catalog and price book of `config`.
    pub fn new(config: Config) -> ReportSettings {
        let catalog = config.catalog();
        let book = PriceBook::from_config(&config);
        ReportSettings {
            use_rollups: config.reports.rollups,
            config,
            catalog,
            book,
        }
    }

    /// Whether tenant `id` exists: the lake has files of it or the configuration
    /// has a `[tenants.<id>]` entry.
    pub fn tenant_exists(&self, snapshot: &LakeSnapshot, id: &TenantId) -> bool {
        let id = id.as_str();
        self.config.tenants.contains_key(id) || !snapshot.usage.files_of(id).is_empty()
    }

    /// The dedup window reports apply (`ingest.dedup_window`).
    pub fn dedup_window(&self) -> DedupWindow {
        DedupWindow::new(self.config.ingest.dedup_window.0)
    }

    /// The meter metrics of the catalog (`max`, `unique_count`, `latest`).
    fn meter_metrics(&self) -> Vec<String> {
        allot_lake::meters::meter_metrics(&self.catalog)
    }

    pub(crate) fn metrics_of(&self, kind: MetricKind) -> Vec<String> {
        self.catalog
            .iter()
            .filter(|(_, spec)| spec.kind == kind)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The longest hold of any gauge, in microseconds.
    fn longest_hold(&self) -> i64 {
        self.catalog
            .iter()
            .filter_map(|(_, spec)| spec.hold)
            .chain([DEFAULT_GAUGE_HOLD])
            .max()
            .and_then(|hold| i64::try_from(hold.as_micros()).ok())
            .unwrap_or(i64::MAX)
    }
}

pub(crate) async fn session_for(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    tenant: Option<&str>,
) -> Result<LakeSession, QueryError> {
    let scope = match tenant {
        Some(t) => Scope::Tenant(t.to_string()),
        None => Scope::AllTenants,
    };
    let limits = SessionLimits {
        dedup_window: settings.dedup_window(),
        ..SessionLimits::default()
    };
    let mut session = LakeSession::new(snapshot, &scope, &limits)?;
    if settings.use_rollups {
        session.attach_rollups(&snapshot.hourly, &settings.catalog)?;
    }
    Ok(session)
}

/// Usage per tenant for `[period start, until)`: counter sums per day and gauge
/// samples from one hold before the period.
pub(crate) async fn period_usage(
    session: &LakeSession,
    settings: &ReportSettings,
    filter: &UsageFilter,
    metrics: Option<&[String]>,
    period: Period,
    until: i64,
) -> Result<BTreeMap<String, TenantUsage>, QueryError> {
    let grouping = dimension_grouping(&[&settings.book]);
    usage_between(
        session,
        settings,
        &grouping,
        filter,
        metrics,
        period.start_micros(),
        until,
    )
    .await
}

/// How usage is summed to be priced by each of `books`: the counters whose
/// rates match on dimensions in any of them per the classes all their matches
/// tell apart ([`regroup`] gives each book its own dimensions), and per stretch
/// between the days any of their prices of those counters change.
pub(crate) fn dimension_grouping(books: &[&PriceBook]) -> ClassGrouping {
    let mut grouping = ClassGrouping::default();
    for book in books {
        for (metric, classes) in book.all_classes() {
            let merged = grouping
                .classes
                .get(metric)
                .map_or_else(|| classes.clone(), |seen| seen.union(classes));
            grouping.classes.insert(metric.to_string(), merged);
        }
    }
    for book in books {
        for metric in grouping.classes.keys() {
            grouping.price_days.extend(book.price_days(metric));
        }
    }
    grouping
}

/// `usage`, summed per the classes of `grouping`, as `book` needs it: each
/// counter sum keeps the values of the book's own dimensions for its metric, in
/// the book's order.
pub(crate) fn regroup(
    usage: &TenantUsage,
    grouping: &ClassGrouping,
    book: &PriceBook,
) -> TenantUsage {
    let mut regrouped = usage.clone();
    for day in &mut regrouped.counters {
        let read = grouping
            .classes
            .get(&day.metric)
            .map_or(&[][..], |classes| classes.dimensions());
        day.dimensions = book
            .dimensions(&day.metric)
            .iter()
            .map(|wanted| {
                read.iter()
                    .position(|d| d == wanted)
                    .and_then(|i| day.dimensions.get(i).cloned().flatten())
            })
            .collect();
    }
    regrouped
}

/// The meter metrics of the catalog among `metrics` (all when `None`).
fn wanted_meters(settings: &ReportSettings, metrics: Option<&[String]>) -> Vec<String> {
    settings
        .meter_metrics()
        .into_iter()
        .filter(|m| metrics.is_none_or(|only| only.contains(m)))
        .collect()
}

/// Usage per tenant for `[start, until)`: counter sums per day (those of
/// `grouping` per class and stretch instead) and gauge samples from one hold
/// before `start`.
pub(crate) async fn usage_between(
    session: &LakeSession,
    settings: &ReportSettings,
    grouping: &ClassGrouping,
    filter: &UsageFilter,
    metrics: Option<&[String]>,
    start: i64,
    until: i64,
) -> Result<BTreeMap<String, TenantUsage>, QueryError> {
    let wanted = |kind| -> Vec<String> {
        settings
            .metrics_of(kind)
            .into_iter()
            .filter(|m| metrics.is_none_or(|only| only.contains(m)))
            .collect()
    };
    // Counters whose rates match on dimensions are summed per class.
    let (dimensional, plain): (Vec<String>, Vec<String>) = wanted(MetricKind::Counter)
        .into_iter()
        .partition(|metric| grouping.classes.contains_key(metric));
    let mut counters = counter_days(session, filter, &plain, start, until).await?;
    let dimensional = ClassGrouping {
        classes: dimensional
            .into_iter()
            .map(|metric| {
                let classes = grouping.classes[&metric].clone();
                (metric, classes)
            })
            .collect(),
        price_days: grouping.price_days.clone(),
    };
    let by_tenant = dimensional_counter_days(session, filter, &dimensional, start, until).await?;
    for (tenant, days) in by_tenant {
        counters.entry(tenant).or_default().extend(days);
    }
    // Invoice segments are whole days, except one ending at `until`, whose day
    // is never a whole day of the range read.
    let gauges = gauge_series(
        session,
        filter,
        &wanted(MetricKind::Gauge),
        start.saturating_sub(settings.longest_hold()),
        until,
        GaugeSamples::WholeDaysRolledUp,
    )
    .await?;
    let meters = meter_days(
        session,
        filter,
        &settings.catalog,
        &wanted_meters(settings, metrics),
        start,
        until,
    )
    .await?;
    let mut usage: BTreeMap<String, TenantUsage> = BTreeMap::new();
    for (tenant, days) in meters {
        usage
            .entry(tenant.clone())
            .or_insert_with(|| TenantUsage {
                tenant_id: tenant,
                ..TenantUsage::default()
            })
            .meters = days;
    }
    for (tenant, days) in counters {
        usage
            .entry(tenant.clone())
            .or_insert_with(|| TenantUsage {
                tenant_id: tenant,
                ..TenantUsage::default()
            })
            .counters = days;
    }
    for (tenant, series) in gauges {
        // Samples that end before the period (all taken more than a hold before
        // it) do not make an invoice on their own.
        let reaches_period = series.iter().any(|s| {
            let hold = settings
                .catalog
                .get(&s.metric)
                .and_then(|spec| spec.hold)
                .unwrap_or(DEFAULT_GAUGE_HOLD);
            let hold = i64::try_from(hold.as_micros()).unwrap_or(i64::MAX);
            s.samples
                .iter()
                .any(|sample| sample.ts_micros.saturating_add(hold) > start)
        });
        let entry = usage.entry(tenant.clone());
        if reaches_period {
            entry
                .or_insert_with(|| TenantUsage {
                    tenant_id: tenant,
                    ..TenantUsage::default()
                })
                .gauges = series;
        } else if let std::collections::btree_map::Entry::Occupied(mut existing) = entry {
            existing.get_mut().gauges = series;
        }
    }
    Ok(usage)
}

/// Invoices of `period` for every tenant with usage in it (or just `tenant`),
/// ordered by tenant id.
pub async fn invoices(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
) -> Result<Vec<Invoice>, QueryError> {
    let session = session_for(snapshot, settings, tenant).await?;
    let filter = UsageFilter {
        tenant: tenant.map(str::to_string),
        ..UsageFilter::default()
    };
    let usage = period_usage(
        &session,
        settings,
        &filter,
        None,
        period,
        period.end_micros(),
    )
    .await?;
    usage
        .values()
        .map(|u| {
            invoice_until(
                &settings.book,
                &settings.catalog,
                period,
                u,
                period.end_micros(),
            )
        })
        .collect()
}

/// Splits every pool of `pools` that belongs to `period` between the tenants by their
/// quantity of the pool's driver metric (docs/reference.md#shared-cost-allocation). Rows
/// come pool by pool in file order, tenants ascending within a pool.
pub async fn allocation(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    pools: &[CostPool],
    period: Period,
) -> Result<Vec<AllocationRow>, QueryError> {
    let session = session_for(snapshot, settings, None).await?;
    let mut rows = Vec::new();
    for pool in pools.iter().filter(|p| p.period == period) {
        let filter = UsageFilter {
            tenant: None,
            region: pool.region.clone(),
            service: pool.service.clone(),
        };
        let driver = [pool.driver.clone()];
        let usage = period_usage(
            &session,
            settings,
            &filter,
            Some(&driver),
            period,
            period.end_micros(),
        )
        .await?;
        let spec = settings
            .catalog
            .get(&pool.driver)
            .ok_or_else(|| QueryError::Costs {
                row: pool.row,
                problem: format!("driver {} is not a metric of the catalog", pool.driver),
            })?;
        let mut quantities = BTreeMap::new();
        for (tenant, tenant_usage) in &usage {
            let quantity = period_quantity(spec, &pool.driver, period, tenant_usage)?;
            if !quantity.is_zero() {
                quantities.insert(tenant.clone(), quantity);
            }
        }
        rows.extend(allocate(pool, &quantities)?);
    }
    Ok(rows)
}

/// Noisy-neighbour rows of every tenant with usage in each bucket of the
/// request, ordered by metric, bucket, tenant.
pub async fn noisy(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    request: &NoisyRequest,
) -> Result<Vec<NoisyRow>, QueryError> {
    let params = NoisyParams {
        bucket_micros: request.bucket_micros(),
        ..NoisyParams::from(&settings.config.noisy)
    };
    let metrics = match request.metric() {
        Some(metric) => match settings.catalog.get(metric).map(|s| s.kind) {
            Some(MetricKind::Counter) => vec![metric.to_string()],
            Some(kind) => {
                return Err(QueryError::InvalidInput(format!(
                    "{metric} is a {} metric; noisy neighbours are found on counter metrics",
                    kind.as_str()
                )));
            }
            None => {
                return Err(QueryError::InvalidInput(format!(
                    "{metric} is not a metric of the catalog"
                )));
            }
        },
        None => settings.metrics_of(MetricKind::Counter),
    };
    let session = session_for(snapshot, settings, None).await?;
    noisy_rows(
        &session,
        &params,
        &metrics,
        (request.from(), request.to()),
        request.keep(),
    )
    .await
}

async fn noisy_rows(
    session: &LakeSession,
    params: &NoisyParams,
    metrics: &[String],
    range: (i64, i64),
    keep: Keep,
) -> Result<Vec<NoisyRow>, QueryError> {
    let usage = noisy_usage(session, params, metrics, range).await?;
    noisy_rows_of(params, metrics, range, &usage, keep)
}

/// What the noisy-neighbour rows of `[from, to)` are computed from: usage of
/// counter `metrics` per metric, tenant and bucket over the range and its
/// baseline, ordered by tenant then bucket.
pub(crate) async fn noisy_usage(
    session: &LakeSession,
    params: &NoisyParams,
    metrics: &[String],
    (from, to): (i64, i64),
) -> Result<BTreeMap<String, Vec<BucketUsage>>, QueryError> {
    let width = params.bucket_micros;
    if width <= 0 || (to - from) % width != 0 {
        return Err(QueryError::InvalidInput(
            "--to minus --from must be a whole number of buckets".to_string(),
        ));
    }
    let buckets = (to - from) / width + i64::from(params.baseline_buckets);
    if buckets > MAX_NOISY_BUCKETS {
        return Err(QueryError::InvalidInput(format!(
            "the range and the baseline span {buckets} buckets, more than the {MAX_NOISY_BUCKETS} \
             one report may use: widen the bucket or shorten the range"
        )));
    }
    // Nothing precedes the earliest instant reports support, and the engine's
    // nanosecond timestamps end in 1677: the baseline is read from the first
    // bucket of the grid at or after it, which leaves every figure the same.
    let reach = width.saturating_mul(i64::from(params.baseline_buckets));
    let first_supported = from + ceil_to_grid(EARLIEST_REPORT_MICROS - from, width);
    let baseline_start = from.saturating_sub(reach).max(first_supported);
    bucket_usage(
        session,
        &UsageFilter::default(),
        metrics,
        baseline_start,
        to,
        width,
    )
    .await
}

/// The noisy-neighbour rows of `[from, to)` for each of `metrics`, from their
/// [`noisy_usage`].
pub(crate) fn noisy_rows_of(
    params: &NoisyParams,
    metrics: &[String],
    (from, to): (i64, i64),
    usage: &BTreeMap<String, Vec<BucketUsage>>,
    keep: Keep,
) -> Result<Vec<NoisyRow>, QueryError> {
    let mut rows = Vec::new();
    for metric in metrics {
        let metric_usage = usage.get(metric).map(Vec::as_slice).unwrap_or_default();
        rows.extend(noisy_neighbours(
            metric,
            from,
            to,
            params,
            metric_usage,
            keep,
        )?);
    }
    Ok(rows)
}

/// Health as of `now` of every tenant with files in the lake or an entry in the
/// config (or just `tenant`), ordered by tenant id.
pub async fn health(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    now: i64,
    tenant: Option<&str>,
) -> Result<Vec<TenantHealth>, QueryError> {
    let tenants: BTreeSet<String> = match tenant {
        Some(t) => BTreeSet::from([t.to_string()]),
        None => snapshot
            .usage
            .tenants()
            .into_iter()
            .chain(settings.config.tenants.keys().cloned())
            .collect(),
    };
    // Rejected events need the all-tenant table; only counts per tenant leave it.
    let all = session_for(snapshot, settings, None).await?;
    let scoped;
    let session = match tenant {
        Some(t) => {
            scoped = session_for(snapshot, settings, Some(t)).await?;
            &scoped
        }
        None => &all,
    };
    let filter = UsageFilter {
        tenant: tenant.map(str::to_string),
        ..UsageFilter::default()
    };
    let windows = HealthWindows::at(settings, now)?;
    let counters = settings.metrics_of(MetricKind::Counter);
    // Four independent reads of the lake, overlapped: one's planning and
    // post-processing runs while another scans.
    let (usage, recent, rejected, flags) = tokio::try_join!(
        period_usage(session, settings, &filter, None, windows.period, now),
        activity(session, &filter, windows.activity_from, now),
        rejected_counts(&all, windows.activity_from, now),
        noisy_rows(
            &all,
            &windows.noisy,
            &counters,
            windows.noisy_range,
            Keep::Flagged,
        ),
    )?;
    health_rows(
        settings,
        now,
        tenants,
        |tenant| usage.get(tenant),
        |tenant| recent.get(tenant).cloned(),
        &rejected,
        &flags,
    )
}

/// The windows health reads as of one instant (docs/reference.md#tenant-health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthWindows {
    /// The month to date ends at the instant.
    pub period: Period,
    /// Start of the last 24 h, for activity and rejected events.
    pub activity_from: i64,
    /// The detector's settings.
    pub noisy: NoisyParams,
    /// The buckets searched for noisy-neighbour flags: those on the grid that
    /// start within the last 24 h.
    pub noisy_range: (i64, i64),
}

impl HealthWindows {
    pub(crate) fn at(settings: &ReportSettings, now: i64) -> Result<HealthWindows, QueryError> {
        let noisy = NoisyParams::from(&settings.config.noisy);
        let activity_from = now - HEALTH_WINDOW_MICROS;
        Ok(HealthWindows {
            period: Period::containing(now)?,
            activity_from,
            noisy_range: (
                ceil_to_grid(activity_from, noisy.bucket_micros),
                ceil_to_grid(now, noisy.bucket_micros),
            ),
            noisy,
        })
    }
}

/// The health rows of `tenants` as of `now`, from what the lake says of them:
/// each one's month-to-date usage and last-24-h activity, the rejected events
/// of the last 24 h by tenant and the noisy-neighbour flags of every tenant.
pub(crate) fn health_rows<'u>(
    settings: &ReportSettings,
    now: i64,
    tenants: BTreeSet<String>,
    usage_of: impl Fn(&str) -> Option<&'u TenantUsage>,
    activity_of: impl Fn(&str) -> Option<Activity>,
    rejected: &BTreeMap<String, u64>,
    flags: &[NoisyRow],
) -> Result<Vec<TenantHealth>, QueryError> {
    let period = Period::containing(now)?;
    let mut flags_by_tenant: BTreeMap<&str, u32> = BTreeMap::new();
    let mut noisy_metrics: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for row in flags {
        *flags_by_tenant.entry(row.tenant_id.as_str()).or_default() += 1;
        noisy_metrics
            .entry(row.tenant_id.as_str())
            .or_default()
            .insert(row.metric.as_str());
    }

    let mut report = Vec::with_capacity(tenants.len());
    for tenant_id in tenants {
        let tenant_usage = usage_of(&tenant_id)
            .cloned()
            .unwrap_or_else(|| TenantUsage {
                tenant_id: tenant_id.clone(),
                ..TenantUsage::default()
            });
        let mut mtd_usage: BTreeMap<String, BigDecimal> = BTreeMap::new();
        for day in &tenant_usage.counters {
            *mtd_usage
                .entry(day.metric.clone())
                .or_insert_with(BigDecimal::zero) += &day.raw_sum;
        }
        // A meter's month-to-date figure (a peak, a count of distinct values,
        // a last value) is what its monthly quota is measured against.
        for metric in tenant_usage
            .meters
            .iter()
            .map(|m| &m.metric)
            .collect::<BTreeSet<_>>()
        {
            let Some(spec) = settings.catalog.get(metric) else {
                continue;
            };
            let figure: BigDecimal = tenant_usage
                .meter_figure_by_day(spec, metric, period.start_micros(), now)?
                .values()
                .sum();
            mtd_usage.insert(metric.clone(), figure);
        }
        let (mtd_cost, unpriced) = priced_cost_until(settings, period, &tenant_usage, now)?;
        let active = activity_of(&tenant_id);
        let inputs = HealthInputs {
            tenant_id: tenant_id.clone(),
            now_micros: now,
            mtd_usage,
            gauge_levels: gauge_levels(&tenant_usage, &settings.catalog, now),
            noisy_flags_24h: flags_by_tenant
                .get(tenant_id.as_str())
                .copied()
                .unwrap_or(0),
            noisy_metrics: noisy_metrics
                .get(tenant_id.as_str())
                .into_iter()
                .flatten()
                .map(|m| (*m).to_string())
                .collect(),
            last_event_micros: active.as_ref().map(|a| a.last_event_micros),
            events_24h: active.as_ref().map_or(0, |a| a.events),
            rejected_24h: rejected.get(&tenant_id).copied().unwrap_or(0),
            mtd_cost,
            unpriced,
        };
        report.push(tenant_health(
            &inputs,
            settings.config.tenants.get(&tenant_id),
            &settings.config.health,
        )?);
    }
    Ok(report)
}

/// What alert rules read besides health, as of `now`, for every tenant: the
/// latest accepted event of the last `active_window` (silent tenants) and the
/// rejected events of the last `rejected_window` (docs/reference.md#alert-rules).
/// Two aggregate reads of the lake, made once per refresh whatever the rules.
pub async fn alert_signals(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    now: i64,
    active_window: i64,
    rejected_window: i64,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, u64>), QueryError> {
    let session = session_for(snapshot, settings, None).await?;
    let every_tenant = UsageFilter::default();
    let (recent, rejected) = tokio::try_join!(
        activity(
            &session,
            &every_tenant,
            now.saturating_sub(active_window),
            now
        ),
        rejected_counts(&session, now.saturating_sub(rejected_window), now),
    )?;
    let last_events = recent
        .into_iter()
        .map(|(tenant, active)| (tenant, active.last_event_micros))
        .collect();
    Ok((last_events, rejected))
}

/// The cost of `usage` until `until` (after discount, before any commitment
/// true-up), leaving out each metric that no rate covers,
/// and those metrics. An invoice refuses such usage (a finance report must not
/// bill it as zero), but health still has a status to give: it names them instead.
fn priced_cost_until(
    settings: &ReportSettings,
    period: Period,
    usage: &TenantUsage,
    until: i64,
) -> Result<(BigDecimal, Vec<String>), QueryError> {
    let mut priced = usage.clone();
    let mut unpriced = Vec::new();
    loop {
        match invoice_until(&settings.book, &settings.catalog, period, &priced, until) {
            // The usage's cost: a commitment true-up is not spent yet, and the
            // forecast scales this figure with the elapsed time.
            Ok(invoice) => return Ok((&invoice.total - &invoice.true_up, unpriced)),
            Err(QueryError::NoRate { metric, .. }) if !unpriced.contains(&metric) => {
                priced.counters.retain(|day| day.metric != metric);
                priced.gauges.retain(|series| series.metric != metric);
                priced.meters.retain(|day| day.metric != metric);
                unpriced.push(metric);
            }
            Err(err) => return Err(err),
        }
    }
}

/// One point of a usage chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePoint {
    /// The metric.
    pub metric: String,
    /// Its billing unit.
    pub unit: String,
    /// Start of the bucket, UTC microseconds.
    pub bucket_start: i64,
    /// Counters: Σ value in the bucket. Gauges: the time-weighted average level
    /// over the bucket (Σ over the tenant's series), in raw units. Meters: the
    /// bucket's own figure (its largest value, its last value, or the number
    /// of distinct values it saw).
    pub raw: BigDecimal,
    /// `raw` / divisor, rounded half-to-even to 12 places.
    pub quantity: BigDecimal,
}

/// The columns of a usage series, in CSV order.
pub const USAGE_COLUMNS: [&str; 5] = ["metric", "unit", "bucket_start", "raw", "quantity"];

impl UsagePoint {
    /// The point as CSV fields in [`USAGE_COLUMNS`] order.
    pub fn csv_record(&self) -> Vec<String> {
        vec![
            self.metric.clone(),
            self.unit.clone(),
            crate::period::format_micros(self.bucket_start),
            crate::rounding::format_fixed(&self.raw, crate::rounding::QUANTITY_SCALE),
            crate::rounding::format_fixed(&self.quantity, crate::rounding::QUANTITY_SCALE),
        ]
    }
}

/// The most buckets one noisy-neighbour report may use (defined beside the
/// `[noisy]` settings it bounds).
pub use allot_schemas::config::MAX_NOISY_BUCKETS;

/// A tenant's usage per metric and bucket of `[from, to)` (buckets on the grid
/// starting at `from`), for charts. Only buckets with usage are returned.
pub async fn usage_series(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    request: &UsageRequest,
) -> Result<Vec<UsagePoint>, QueryError> {
    let width = request.bucket_micros();
    let (from, to, tenant) = (request.from(), request.to(), request.tenant().as_str());
    if let Some(metric) = request.metric()
        && !settings.catalog.contains(metric)
    {
        return Err(QueryError::InvalidInput(format!(
            "{metric} is not a metric of the catalog"
        )));
    }
    let session = session_for(snapshot, settings, Some(tenant)).await?;
    let filter = UsageFilter {
        tenant: Some(tenant.to_string()),
        ..UsageFilter::default()
    };
    let mut points = Vec::new();
    for (metric, spec) in settings.catalog.iter() {
        if request.metric().is_some_and(|m| m != metric) {
            continue;
        }
        match spec.kind {
            MetricKind::Counter => {
                let usage = bucket_usage(&session, &filter, &[metric.to_string()], from, to, width)
                    .await?
                    .remove(metric)
                    .unwrap_or_default();
                points.extend(usage.into_iter().map(|b| UsagePoint {
                    metric: metric.to_string(),
                    unit: spec.unit.clone(),
                    bucket_start: b.bucket_start,
                    quantity: crate::rounding::div_quantity(&b.usage, &spec.divisor),
                    raw: b.usage,
                }));
            }
            MetricKind::Gauge => {
                let hold = spec
                    .hold
                    .and_then(|h| i64::try_from(h.as_micros()).ok())
                    .unwrap_or(i64::MAX);
                let whole_days = [width, from, to]
                    .iter()
                    .all(|t| t.rem_euclid(MICROS_PER_DAY) == 0);
                let series = gauge_series(
                    &session,
                    &filter,
                    &[metric.to_string()],
                    from.saturating_sub(hold),
                    to,
                    if whole_days {
                        GaugeSamples::WholeDaysRolledUp
                    } else {
                        GaugeSamples::Every
                    },
                )
                .await?
                .remove(tenant)
                .unwrap_or_default();
                if series.is_empty() {
                    continue;
                }
                let mut start = from;
                while start < to {
                    let end = (start + width).min(to);
                    let weighted = gauge_weighted_sum(spec, metric, &series, start, end);
                    if !weighted.is_zero() {
                        let raw = crate::rounding::div_quantity(
                            &weighted,
                            &BigDecimal::from(end - start),
                        );
                        points.push(UsagePoint {
                            metric: metric.to_string(),
                            unit: spec.unit.clone(),
                            bucket_start: start,
                            quantity: crate::rounding::div_quantity(&raw, &spec.divisor),
                            raw,
                        });
                    }
                    start = end;
                }
            }
            MetricKind::Max | MetricKind::UniqueCount | MetricKind::Latest => {
                // Each bucket's own figure: its peak, its last value, or how
                // many distinct values it saw.
                let buckets = meter_buckets(
                    &session,
                    &filter,
                    &settings.catalog,
                    &[metric.to_string()],
                    (from, to),
                    from,
                    width,
                )
                .await?;
                let mut figures: Vec<(i64, BigDecimal)> = buckets
                    .into_iter()
                    .filter_map(|((_, _, start), summary)| {
                        summary.figure(spec.kind).map(|raw| (start, raw))
                    })
                    .collect();
                figures.sort_by_key(|(start, _)| *start);
                points.extend(figures.into_iter().map(|(bucket_start, raw)| UsagePoint {
                    metric: metric.to_string(),
                    unit: spec.unit.clone(),
                    bucket_start,
                    quantity: crate::rounding::div_quantity(&raw, &spec.divisor),
                    raw,
                }));
            }
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    //! The parts of report assembly that need no lake: settings and pricing
    //! health's month-to-date cost.

    use allot_schemas::gauge::{GaugeSample, GaugeSeries};
    use chrono::NaiveDate;

    use super::*;
    use crate::pricing::CounterDay;
    use crate::test_support::{d, ts};

    fn settings(toml: &str) -> ReportSettings {
        let config = Config::from_toml_str(toml, "test.toml", std::iter::empty()).unwrap();
        ReportSettings::new(config)
    }

    /// Compute is priced; egress and storage have no rate.
    const COMPUTE_ONLY: &str = r#"
[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.0400"
"#;

    fn usage() -> TenantUsage {
        let day = NaiveDate::from_ymd_opt(2026, 1, 10).unwrap();
        let counter = |metric: &str, sum: &str| CounterDay {
            dimensions: Vec::new(),
            metric: metric.to_string(),
            day,
            raw_sum: d(sum),
        };
        TenantUsage {
            meters: Vec::new(),
            tenant_id: "acme".to_string(),
            counters: vec![
                counter("compute_seconds", "36000"),
                counter("egress_bytes", "1073741824"),
            ],
            gauges: vec![GaugeSeries {
                metric: "storage_bytes".to_string(),
                resource: None,
                samples: vec![GaugeSample {
                    ts_micros: ts("2026-01-10T00:00:00Z"),
                    value: d("1000"),
                }],
                held: Vec::new(),
            }],
        }
    }

    #[test]
    fn health_prices_what_has_a_rate_and_names_the_rest() {
        let settings = settings(COMPUTE_ONLY);
        let period = Period::parse("2026-01").unwrap();
        let until = ts("2026-01-20T00:00:00Z");
        // An invoice refuses the unpriced usage outright...
        assert!(matches!(
            invoice_until(&settings.book, &settings.catalog, period, &usage(), until),
            Err(QueryError::NoRate { .. })
        ));
        // ...health prices the rest: 10 vCPU-hours × 0.04.
        let (cost, mut unpriced) = priced_cost_until(&settings, period, &usage(), until).unwrap();
        unpriced.sort();
        assert_eq!(cost, d("0.40"));
        assert_eq!(unpriced, ["egress_bytes", "storage_bytes"]);
    }

    #[test]
    fn settings_split_the_catalog_by_kind_and_know_the_longest_hold() {
        let settings = settings(
            r#"
[metrics.storage_bytes]
kind = "gauge"
unit = "GiB-month"
divisor = "1073741824"
hold = "3d"
"#,
        );
        assert!(
            settings
                .metrics_of(MetricKind::Gauge)
                .contains(&"storage_bytes".to_string())
        );
        assert!(
            settings
                .metrics_of(MetricKind::Counter)
                .contains(&"compute_seconds".to_string())
        );
        assert_eq!(settings.longest_hold(), 3 * MICROS_PER_DAY);
        assert_eq!(
            settings.dedup_window().micros(),
            i64::try_from(settings.config.ingest.dedup_window.0.as_micros()).unwrap()
        );
    }
}
