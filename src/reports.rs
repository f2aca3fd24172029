//! The report subcommands: `invoice`, `preview`, `allocate`, `noisy`, `health`
//! and `sql`.
//! (`close`, `verify` and `margin` are in `close.rs`.)
//!
//! Each parses its flags into the query crate's types, runs the report on the
//! lake's latest snapshot and prints CSV (default) or JSON on stdout.

use std::path::PathBuf;
use std::sync::Arc;

use allot_lake::session::Scope;
use allot_lake::snapshot::LakeSnapshot;
use allot_query::QueryError;
use allot_query::allocation::parse_costs_csv;
use allot_query::closing::{self, InvoiceView};
use allot_query::period::Period;
use allot_query::preview::{MAX_PRICE_BOOK_BYTES, preview_months};
use allot_query::render::{
    ReportTable, allocation_table, health_json, health_table, invoice_json, invoices_table,
    noisy_table, preview_table,
};
use allot_query::reports::{self, ReportSettings};
use allot_query::request::{NoisyRequest, RawNoisyRequest};
use allot_query::sandbox::{SqlLimits, SqlPool};
use allot_schemas::layout::LakeLocation;
use allot_schemas::tenant::TenantId;
use allot_schemas::time::parse_report_instant;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::{Failure, lake_location, load_config};

/// Output format of a report.
#[derive(Clone, Copy, Default, ValueEnum)]
pub enum ReportFormat {
    /// CSV with a header row.
    #[default]
    Csv,
    /// JSON.
    Json,
}

/// Flags every report takes.
#[derive(Args)]
pub struct LakeArgs {
    /// The lake: a directory or an object-store URL (default: `lake` from the config).
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) lake: Option<String>,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
    pub(crate) format: ReportFormat,
}

