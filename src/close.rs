//! The period-close subcommands (docs/reference.md#period-close): `close`,
//! `verify`, `margin` and `certificate`.
//!
//! `close` computes the closing in the query crate and commits it with
//! `allot_query::close::commit_closing`, which appends to the lake through
//! `allot-lake`'s log appender (`allot_lake::append`); `verify` time-travels
//! `usage_events` to the version a closing read and recomputes it with the
//! recorded configuration.

use std::path::PathBuf;

use allot_lake::compact::COMPACTION_APP_ID;
use allot_lake::dedup::DedupWindow;
use allot_lake::snapshot::LakeSnapshot;
use allot_lake::txns::recorded_txns;
use allot_query::QueryError;
use allot_query::allocation::parse_costs_csv;
use allot_query::closing::{
    self, CERTIFICATE_COLUMNS, CloseRequest, MARGIN_COLUMNS, PreviousClose, Verdict,
};
use allot_query::period::format_micros;
use allot_query::render::ReportTable;
use allot_schemas::layout::LakeTable;
use clap::Args;

use crate::reports::{LakeArgs, failure, load, month_flag, print_table, tenant_flag};
use crate::{Failure, who};

/// `allot close`.
#[derive(Args)]
pub struct CloseArgs {
    /// The month to close, `YYYY-MM`; it must have ended.
    #[arg(long, value_name = "YYYY-MM")]
    month: String,
    /// Freeze the allocation of this costs CSV with the invoices.
    #[arg(long, value_name = "FILE")]
    costs: Option<PathBuf>,
    /// Write a new revision of a closed month (the older stays readable).
    #[arg(long, requires = "reason")]
    restate: bool,
    /// Why the month is restated (recorded in the closing).
    #[arg(long, value_name = "TEXT", requires = "restate")]
    reason: Option<String>,
    /// Who closes (default: $USER).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The closed month, `YYYY-MM`.
    #[arg(long, value_name = "YYYY-MM", required_unless_present = "rollups")]
    month: Option<String>,
    /// Verify this revision (default: the newest).
    #[arg(long, value_name = "N", conflicts_with = "rollups")]
    revision: Option<i32>,
    /// Instead of a closing, recompute the rollups that reports use from the
    /// raw events and compare them (exit 1 naming the partitions that differ).
    #[arg(long, conflicts_with = "month")]
    rollups: bool,
    /// With --rollups: how many partitions to recompute, spread over the lake
    /// (0: every one).
    #[arg(long, value_name = "N", default_value_t = 200, requires = "rollups")]
    sample: usize,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot margin`.
#[derive(Args)]
pub struct MarginArgs {
    /// The month, `YYYY-MM`.
    #[arg(long, value_name = "YYYY-MM")]
    month: String,
    /// The costs CSV (a closed month with a frozen allocation uses that instead).
    #[arg(long, value_name = "FILE")]
    costs: PathBuf,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot certificate`.
#[derive(Args)]
pub struct CertificateArgs {
    /// The closed month, `YYYY-MM`.
    #[arg(long, value_name = "YYYY-MM")]
    month: String,
    /// Only this tenant's days.
    #[arg(long)]
    tenant: Option<String>,
    /// This revision (default: the newest).
    #[arg(long, value_name = "N")]
    revision: Option<i32>,
    #[command(flatten)]
    lake: LakeArgs,
}

fn read_costs(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("--costs {}: {e}", path.display())))
}

/// `allot close --month M [--costs F] [--restate --reason TEXT]`.
pub async fn close(args: CloseArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let now = chrono::Utc::now().timestamp_micros();
    if now < period.end_micros() {
        return Err(Failure::usage(format!(
            "--month {period} has not ended yet (it ends at {})",
            format_micros(period.end_micros())
        )));
    }
    let costs_text = args.costs.as_deref().map(read_costs).transpose()?;
    let loaded = load(&args.lake).await?;
    let closings = closing::closings(&loaded.location).await.map_err(failure)?;
    let newest = closing::find_closing(&closings, period, None);
    let revision = match (newest, args.restate) {
        (Some(closed), false) => {
            return Err(Failure::usage(format!(
                "{period} is already closed (revision {}, {}); use --restate --reason TEXT",
                closed.revision, closed.closed_at
            )));
        }
        (None, true) => {
            return Err(Failure::usage(format!(
                "--restate: {period} is not closed yet; close it first"
            )));
        }
        (Some(closed), true) => closed.revision + 1,
        (None, false) => 0,
    };
    let costs = match (costs_text, &args.costs) {
        (Some(text), Some(path)) => {
            let pools = parse_costs_csv(
                &text,
                &loaded.settings.catalog,
                &loaded.settings.config.currency,
            )
            .map_err(|e| Failure::usage(format!("--costs {}: {e}", path.display())))?;
            Some((text, pools))
        }
        _ => None,
    };
    let previous = match closing::find_closing(&closings, period.prev(), None) {
        Some(closed) => Some(
            PreviousClose::load(&loaded.location, closed)
                .await
                .map_err(failure)?,
        ),
        None => None,
    };
    let request = CloseRequest {
        month: period,
        revision,
        close_id: format!("{period}-r{revision}-{now}"),
        closed_at: format_micros(now),
        who: who(args.by),
        reason: args.reason,
        config: &loaded.settings.config,
        costs,
        previous: previous.as_ref(),
        txn_offsets: Default::default(),
    };
    let mut plan = closing::plan_close(&loaded.snapshot, request)
        .await
        .map_err(failure)?;
    // The offsets of every writer that committed to the table, as it records
    // them at that version: each collector's app id names its own consumer
    // group, wherever that group was set. Compaction's fence is no offset.
    if let Some(version) = loaded.snapshot.usage.version {
        let mut recorded = recorded_txns(&loaded.location, LakeTable::UsageEvents, version)
            .await
            .map_err(failure)?;
        recorded.remove(COMPACTION_APP_ID);
        plan.closing.txn_offsets = recorded;
    }
    allot_query::close::commit_closing(&loaded.location, &plan)
        .await
        .map_err(|e| match e {
            QueryError::Lake(allot_lake::LakeError::Fenced(_)) => Failure::usage(format!(
                "{period} revision {revision} was closed by another close meanwhile"
            )),
            other => Failure::internal(other),
        })?;
    let total = closing::sum_of_totals(&plan.invoices).map_err(failure)?;
    println!(
        "closed {period} revision {revision}: {} invoices totalling {} {}, {} tenant-days certified, usage_events version {}, configuration sha256 {}",
        plan.invoices.len(),
        total,
        loaded.settings.config.currency,
        plan.closing.certificate.len(),
        plan.closing.usage_version,
        plan.closing.config_sha256
    );
    Ok(())
}

