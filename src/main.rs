//! The `allot` command: clap subcommands that build options and call the crates.
//!
//! Exit status: 0 on success, 2 for bad usage or bad input (one line naming the
//! flag, key or file), 1 for anything else.

/// mimalloc instead of glibc's allocator: the collector allocates and frees
/// millions of small strings a second across threads, where glibc's per-thread
/// arenas cost both time (malloc and free were a tenth of the profile) and
/// resident memory that is never handed back. Built without its transparent
/// huge pages (`no_thp`): each 2 MiB page it asked for was zeroed whole by the
/// kernel on first touch, 41 % of a backfill's CPU time, and rounded resident
/// memory up (943 MiB against 683 MiB for a million events).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod alerts;
mod close;
mod demo;
mod demo_events;
mod prometheus;
mod reports;
mod serve;
mod tenant;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use allot_ingest::stages::{StageReport, process_cpu_time};
use allot_ingest::{FileIngestOptions, FileInput, IngestSummary, KafkaIngestOptions};
use allot_lake::CompactOptions;
use allot_lake::dedup::DedupWindow;
use allot_schemas::config::Config;
use allot_schemas::layout::LakeLocation;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

/// Usage metering and cost allocation for multi-tenant platforms.
#[derive(Parser)]
#[command(name = "allot", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write usage events into the lake: a Kafka collector, or a backfill from a file.
    Ingest(IngestArgs),
    /// Merge small files per tenant-day and remove duplicate events.
    Compact(CompactArgs),
    /// Delete data files no longer needed (keeping those of closed months' versions).
    Vacuum(VacuumArgs),
    /// Invoices of a month: one line per metric, rate segment and tier band.
    Invoice(reports::InvoiceArgs),
    /// What-if pricing: months priced under a proposed price book beside their
    /// invoices (nothing is written).
    Preview(reports::PreviewArgs),
    /// Split shared costs between tenants by their usage of each pool's driver.
    Allocate(reports::AllocateArgs),
    /// Tenants whose usage jumps far above their baseline while taking a large share.
    Noisy(reports::NoisyArgs),
    /// Tenant health: status and reasons, quota use, month-to-date cost and forecast.
    Health(reports::HealthArgs),
    /// Close a month: store its final invoices, allocation and completeness
    /// certificate (or restate a closed month).
    Close(close::CloseArgs),
    /// Recompute a closed month at its recorded version and configuration and
    /// compare with what was stored.
    Verify(close::VerifyArgs),
    /// Revenue, cost to serve and margin per tenant for a month.
    Margin(close::MarginArgs),
    /// The completeness certificate of a closed month, per tenant-day.
    Certificate(close::CertificateArgs),
    /// Prepaid credit per grant for a month: opening balance, drawn, expired,
    /// closing balance.
    Credits(close::CreditsArgs),
    /// Run a sandboxed SQL query over the lake (as one tenant with --tenant).
    Sql(reports::SqlArgs),
    /// Run everything on this machine: an embedded Kafka, a synthetic producer, a
    /// collector, the server and the dashboards.
    Demo(demo::DemoArgs),
    /// Serve the HTTP API and the dashboards over the lake.
    Serve(serve::ServeArgs),
    /// Mint a bearer token for the API (printed alone on stdout).
    Token(serve::TokenArgs),
    /// Offboard a tenant: export its data, or erase it from the lake.
    Tenant(tenant::TenantArgs),
    /// Evaluate and deliver alerts without the server, or send a sample alert.
    Alerts(alerts::AlertsArgs),
}

/// Output format of a command's result on stdout.
#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Args)]
struct IngestArgs {
    /// JSON Lines file to backfill from (`-` for standard input).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["brokers", "topic", "group"])]
    from_file: Option<String>,
    /// Kafka bootstrap servers (default: `kafka.brokers` from the config).
    #[arg(long, value_name = "HOST:PORT,…")]
    brokers: Option<String>,
    /// Kafka topic of usage events (default: `kafka.topic`).
    #[arg(long)]
    topic: Option<String>,
    /// Consumer group of the collector fleet (default: `kafka.group`).
    #[arg(long)]
    group: Option<String>,
    /// The lake: a directory or an object-store URL (default: `lake` from the config).
    #[arg(long, value_name = "DIR|URL")]
    lake: Option<String>,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Format of the final summary on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
    /// Do not draw a progress bar even when stderr is a terminal.
    #[arg(long)]
    no_progress: bool,
    /// After the summary, print on stderr where the time went: per stage
    /// (decode, build, dedup, encode, write, commit) its seconds, µs per event
    /// and share, and the process's CPU time.
    #[arg(long)]
    stats: bool,
    /// Serve the collector's Prometheus metrics at http://ADDR/metrics
    /// (default: `ingest.metrics_listen`).
    #[arg(long, value_name = "ADDR", conflicts_with = "from_file")]
    metrics_listen: Option<String>,
}

