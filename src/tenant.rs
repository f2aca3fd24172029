//! `allot tenant export|delete T`: offboarding a tenant
//! (docs/reference.md#compaction-and-offboarding, docs/reference.md#command-line).
//!
//! Export writes what the lake holds of one tenant into a directory: its events
//! and rejected events as JSON Lines (`allot_query::export`) and its invoices of
//! every month it has usage or a closing in. Each file is streamed into a new
//! temporary file beside it and renamed into place once complete
//! ([`ExportFile`]); a symbolic link where a file goes is refused, never
//! followed. Delete erases it from the lake (`allot_lake::offboard`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use allot_lake::session::SessionLimits;
use allot_lake::{DeleteOptions, DeleteSummary};
use allot_query::closing::{self, InvoiceView};
use allot_query::export;
use allot_query::period::Period;
use allot_query::render::invoices_table;
use allot_schemas::tenant::TenantId;
use allot_schemas::time::day_start_micros;
use clap::{Args, Subcommand};

use crate::reports::{LakeArgs, failure, known_tenant, load};
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
    tenant: TenantId,
    /// The directory to write `events.jsonl`, `rejected.jsonl` and `invoices.csv` to
    /// (created if missing; existing files of those names are replaced, a
    /// symbolic link of those names is refused).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    lake: LakeArgs,
}

#[derive(Args)]
struct DeleteArgs {
    /// The tenant.
    tenant: TenantId,
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
    let id = args.tenant;
    let tenant = id.to_string();
    let loaded = load(&args.lake).await?;
    // A tenant whose events were all rejected is known by its rejected rows
    // alone, which only the export's own read finds.
    let known = loaded.settings.tenant_exists(&loaded.snapshot, &id);
    let new_dir = !args.out.exists();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::usage(format!("--out {}: {e}", args.out.display())))?;
    let mut events = ExportFile::create(&args.out, "events.jsonl")?;
    let mut rejected = ExportFile::create(&args.out, "rejected.jsonl")?;
    let mut invoices_file = ExportFile::create(&args.out, "invoices.csv")?;

    let limits = SessionLimits {
        dedup_window: loaded.settings.dedup_window(),
        ..SessionLimits::default()
    };
    let chunks = export::events_jsonl(&loaded.snapshot, &limits, &tenant)
        .await
        .map_err(failure)?;
    let event_count = events.write_chunks(chunks).await?;
    let chunks = export::rejections_jsonl(&loaded.snapshot, &limits, &tenant)
        .await
        .map_err(failure)?;
    let rejected_count = rejected.write_chunks(chunks).await?;
    if !known && rejected_count == 0 {
        // Nothing of it anywhere: no file is left (the temporaries go when
        // dropped), nor the directory this run made.
        drop((events, rejected, invoices_file));
        if new_dir {
            let _ = std::fs::remove_dir(&args.out);
        }
        return known_tenant(&loaded, &id, "");
    }

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
    invoices_file.write(invoices_table(&invoices).to_csv().as_bytes())?;
    events.finish()?;
    rejected.finish()?;
    invoices_file.finish()?;
    println!(
        "{event_count} events, {rejected_count} rejected events and {} monthly invoices of {tenant} written to {}",
        invoices.len(),
        args.out.display()
    );
    Ok(())
}

/// One file of an export: written to a new temporary file in the same
/// directory, renamed to its name once complete (so no one reads half an
/// export, and a rename replaces whatever is at the name instead of writing
/// through it), and removed if the export stops before.
struct ExportFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl ExportFile {
    /// Refuses a symbolic link at `dir/name`, then creates the temporary file
    /// (`create_new`: never an existing file, never through a link).
    fn create(dir: &Path, name: &str) -> Result<ExportFile, Failure> {
        let target = dir.join(name);
        if std::fs::symlink_metadata(&target).is_ok_and(|meta| meta.file_type().is_symlink()) {
            return Err(Failure::usage(format!(
                "--out: {} is a symbolic link; refusing to write through it",
                target.display()
            )));
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = dir.join(format!(".{name}.{}-{stamp}.partial", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Failure::usage(format!("--out: creating {}: {e}", temp.display())))?;
        Ok(ExportFile {
            target,
            temp,
            file: Some(BufWriter::new(file)),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let file = self.file.as_mut().expect("written before it is finished");
        file.write_all(bytes)
            .map_err(|e| Failure::internal(format!("writing {}: {e}", self.temp.display())))
    }

    /// Writes every chunk as it comes; the number of rows written.
    async fn write_chunks(&mut self, mut chunks: export::JsonlChunks) -> Result<usize, Failure> {
        let mut rows = 0;
        while let Some(chunk) = chunks.next().await {
            let (lines, count) = chunk.map_err(failure)?;
            self.write(lines.as_bytes())?;
            rows += count;
        }
        Ok(rows)
    }

    /// Flushes the file to disk and renames it to its name.
    fn finish(mut self) -> Result<(), Failure> {
        let file = self.file.take().expect("finished once");
        let written = file
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.sync_all())
            .and_then(|()| std::fs::rename(&self.temp, &self.target));
        written.map_err(|e| Failure::internal(format!("writing {}: {e}", self.target.display())))
    }
}

impl Drop for ExportFile {
    fn drop(&mut self) {
        // Gone already once renamed; a leftover of a stopped export otherwise.
        let _ = std::fs::remove_file(&self.temp);
    }
}

async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let tenant = args.tenant.into_string();
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