/// `allot verify --month M [--revision N]`.
pub async fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let Some(month) = &args.month else {
        return verify_rollups(&args).await;
    };
    let period = month_flag(month)?;
    let loaded = load(&args.lake).await?;
    let closings = closing::closings(&loaded.location).await.map_err(failure)?;
    let Some(closed) = closing::find_closing(&closings, period, args.revision) else {
        return Err(Failure::usage(match args.revision {
            Some(revision) => format!("{period} has no closing of revision {revision}"),
            None => format!("{period} is not closed"),
        }));
    };
    let label = format!("{period} revision {}", closed.revision);
    let snapshot = LakeSnapshot::load_at(&loaded.location, Some(closed.usage_version))
        .await
        .map_err(|e| {
            Failure::internal(format!(
                "{label}: usage_events version {} cannot be read: {e}",
                closed.usage_version
            ))
        })?;
    match closing::verify(&loaded.location, &snapshot, closed, &closings).await {
        Ok(Verdict::Verified { erased }) if erased.is_empty() => {
            println!("verified");
            Ok(())
        }
        Ok(Verdict::Verified { erased }) => {
            println!(
                "verified, but for {} (erased since the close: not compared, nor the allocation)",
                erased.join(", ")
            );
            Ok(())
        }
        Ok(Verdict::Differs(difference)) => Err(Failure::internal(difference)),
        Err(e) => Err(Failure::internal(format!("{label}: cannot recompute: {e}"))),
    }
}

/// `allot verify --rollups [--sample N]`.
async fn verify_rollups(args: &VerifyArgs) -> Result<(), Failure> {
    let loaded = load(&args.lake).await?;
    let window = DedupWindow::new(loaded.settings.config.ingest.dedup_window.0);
    let check = allot_lake::rollup::verify_rollups(
        &loaded.location,
        &loaded.settings.catalog,
        window,
        args.sample,
    )
    .await
    .map_err(failure)?;
    match check.differences.first() {
        None => {
            println!(
                "verified: {} of {} partitions with current rollups recomputed from their events",
                check.checked, check.current
            );
            Ok(())
        }
        Some((first, row)) => {
            for (key, row) in &check.differences {
                println!("rollups of {} {}: {row}", key.tenant_id, key.day);
            }
            Err(Failure::internal(format!(
                "rollups of {} {} differ from its events ({} of {} checked partitions differ at least): {row}",
                first.tenant_id,
                first.day,
                check.differences.len(),
                check.checked
            )))
        }
    }
}

/// `allot margin --month M --costs F`.
pub async fn margin(args: MarginArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let text = read_costs(&args.costs)?;
    let loaded = load(&args.lake).await?;
    let closings = closing::closings(&loaded.location).await.map_err(failure)?;
    let closed = closing::find_closing(&closings, period, None);
    let invoices = closing::month_invoices(
        &loaded.location,
        &loaded.snapshot,
        &loaded.settings,
        period,
        None,
        closing::InvoiceView::Current,
    )
    .await
    .map_err(failure)?;
    let allocation = match closed {
        Some(closed) if closed.costs_text.is_some() => {
            closing::stored_allocation(&loaded.location, closed)
                .await
                .map_err(failure)?
        }
        _ => {
            let pools = parse_costs_csv(
                &text,
                &loaded.settings.catalog,
                &loaded.settings.config.currency,
            )
            .map_err(|e| Failure::usage(format!("--costs {}: {e}", args.costs.display())))?;
            allot_query::reports::allocation(&loaded.snapshot, &loaded.settings, &pools, period)
                .await
                .map_err(failure)?
                .iter()
                .map(allot_query::allocation::AllocationRow::csv_record)
                .collect()
        }
    };
    let rows = closing::margin_rows(&invoices, &allocation).map_err(failure)?;
    let mut table = ReportTable::new(&MARGIN_COLUMNS);
    table.rows = rows;
    print_table(&table, loaded.format);
    Ok(())
}

/// `allot certificate --month M [--tenant T]`: the completeness certificate of
/// a closing.
pub async fn certificate(args: CertificateArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let tenant = tenant_flag(args.tenant.as_deref())?;
    let loaded = load(&args.lake).await?;
    let closings = closing::closings(&loaded.location).await.map_err(failure)?;
    let Some(closed) = closing::find_closing(&closings, period, args.revision) else {
        return Err(Failure::usage(format!("{period} is not closed")));
    };
    let mut table = ReportTable::new(&CERTIFICATE_COLUMNS);
    table.rows = closed
        .certificate
        .iter()
        .filter(|day| tenant.is_none_or(|t| t == day.tenant_id))
        .map(|day| day.csv_record())
        .collect();
    print_table(&table, loaded.format);
    Ok(())
}
