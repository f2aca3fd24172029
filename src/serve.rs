//! The server subcommands: `allot serve` (the HTTP API and dashboards) and
//! `allot token` (mint a bearer token for an operator or a tenant). The server
//! also runs the alert runner when the configuration has rules.

use std::path::PathBuf;
use std::sync::Arc;

use allot_api::alerts::{AlertRunner, FactSource};
use allot_api::auth::{Role, TokenRequest, mint_token};
use allot_api::{ApiError, ApiOptions, AppState};
use allot_schemas::config::HumanDuration;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::{Failure, cancel_on_signal, lake_location, load_config};

/// `allot serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `api.listen` from the config).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The lake: a directory or an object-store URL (default: `lake` from the config).
    #[arg(long, value_name = "DIR|URL")]
    lake: Option<String>,
    /// The configuration file (allot.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `allot token`.
#[derive(Args)]
pub struct TokenArgs {
    /// What the token may do.
    #[arg(long, value_parser = ["tenant", "finance", "admin"])]
    role: String,
    /// The tenant of a `--role tenant` token.
    #[arg(long)]
    tenant: Option<String>,
    /// Lifetime, e.g. `15m` (at most `api.max_token_ttl`).
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    ttl: String,
    /// The `sub` claim (default: the tenant, or the role).
    #[arg(long)]
    sub: Option<String>,
    /// The configuration file (allot.toml) with the signing key.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The Flight SQL listener's name in `/readyz`.
const FLIGHT_SQL: &str = "flight_sql";

/// The PostgreSQL wire's name in `/readyz`.
const POSTGRES: &str = "postgres";

/// Maps a server error: the operator's configuration or flags (2), else 1.
fn failure(error: ApiError) -> Failure {
    match error {
        ApiError::Setup { .. } | ApiError::BadRequest(_) => Failure::usage(error),
        other => Failure::internal(other),
    }
}

/// `allot serve [--listen ADDR] [--lake DIR] [--config F]`.
pub async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let lake = lake_location(args.lake.as_deref(), &config)?;
    let listen = args.listen.unwrap_or_else(|| config.api.listen.clone());
    let flight_sql_listen = config.api.flight_sql_listen.clone();
    let pg_listen = config.api.pg_listen.clone();
    let options = ApiOptions {
        metrics: Some(crate::prometheus::install_recorder().map_err(Failure::internal)?),
        ..ApiOptions::new(config, lake)
    };
    let alerts_config = options.config.clone();
    let state = AppState::new(options).map_err(failure)?;
    let runner = AlertRunner::open(
        &alerts_config,
        &state.lake,
        Arc::clone(&state.alerts),
        Arc::clone(&state.clock),
    )
    .await
    .map_err(Failure::internal)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| Failure::usage(format!("--listen {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::internal(format!("--listen {listen}: {e}")))?;
    let (http, grpc) = match state.tls {
        Some(_) => ("https", "grpc+tls"),
        None => ("http", "grpc"),
    };
    tracing::info!(%address, "serving on {http}://{address}/");
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let alerting = runner
        .map(|runner| tokio::spawn(runner.run(FactSource::Server(state.clone()), cancel.clone())));
    let flight_sql = match &flight_sql_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| Failure::usage(format!("api.flight_sql_listen {address}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| Failure::internal(format!("api.flight_sql_listen {address}: {e}")))?;
            tracing::info!(address = %bound, "serving Arrow Flight SQL on {grpc}://{bound}");
            state.listeners.serving(FLIGHT_SQL, bound);
            let stop = cancel.clone().cancelled_owned();
            let flight_state = state.clone();
            Some(tokio::spawn(async move {
                let served =
                    allot_api::flight_sql::serve_flight_sql(listener, flight_state.clone(), stop)
                        .await;
                if let Err(error) = &served {
                    flight_state.listeners.failed(FLIGHT_SQL, error);
                }
                served
            }))
        }
        None => None,
    };
    let pg = match &pg_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|e| Failure::usage(format!("api.pg_listen {address}: {e}")))?;
            let bound = listener
                .local_addr()
                .map_err(|e| Failure::internal(format!("api.pg_listen {address}: {e}")))?;
            tracing::info!(address = %bound, "serving the PostgreSQL wire on postgres://{bound}/allot");
            state.listeners.serving(POSTGRES, bound);
            let options = allot_api::pg::PgOptions::new(&state);
            let stop = cancel.clone().cancelled_owned();
            let pg_state = state.clone();
            Some(tokio::spawn(async move {
                let served =
                    allot_api::pg::serve_pg(listener, pg_state.clone(), options, stop).await;
                if let Err(error) = &served {
                    pg_state.listeners.failed(POSTGRES, error);
                }
                served
            }))
        }
        None => None,
    };
    allot_api::serve(listener, state, cancel.clone().cancelled_owned())
        .await
        .map_err(Failure::internal)?;
    if let Some(pg) = pg {
        cancel.cancel();
        pg.await
            .map_err(Failure::internal)?
            .map_err(Failure::internal)?;
    }
    if let Some(flight_sql) = flight_sql {
        cancel.cancel();
        flight_sql
            .await
            .map_err(Failure::internal)?
            .map_err(Failure::internal)?;
    }
    cancel.cancel();
    if let Some(alerting) = alerting {
        alerting.await.map_err(Failure::internal)?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `allot token --role R [--tenant T] [--ttl 15m] [--sub S] [--config F]`:
/// prints the token alone on stdout.
pub fn token(args: TokenArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let role: Role = args.role.parse().map_err(Failure::usage)?;
    let ttl: HumanDuration = args
        .ttl
        .parse()
        .map_err(|e| Failure::usage(format!("--ttl {:?}: {e}", args.ttl)))?;
    let sub = args
        .sub
        .or_else(|| args.tenant.clone())
        .unwrap_or_else(|| role.as_str().to_string());
    let request = TokenRequest {
        sub,
        role,
        tenant: args.tenant,
        ttl: ttl.0,
    };
    let now = chrono::Utc::now().timestamp();
    let token = mint_token(&config.api, &request, now).map_err(failure)?;
    println!("{token}");
    Ok(())
}