#[derive(Args)]
struct CompactArgs {
    /// The lake: a directory or an object-store URL (default: `lake` from the config).
    #[arg(long, value_name = "DIR|URL")]
    lake: Option<String>,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Compact tenant-days with at least this many files.
    #[arg(long, default_value_t = 2)]
    min_files: usize,
}

#[derive(Args)]
struct VacuumArgs {
    /// Keep files removed less than this long ago, e.g. `7d` (default:
    /// `ingest.vacuum_retention`).
    #[arg(long, value_name = "DURATION")]
    retention: Option<String>,
    /// The lake: a directory or an object-store URL (default: `lake` from the config).
    #[arg(long, value_name = "DIR|URL")]
    lake: Option<String>,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A failure, with the exit status it maps to.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl std::fmt::Display) -> Self {
        Failure {
            status: 2,
            message: message.to_string(),
        }
    }

    fn internal(message: impl std::fmt::Display) -> Self {
        Failure {
            status: 1,
            message: message.to_string(),
        }
    }
}

/// How long the runtime waits for detached work once the command is done.
const RUNTIME_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            let rendered = err.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first_line = lines.next().unwrap_or("invalid arguments").to_string();
            // "the following required arguments were not provided:" names them
            // on the next line; keep it on the one line.
            if first_line.ends_with(':')
                && let Some(next) = lines.next()
            {
                first_line = format!("{first_line} {next}");
            }
            eprintln!("allot: error: {}", first_line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(err) => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("allot: error: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli.command));
    // The command is done; whatever is still running is detached work (a
    // server's lake load) that must not hold the process after a stop.
    runtime.shutdown_timeout(RUNTIME_STOP_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("allot: error: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALLOT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,buoyant_kernel=off,deltalake_core::writer::stats=error,deltalake_core::kernel::transaction=off,allot=info,allot_ingest=info",
        )
    });
    // Colour only for a person at a terminal: a log file or a log collector
    // would get the escape sequences as text. `NO_COLOR` turns it off too.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Ingest(args) => ingest(args).await,
        Command::Compact(args) => compact(args).await,
        Command::Vacuum(args) => vacuum(args).await,
        Command::Invoice(args) => reports::invoice(args).await,
        Command::Preview(args) => reports::preview(args).await,
        Command::Allocate(args) => reports::allocate(args).await,
        Command::Noisy(args) => reports::noisy(args).await,
        Command::Health(args) => reports::health(args).await,
        Command::Sql(args) => reports::sql(args).await,
        Command::Close(args) => close::close(args).await,
        Command::Verify(args) => close::verify(args).await,
        Command::Margin(args) => close::margin(args).await,
        Command::Credits(args) => close::credits(args).await,
        Command::Certificate(args) => close::certificate(args).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Token(args) => serve::token(args),
        Command::Tenant(args) => tenant::tenant(args).await,
        Command::Alerts(args) => alerts::alerts(args).await,
    }
}

/// Loads the configuration: defaults, then the file, then `ALLOT__…` variables.
fn load_config(path: Option<&std::path::Path>) -> Result<Config, Failure> {
    Config::load(path, std::env::vars()).map_err(Failure::usage)
}

/// Who runs a command that records it (`--by`, else `$USER`).
fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Resolves `--lake`, falling back to the config's `lake` key.
fn lake_location(flag: Option<&str>, config: &Config) -> Result<LakeLocation, Failure> {
    let lake = flag
        .or(config.lake.url.as_deref())
        .ok_or_else(|| Failure::usage("--lake is required (or set `lake` in the config)"))?;
    Ok(LakeLocation::parse(lake)
        .map_err(Failure::usage)?
        .with_storage(config.lake.storage.options()))
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping on signal");
        token.cancel();
    });
}

async fn ingest(args: IngestArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let lake = lake_location(args.lake.as_deref(), &config)?;
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let summary = match args.from_file.as_deref() {
        Some(from_file) => {
            let input = FileInput::from_arg(from_file);
            if let FileInput::Path(path) = &input
                && !path.is_file()
            {
                return Err(Failure::usage(format!("--from-file {}: no such file", path.display())));
            }
            let options = FileIngestOptions {
                input,
                lake,
                config,
                progress: !args.no_progress,
                clock: None,
            };
            allot_ingest::ingest_file(options, cancel).await
        }
        None => {
            let required = |flag: Option<String>, key: &Option<String>, name: &str| {
                flag.or_else(|| key.clone())
                    .ok_or_else(|| Failure::usage(format!("--{name} is required (or set `kafka.{name}` in the config), or give --from-file")))
            };
            let metrics_listen = args
                .metrics_listen
                .as_deref()
                .map(|addr| ("--metrics-listen", addr))
                .or_else(|| {
                    config
                        .ingest
                        .metrics_listen
                        .as_deref()
                        .map(|addr| ("ingest.metrics_listen", addr))
                });
            if let Some((name, addr)) = metrics_listen {
                serve_metrics(name, addr, cancel.clone()).await?;
            }
            let options = KafkaIngestOptions {
                brokers: required(args.brokers, &config.kafka.brokers, "brokers")?,
                topic: required(args.topic, &config.kafka.topic, "topic")?,
                group: required(args.group, &config.kafka.group, "group")?,
                lake,
                config,
                clock: None,
            };
            allot_ingest::run_collector(options, cancel).await
        }
    }
    .map_err(Failure::internal)?;
    print_summary(&summary, args.format);
    if args.stats {
        let report = StageReport {
            times: &summary.stages,
            events: summary.events_read(),
            process_cpu: process_cpu_time(),
        };
        eprintln!("{report}");
    }
    Ok(())
}