/// `allot invoice`.
#[derive(Args)]
pub struct InvoiceArgs {
    /// The billing period, `YYYY-MM` (UTC calendar month).
    #[arg(long, value_name = "YYYY-MM")]
    month: String,
    /// Only this tenant's invoice.
    #[arg(long)]
    tenant: Option<TenantId>,
    /// Recompute a closed month from the lake and the current configuration
    /// instead of returning its final invoice.
    #[arg(long, conflicts_with = "revision")]
    live: bool,
    /// The final invoice of this revision of a closed month (default: the newest).
    #[arg(long, value_name = "N")]
    revision: Option<i32>,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot preview`.
#[derive(Args)]
pub struct PreviewArgs {
    /// The month to price, `YYYY-MM` (open, or closed: read at its recorded
    /// `usage_events` version).
    #[arg(long, value_name = "YYYY-MM", required_unless_present = "months")]
    month: Option<String>,
    /// A range of months instead, `YYYY-MM..YYYY-MM` (both included), priced
    /// from one read of the open months.
    #[arg(long, value_name = "A..B", conflicts_with = "month")]
    months: Option<String>,
    /// The proposed price book: the `[[rates]]` and `[tenants.*]` sections of
    /// an allot.toml.
    #[arg(long, value_name = "FILE")]
    price_book: PathBuf,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<TenantId>,
    /// One row per metric, discount, true-up and adjustments, then the total.
    #[arg(long)]
    lines: bool,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot preview --month M --price-book FILE`: prices months under a
/// proposed price book beside their invoices; writes nothing.
pub async fn preview(args: PreviewArgs) -> Result<(), Failure> {
    let months = preview_months(args.month.as_deref(), args.months.as_deref()).map_err(|e| {
        Failure::usage(format!(
            "--{}: {e}",
            if args.months.is_some() {
                "months"
            } else {
                "month"
            }
        ))
    })?;
    let loaded = load(&args.lake).await?;
    let flag = format!("--price-book {}", args.price_book.display());
    let bytes =
        std::fs::read(&args.price_book).map_err(|e| Failure::usage(format!("{flag}: {e}")))?;
    if bytes.len() > MAX_PRICE_BOOK_BYTES {
        return Err(Failure::usage(format!(
            "{flag}: larger than {MAX_PRICE_BOOK_BYTES} bytes"
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| Failure::usage(format!("{flag}: not UTF-8 text")))?;
    let proposed = loaded
        .settings
        .config
        .with_price_book(&text, &args.price_book.display().to_string())
        .map_err(Failure::usage)?;
    if let Some(t) = &args.tenant {
        known_tenant(&loaded, t, "--tenant ")?;
    }
    let mut proposed = ReportSettings::new(proposed);
    proposed.use_rollups = loaded.settings.use_rollups;
    let previews = allot_query::preview::preview(
        &loaded.location,
        &loaded.snapshot,
        &loaded.settings,
        &proposed,
        &months,
        args.tenant.as_ref().map(TenantId::as_str),
    )
    .await
    .map_err(failure)?;
    print_table(&preview_table(&previews, args.lines), loaded.format);
    Ok(())
}

/// `allot allocate`.
#[derive(Args)]
pub struct AllocateArgs {
    /// The costs CSV: `period,pool,amount,currency,driver[,region][,service]`.
    #[arg(long, value_name = "FILE")]
    costs: PathBuf,
    /// The period to allocate, `YYYY-MM`.
    #[arg(long, value_name = "YYYY-MM")]
    month: String,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot noisy`.
#[derive(Args)]
pub struct NoisyArgs {
    /// Start of the first bucket (RFC 3339, or a date for its midnight UTC).
    #[arg(long, value_name = "TS")]
    from: String,
    /// End of the last bucket, exclusive.
    #[arg(long, value_name = "TS")]
    to: String,
    /// One counter metric (default: every counter metric of the catalog).
    #[arg(long)]
    metric: Option<String>,
    /// Bucket width, e.g. `1h`, at most `366d` (default: `noisy.bucket` from
    /// the config, as for `GET /v1/noisy-neighbors`).
    #[arg(long, value_name = "DURATION")]
    bucket: Option<String>,
    /// Print every tenant-bucket row with a `flagged` column, not just the flagged rows.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot health`.
#[derive(Args)]
pub struct HealthArgs {
    /// The instant of the report (RFC 3339, or a date for its midnight UTC; default: now).
    #[arg(long, value_name = "TS")]
    as_of: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<TenantId>,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot sql`.
#[derive(Args)]
pub struct SqlArgs {
    /// The query: a single SELECT (or WITH … SELECT, EXPLAIN).
    query: String,
    /// Run it as this tenant: only its events are visible.
    #[arg(long)]
    tenant: Option<TenantId>,
    #[command(flatten)]
    lake: LakeArgs,
}

/// Maps a query-engine error to an exit status: 2 for the caller's input, else 1.
pub(crate) fn failure(error: impl Into<QueryError>) -> Failure {
    let error = error.into();
    if error.is_bad_input() {
        Failure::usage(error)
    } else {
        Failure::internal(error)
    }
}

pub(crate) struct Loaded {
    pub(crate) settings: ReportSettings,
    pub(crate) snapshot: LakeSnapshot,
    pub(crate) format: ReportFormat,
    pub(crate) location: LakeLocation,
}

pub(crate) async fn load(args: &LakeArgs) -> Result<Loaded, Failure> {
    let config = load_config(args.config.as_deref())?;
    let location = lake_location(args.lake.as_deref(), &config)?;
    let settings = ReportSettings::new(config);
    let snapshot = LakeSnapshot::load(&location).await.map_err(|e| match e {
        allot_lake::LakeError::NoLake => Failure::usage(format!("--lake {}: {e}", location.root())),
        other => failure(other),
    })?;
    Ok(Loaded {
        settings,
        snapshot,
        format: args.format,
        location,
    })
}

/// Refuses (exit 2) a tenant the lake has no events of and the configuration does
/// not name; `flag` prefixes the message (`"--tenant "`, or empty for an
/// argument).
pub(crate) fn known_tenant(loaded: &Loaded, tenant: &TenantId, flag: &str) -> Result<(), Failure> {
    if loaded.settings.tenant_exists(&loaded.snapshot, tenant) {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "{flag}{tenant}: no such tenant (no events in the lake, no [tenants.{tenant}] in the config)"
    )))
}

pub(crate) fn month_flag(text: &str) -> Result<Period, Failure> {
    Period::parse(text).map_err(|e| Failure::usage(format!("--month: {e}")))
}

/// Parses an instant flag: RFC 3339, or `YYYY-MM-DD` for 00:00 UTC that day,
/// within the range reports support.
fn instant_flag(flag: &str, text: &str) -> Result<i64, Failure> {
    parse_report_instant(text).map_err(|problem| Failure::usage(format!("--{flag} {problem}")))
}

pub(crate) fn print_table(table: &ReportTable, format: ReportFormat) {
    match format {
        ReportFormat::Csv => print!("{}", table.to_csv()),
        ReportFormat::Json => print_json(&table.to_json()),
    }
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string())
    );
}

/// `allot invoice --month M [--tenant T] [--live | --revision N]`: the final
/// invoices of a closed month as stored, else drafts computed now.
pub async fn invoice(args: InvoiceArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let loaded = load(&args.lake).await?;
    let view = match (args.live, args.revision) {
        (true, _) => InvoiceView::Live,
        (false, Some(revision)) => InvoiceView::Revision(revision),
        (false, None) => InvoiceView::Current,
    };
    let invoices = match &args.tenant {
        // One tenant: its invoice, an empty one when it owes nothing this month.
        Some(t) => {
            known_tenant(&loaded, t, "--tenant ")?;
            let invoice = closing::tenant_invoice(
                &loaded.location,
                &loaded.snapshot,
                &loaded.settings,
                period,
                t.as_str(),
                view,
            );
            vec![invoice.await.map_err(failure)?]
        }
        None => closing::month_invoices(
            &loaded.location,
            &loaded.snapshot,
            &loaded.settings,
            period,
            None,
            view,
        )
        .await
        .map_err(failure)?,
    };
    match loaded.format {
        ReportFormat::Csv => print!("{}", invoices_table(&invoices).to_csv()),
        ReportFormat::Json => {
            print_json(&Value::Array(invoices.iter().map(invoice_json).collect()))
        }
    }
    Ok(())
}

/// `allot allocate --costs F --month M`.
pub async fn allocate(args: AllocateArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let text = std::fs::read_to_string(&args.costs)
        .map_err(|e| Failure::usage(format!("--costs {}: {e}", args.costs.display())))?;
    let loaded = load(&args.lake).await?;
    let pools = parse_costs_csv(
        &text,
        &loaded.settings.catalog,
        &loaded.settings.config.currency,
    )
    .map_err(|e| Failure::usage(format!("--costs {}: {e}", args.costs.display())))?;
    let rows = reports::allocation(&loaded.snapshot, &loaded.settings, &pools, period)
        .await
        .map_err(failure)?;
    print_table(&allocation_table(&rows), loaded.format);
    Ok(())
}

/// `allot noisy --from TS --to TS [--metric M] [--bucket D] [--all]`.
pub async fn noisy(args: NoisyArgs) -> Result<(), Failure> {
    let loaded = load(&args.lake).await?;
    let request = NoisyRequest::try_from(RawNoisyRequest {
        from: Some(args.from),
        to: Some(args.to),
        metric: args.metric,
        bucket: args.bucket,
        all: args.all,
        now: chrono::Utc::now().timestamp_micros(),
        config: &loaded.settings.config,
    })
    .map_err(Failure::usage)?;
    let rows = reports::noisy(&loaded.snapshot, &loaded.settings, &request)
        .await
        .map_err(failure)?;
    print_table(&noisy_table(&rows, args.all), loaded.format);
    Ok(())
}

/// `allot health [--as-of TS] [--tenant T]`.
pub async fn health(args: HealthArgs) -> Result<(), Failure> {
    let now = match &args.as_of {
        Some(text) => instant_flag("as-of", text)?,
        None => chrono::Utc::now().timestamp_micros(),
    };
    let tenant = args.tenant.as_ref().map(TenantId::as_str);
    let loaded = load(&args.lake).await?;
    let report = reports::health(&loaded.snapshot, &loaded.settings, now, tenant)
        .await
        .map_err(failure)?;
    match loaded.format {
        ReportFormat::Csv => print!("{}", health_table(&report).to_csv()),
        ReportFormat::Json => print_json(&Value::Array(
            report
                .iter()
                .map(|h| health_json(h, &loaded.settings.config.currency))
                .collect(),
        )),
    }
    Ok(())
}

/// `allot sql [--tenant T] "SELECT …"`.
pub async fn sql(args: SqlArgs) -> Result<(), Failure> {
    let loaded = load(&args.lake).await?;
    let scope = match args.tenant {
        Some(t) => Scope::Tenant(t.into_string()),
        None => Scope::AllTenants,
    };
    let limits = SqlLimits::from(&loaded.settings.config);
    // The query's own threads: their stacks, not main's, take the engine's
    // recursion, and the time limit stops it.
    let pool = SqlPool::new(SqlPool::default_threads()).map_err(failure)?;
    let output = pool
        .run(Arc::new(loaded.snapshot), scope, args.query, limits)
        .await
        .map_err(failure)?;
    match loaded.format {
        ReportFormat::Csv => print!("{}", output.to_csv()),
        ReportFormat::Json => print_json(&output.to_json()),
    }
    Ok(())
}
