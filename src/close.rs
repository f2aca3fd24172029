//! The period-close subcommands (docs/reference.md#period-close): `close`,
//! `verify`, `margin`, `certificate` and `credits` (the credit balances a
//! month's invoices leave).
//!
//! Each parses its flags and prints; the rules live in `allot_query::closing`
//! (`close_month`, `month_margin`, `verify`), which the API calls too.

use std::path::PathBuf;

use allot_lake::dedup::DedupWindow;
use allot_lake::snapshot::LakeSnapshot;
use allot_query::QueryError;
use allot_query::allocation::parse_costs_csv;
use allot_query::closing::{self, CERTIFICATE_COLUMNS, CloseMonth, MARGIN_COLUMNS, Verdict};
use allot_query::closing::{CREDIT_COLUMNS, credit_statement};
use allot_query::render::ReportTable;
use allot_schemas::tenant::TenantId;
use clap::Args;

use crate::reports::{LakeArgs, failure, load, month_flag, print_table};
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
    tenant: Option<TenantId>,
    /// This revision (default: the newest).
    #[arg(long, value_name = "N")]
    revision: Option<i32>,
    #[command(flatten)]
    lake: LakeArgs,
}

/// `allot credits`.
#[derive(Args)]
pub struct CreditsArgs {
    /// The month, `YYYY-MM`.
    #[arg(long, value_name = "YYYY-MM")]
    month: String,
    /// Only this tenant's grants.
    #[arg(long)]
    tenant: Option<TenantId>,
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
    let costs_text = args.costs.as_deref().map(read_costs).transpose()?;
    let loaded = load(&args.lake).await?;
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
    let request = CloseMonth {
        month: period,
        restate: args.restate.then_some(args.reason).flatten(),
        who: who(args.by),
        costs,
        config: &loaded.settings.config,
        now_micros: chrono::Utc::now().timestamp_micros(),
    };
    let plan = closing::close_month(&loaded.location, &loaded.snapshot, request)
        .await
        .map_err(failure)?;
    let total = closing::sum_of_totals(&plan.invoices).map_err(failure)?;
    println!(
        "closed {period} revision {}: {} invoices totalling {} {}, {} tenant-days certified, usage_events version {}, configuration sha256 {}",
        plan.closing.revision,
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
    let margin = closing::month_margin(
        &loaded.location,
        &loaded.snapshot,
        &loaded.settings,
        period,
        || {
            parse_costs_csv(
                &text,
                &loaded.settings.catalog,
                &loaded.settings.config.currency,
            )
            .map_err(|e| QueryError::InvalidInput(format!("--costs {}: {e}", args.costs.display())))
        },
    )
    .await
    .map_err(failure)?;
    let mut table = ReportTable::new(&MARGIN_COLUMNS);
    table.rows = margin.rows;
    print_table(&table, loaded.format);
    Ok(())
}

/// `allot certificate --month M [--tenant T]`: the completeness certificate of
/// a closing.
pub async fn certificate(args: CertificateArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let tenant = args.tenant.as_ref().map(TenantId::as_str);
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

/// `allot credits --month M [--tenant T]`: per grant that pays the month, its
/// opening balance, what was drawn for the month, what expired unused and its
/// closing balance.
pub async fn credits(args: CreditsArgs) -> Result<(), Failure> {
    let period = month_flag(&args.month)?;
    let tenant = args.tenant.as_ref().map(TenantId::as_str);
    let loaded = load(&args.lake).await?;
    let statement = credit_statement(
        &loaded.location,
        &loaded.snapshot,
        &loaded.settings,
        period,
        tenant,
    )
    .await
    .map_err(failure)?;
    let mut table = ReportTable::new(&CREDIT_COLUMNS);
    table.rows = statement.iter().map(|b| b.csv_record()).collect();
    print_table(&table, loaded.format);
    Ok(())
}