/// Installs the Prometheus recorder and serves it on `addr`; `name` is the flag or
/// key the address came from, for the error.
async fn serve_metrics(name: &str, addr: &str, cancel: CancellationToken) -> Result<(), Failure> {
    let socket: SocketAddr = addr.parse().map_err(|_| {
        Failure::usage(format!(
            "{name} {addr}: not an IP address and port such as 127.0.0.1:9464"
        ))
    })?;
    let handle = prometheus::install_recorder().map_err(Failure::internal)?;
    let bound = prometheus::serve(socket, handle, cancel)
        .await
        .map_err(|e| Failure::usage(format!("{name} {addr}: cannot listen: {e}")))?;
    tracing::info!(%bound, "serving metrics at /metrics");
    Ok(())
}

async fn compact(args: CompactArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let lake = lake_location(args.lake.as_deref(), &config)?;
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let options = CompactOptions {
        lake,
        target_file_bytes: config.ingest.compaction_target_bytes.0,
        min_files: args.min_files,
        catalog: config.catalog(),
        dedup_window: DedupWindow::new(config.ingest.dedup_window.0),
    };
    let root = options.lake.root().to_string();
    let summary = allot_lake::compact(options, cancel)
        .await
        .map_err(|e| lake_failure(&root, e))?;
    println!(
        "{} tenant-days compacted, {} files removed, {} files added, {} duplicates removed; rollups of {} tenant-days refreshed{}{}",
        summary.partitions,
        summary.files_removed,
        summary.files_added,
        summary.duplicates_removed,
        summary.rollups.partitions,
        if summary.skipped > 0 {
            format!(
                "; {} tenant-days could not be compacted and were skipped (see the log)",
                summary.skipped
            )
        } else {
            String::new()
        },
        if summary.conflicts > 0 {
            "; stopped early because another compaction committed meanwhile, run again"
        } else {
            ""
        }
    );
    Ok(())
}

/// The failure of a maintenance command: a lake that does not exist is a usage
/// error (exit 2) naming it, never created; anything else is internal.
fn lake_failure(root: &str, error: allot_lake::LakeError) -> Failure {
    match error {
        allot_lake::LakeError::NoLake => Failure::usage(format!("--lake {root}: {error}")),
        other => Failure::internal(other),
    }
}

async fn vacuum(args: VacuumArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let lake = lake_location(args.lake.as_deref(), &config)?;
    let retention = match args.retention.as_deref() {
        Some(text) => {
            text.parse::<allot_schemas::config::HumanDuration>()
                .map_err(|e| Failure::usage(format!("--retention {text}: {e}")))?
                .0
        }
        None => config.ingest.vacuum_retention.0,
    };
    let keep_usage_versions = allot_query::closing::versions_to_keep(
        &lake,
        chrono::Utc::now().timestamp_micros(),
        config.ingest.close_retention.0,
    )
    .await
    .map_err(|e| Failure::internal(format!("reading the closings: {e}")))?;
    let options = allot_lake::VacuumOptions {
        lake,
        retention,
        keep_usage_versions,
    };
    let root = options.lake.root().to_string();
    let summary = allot_lake::vacuum(options)
        .await
        .map_err(|e| lake_failure(&root, e))?;
    println!(
        "{} files deleted; the files of usage_events versions {:?} kept for closings",
        summary.files_deleted, summary.kept_versions
    );
    Ok(())
}

fn print_summary(summary: &IngestSummary, format: OutputFormat) {
    match format {
        OutputFormat::Text => println!("{summary}"),
        OutputFormat::Json => {
            let rejected: serde_json::Map<String, serde_json::Value> = summary
                .rejected_by_reason
                .iter()
                .map(|(reason, count)| (reason.to_string(), (*count).into()))
                .collect();
            let json = serde_json::json!({
                "accepted": summary.accepted,
                "duplicates_skipped": summary.duplicates,
                "rejected": summary.rejected(),
                "rejected_by_reason": rejected,
                "rejected_already_recorded": summary.rejected_already_recorded,
                "blank_lines": summary.blank_lines,
                "partitions_touched": summary.partitions.len(),
                "elapsed_seconds": summary.elapsed.as_secs_f64(),
                "events_per_second": summary.events_per_second(),
            });
            println!("{json}");
        }
    }
}
