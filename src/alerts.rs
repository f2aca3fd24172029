//! `allot alerts run` (evaluate and deliver alerts without the HTTP server) and
//! `allot alerts test --channel NAME` (send a sample) (docs/reference.md#alerts).

use std::path::PathBuf;
use std::sync::Arc;

use allot_api::alerts::{AlertBoard, AlertRunner, FactSource};
use allot_api::lake_view::LakeView;
use allot_query::reports::ReportSettings;
use allot_schemas::clock::{Clock, SystemClock};
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{Failure, cancel_on_signal, lake_location, load_config};

/// `allot alerts`.
#[derive(Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Evaluate the rules after each lake refresh and deliver alerts, until
    /// stopped (as `allot serve` does, without the HTTP server).
    Run(RunArgs),
    /// Send a sample alert to one channel and say what it answered.
    Test(TestArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The lake: a directory or an object-store URL (default: `lake` from the config).
    #[arg(long, value_name = "DIR|URL")]
    lake: Option<String>,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct TestArgs {
    /// The channel's `name` in `[[alerts.channels]]`.
    #[arg(long, value_name = "NAME")]
    channel: String,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `allot alerts run|test`.
pub async fn alerts(args: AlertsArgs) -> Result<(), Failure> {
    match args.command {
        AlertsCommand::Run(args) => run(args).await,
        AlertsCommand::Test(args) => {
            let config = load_config(args.config.as_deref())?;
            if !config
                .alerts
                .channels
                .iter()
                .any(|c| c.name == args.channel)
            {
                return Err(Failure::usage(format!(
                    "--channel {}: no [[alerts.channels]] has this name",
                    args.channel
                )));
            }
            let sent = AlertRunner::test_channel(&config, &args.channel, SystemClock.now_micros())
                .await
                .map_err(|e| Failure::internal(format!("channel {}: {e}", args.channel)))?;
            println!("{sent}");
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let lake = lake_location(args.lake.as_deref(), &config)?;
    if config.alert_rules().is_empty() {
        return Err(Failure::usage(
            "the configuration has no [[alerts.rules]] to evaluate",
        ));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let board = Arc::new(AlertBoard::default());
    let runner = AlertRunner::open(&config, &lake, board, Arc::clone(&clock))
        .await
        .map_err(Failure::internal)?
        .ok_or_else(|| Failure::usage("the configuration has no [[alerts.rules]]"))?;
    let view = Arc::new(LakeView::new(lake, config.api.refresh_interval.0, clock));
    let source = FactSource::alone(view, Arc::new(ReportSettings::new(config)));
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    tracing::info!("evaluating alert rules");
    runner.run(source, cancel).await;
    tracing::info!("stopped");
    Ok(())
}
