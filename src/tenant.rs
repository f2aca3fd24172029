//! `allot tenant export|delete T`: offboarding a tenant (SPEC §2, §5.1).
//!
//! Export writes what the lake holds of one tenant into a directory: its events
//! and rejected events as JSON Lines (`allot_query::export`) and its invoices of
//! every month it has usage or a closing in. Delete erases it from the lake
//! (`allot_lake::offboard`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use allot_lake::session::SessionLimits;
use allot_lake::{DeleteOptions, DeleteSummary};
use allot_query::closing::{self, InvoiceView};
use allot_query::export;
use allot_query::period::Period;
use allot_query::render::invoices_table;
use allot_schemas::time::day_start_micros;
use clap::{Args, Subcommand};

use crate::reports::{LakeArgs, failure, known_tenant, load, tenant_flag};
use crate::{Failure, lake_failure, lake_location, load_config, who};

/// `allot tenant`.
#[derive(Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    command: TenantCommand,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Write the tenant's events, rejected events and invoices to a directory.
    Export(ExportArgs),
    /// Erase the tenant from the lake's event tables (refused without --confirm).
    Delete(DeleteArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// The tenant.
    tenant: String,
    /// The directory to write `events.jsonl`, `rejected.jsonl` and `invoices.csv` to
    /// (created if missing; existing files of those names are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    lake: LakeArgs,
}

#[derive(Args)]
struct DeleteArgs {
    /// The tenant.
    tenant: String,
    /// The tenant again: the erasure cannot be undone.
    #[arg(long, value_name = "TENANT")]
    confirm: Option<String>,
    /// Say what would go, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Who erases (default: $USER), for the audit row.
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    lake: LakeArgs,
}

/// Runs `allot tenant …`.
pub async fn tenant(args: TenantArgs) -> Result<(), Failure> {
    match args.command {
        TenantCommand::Export(args) => export(args).await,
        TenantCommand::Delete(args) => delete(args).await,
    }
}

async fn export(args: ExportArgs) -> Result<(), Failure> {
    let tenant = tenant_flag(Some(&args.tenant))?
        .unwrap_or_default()
        .to_string();
    let loaded = load(&args.lake).await?;
    known_tenant(&loaded, &tenant, "")?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::usage(format!("--out {}: {e}", args.out.display())))?;
    let write = |name: &str, text: &str| {
        let path = args.out.join(name);
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|e| Failure::internal(format!("writing {}: {e}", path.display())))
    };

    let limits = SessionLimits {
        dedup_window: loaded.settings.dedup_window(),
        ..SessionLimits::default()
    };
    let (lines, event_count) = export::events_jsonl(&loaded.snapshot, &limits, &tenant)
        .await
        .map_err(failure)?;
    write("events.jsonl", &lines)?;
    let (lines, rejected_count) = export::rejections_jsonl(&loaded.snapshot, &limits, &tenant)
        .await
        .map_err(failure)?;
    write("rejected.jsonl", &lines)?;

    // Every month with usage of the tenant, or closed.
    let mut months: BTreeSet<Period> = loaded
        .snapshot
        .usage
        .files
        .iter()
        .filter(|f| f.tenant_id.as_deref() == Some(tenant.as_str()))
        .filter_map(|f| Period::containing(day_start_micros(f.day)).ok())
        .collect();
    let closed = closing::closings(&loaded.location).await.map_err(failure)?;
    months.extend(closed.iter().map(|c| c.month));
    let mut invoices = Vec::new();
    for month in &months {
        let invoice = closing::tenant_invoice(
            &loaded.location,
            &loaded.snapshot,
            &loaded.settings,
            *month,
            &tenant,
            InvoiceView::Current,
        );
        invoices.push(invoice.await.map_err(failure)?);
    }
    write("invoices.csv", &invoices_table(&invoices).to_csv())?;
    println!(
        "{event_count} events, {rejected_count} rejected events and {} monthly invoices of {tenant} written to {}",
        invoices.len(),
        args.out.display()
    );
    Ok(())
}

async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let tenant = tenant_flag(Some(&args.tenant))?
        .unwrap_or_default()
        .to_string();
    if !args.dry_run && args.confirm.as_deref() != Some(tenant.as_str()) {
        return Err(Failure::usage(format!(
            "refusing to erase {tenant} without --confirm {tenant} (the erasure cannot be undone; --dry-run shows what would go)"
        )));
    }
    // Not `load`: a tenant half erased, or known only from rejected events or
    // left-over files, has no usage files for it to find.
    let config = load_config(args.lake.config.as_deref())?;
    let lake = lake_location(args.lake.lake.as_deref(), &config)?;
    let options = DeleteOptions {
        lake: lake.clone(),
        tenant: tenant.clone(),
        who: who(args.by),
        dry_run: args.dry_run,
        configured: config.tenants.contains_key(&tenant),
    };
    let summary = allot_lake::delete_tenant(&options)
        .await
        .map_err(|e| match e {
            allot_lake::LakeError::UnknownTenant(_) => Failure::usage(e),
            other => lake_failure(lake.root().as_str(), other),
        })?;
    print!("{}", describe(&tenant, &summary));
    Ok(())
}

/// What an erasure did, one line per table.
fn describe(tenant: &str, summary: &DeleteSummary) -> String {
    let mut text = String::new();
    let verb = if summary.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (table, t) in &summary.tables {
        let _ = writeln!(
            text,
            "{table}: {verb} {} rows of {tenant} in {} files; {} files {}",
            t.rows,
            t.files_removed,
            t.files_deleted,
            if summary.dry_run {
                "would be deleted"
            } else {
                "deleted"
            }
        );
    }
    if let Some(started) = &summary.resumed {
        let verb = if summary.dry_run {
            "would resume"
        } else {
            "resumed"
        };
        let _ = writeln!(text, "{verb} the erasure of {tenant} started at {started}");
    }
    if summary.dry_run {
        text.push_str("dry run: nothing was changed\n");
    } else if summary.files_left() > 0 {
        let _ = writeln!(
            text,
            "{} files of {tenant} were written during the erasure and are left: stop its traffic and run again",
            summary.files_left()
        );
    } else {
        let _ = writeln!(
            text,
            "{tenant} erased; the erasure is recorded in the audit table"
        );
    }
    text
}
