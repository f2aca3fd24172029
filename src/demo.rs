//! `allot demo`: the whole pipeline on one machine with no setup (docs/reference.md#the-demo).
//!
//! In one process: librdkafka's mock cluster as the broker, a synthetic producer
//! ([`crate::demo_events`]: a week of history, then live traffic), the collector
//! (`allot_ingest::run_collector`, the production code path) writing to the lake,
//! and the server with the dashboards (`allot_api::serve`). It prints the
//! dashboard URL with a finance token in its fragment.

use std::path::PathBuf;
use std::time::Duration;

use allot_api::auth::{Role, TokenRequest, mint_token};
use allot_api::{ApiOptions, AppState};
use allot_ingest::KafkaIngestOptions;
use allot_schemas::config::{Config, HumanDuration, RawConfig, Secret};
use allot_schemas::layout::LakeLocation;
use chrono::{DateTime, DurationRound, Utc};
use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::demo_events::{NOISY_TENANT, minute_events, tenant_names};
use crate::{Failure, cancel_on_signal};

/// The demo's topic of usage events.
const TOPIC: &str = "usage";
/// Days of history produced before the live traffic starts.
const HISTORY_DAYS: i64 = 8;
/// A sloppy tenant sends one malformed event in about this many bundles.
const BAD_EVERY: u64 = 12;

/// `allot demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Number of tenants.
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    /// Live tenant-minutes produced per second (each is 2–5 events).
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Stop after this long, e.g. `10m` (default: run until Ctrl-C).
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// Address of the dashboards and API.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: String,
    /// Where the demo's lake lives: a directory, or an object-store URL
    /// (`s3://bucket/prefix`, reached with the `AWS_*` environment variables).
    #[arg(long, default_value = "./allot-demo", value_name = "DIR|URL")]
    lake: String,
    /// Where the demo writes its `allot.toml`, costs file and audit log (default:
    /// the lake's directory, or `./allot-demo` for an object-store lake).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The demo's lake and the local directory of its own files.
fn demo_places(args: &DemoArgs) -> Result<(LakeLocation, PathBuf), Failure> {
    let lake = LakeLocation::parse(&args.lake).map_err(Failure::usage)?;
    let dir = match (&args.dir, lake.local_path()) {
        (Some(dir), _) => dir.clone(),
        (None, Some(lake_dir)) => lake_dir,
        (None, None) => PathBuf::from("./allot-demo"),
    };
    for local in lake.local_path().iter().chain([&dir]) {
        std::fs::create_dir_all(local)
            .map_err(|e| Failure::usage(format!("{}: {e}", local.display())))?;
    }
    let dir = dir
        .canonicalize()
        .map_err(|e| Failure::usage(format!("--dir {}: {e}", dir.display())))?;
    Ok((lake, dir))
}

fn demo_config(dir: &std::path::Path) -> Result<Config, Failure> {
    let mut config: RawConfig = toml::from_str(include_str!("demo.toml"))
        .map_err(|e| Failure::internal(format!("the demo configuration: {e}")))?;
    let secret: String = (0..4).map(|i| format!("{:016x}", rand_u64(i))).collect();
    config.api.jwt_secret = Some(Secret::from(secret));
    config.api.audit_log = dir.join("audit.jsonl").display().to_string();
    config.api.costs_file = Some(dir.join("costs.csv").display().to_string());
    config
        .validate()
        .map_err(|e| Failure::internal(format!("the demo configuration: {e}")))
}

/// A random number for the demo's signing key, from the OS's hashing seed.
fn rand_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(salt);
    hasher.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or(0) as u128);
    hasher.finish()
}

/// Writes the month's shared costs, so the finance page has an allocation.
fn write_costs(dir: &std::path::Path, now: DateTime<Utc>) -> Result<(), Failure> {
    let month = now.format("%Y-%m");
    let text = format!(
        "period,pool,amount,currency,driver,region,service\n\
         {month},shared-compute,4200.00,USD,compute_seconds,,\n\
         {month},block-storage,1310.55,USD,storage_bytes,,\n\
         {month},eu-egress,733.37,USD,egress_bytes,eu-west-1,\n"
    );
    std::fs::write(dir.join("costs.csv"), text)
        .map_err(|e| Failure::internal(format!("{}: {e}", dir.display())))
}

/// Sends `(tenant, line)` records with at most a few thousand in flight.
async fn send_all(producer: &FutureProducer, records: &[(String, String)]) {
    for chunk in records.chunks(4096) {
        let sends = chunk.iter().map(|(tenant, line)| {
            producer.send(
                FutureRecord::to(TOPIC).key(tenant).payload(line.as_str()),
                Duration::from_secs(10),
            )
        });
        for result in futures::future::join_all(sends).await {
            if let Err((error, _)) = result {
                tracing::warn!(%error, "demo producer: send failed");
            }
        }
    }
}

/// Produces `HISTORY_DAYS` of traffic up to `now`: one bundle per ten minutes
/// (minute by minute while the noisy tenant misbehaves); malformed events only in
/// the last 24 h, where health looks for them.
async fn produce_history(
    producer: &FutureProducer,
    tenants: &[String],
    now: DateTime<Utc>,
    noisy_from: DateTime<Utc>,
) {
    let bad_since = now - chrono::Duration::days(1);
    let mut records = Vec::new();
    let mut at = now - chrono::Duration::days(HISTORY_DAYS);
    while at < now {
        let bad_every = if at >= bad_since { BAD_EVERY } else { 0 };
        for tenant in tenants {
            if at >= noisy_from {
                for step in 0..10 {
                    let minute = at + chrono::Duration::minutes(step);
                    if minute < now {
                        records.extend(
                            minute_events(tenant, minute, 1, noisy_from, bad_every)
                                .into_iter()
                                .map(|line| (tenant.clone(), line)),
                        );
                    }
                }
            } else {
                records.extend(
                    minute_events(tenant, at, 10, noisy_from, bad_every)
                        .into_iter()
                        .map(|line| (tenant.clone(), line)),
                );
            }
        }
        at += chrono::Duration::minutes(10);
    }
    send_all(producer, &records).await;
}

/// Live traffic: every second, the next `rate` tenant-minutes of the current minute.
async fn produce_live(
    producer: FutureProducer,
    tenants: Vec<String>,
    rate: u32,
    noisy_from: DateTime<Utc>,
    cancel: CancellationToken,
) {
    let mut next = 0usize;
    let mut sent_minute: Option<(DateTime<Utc>, usize)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !cancel.is_cancelled() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let minute = Utc::now()
            .duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or_else(|_| Utc::now());
        if sent_minute.is_none_or(|(m, _)| m != minute) {
            sent_minute = Some((minute, 0));
        }
        let Some((_, done)) = sent_minute.as_mut() else {
            continue;
        };
        for _ in 0..rate {
            if *done >= tenants.len() {
                break;
            }
            let tenant = &tenants[next % tenants.len()];
            next += 1;
            *done += 1;
            let records: Vec<(String, String)> =
                minute_events(tenant, minute, 1, noisy_from, BAD_EVERY)
                    .into_iter()
                    .map(|line| (tenant.clone(), line))
                    .collect();
            send_all(&producer, &records).await;
        }
    }
}

/// `allot demo [--tenants N] [--rate R] [--duration D] [--listen ADDR] [--lake DIR|URL] [--dir DIR]`.
pub async fn demo(args: DemoArgs) -> Result<(), Failure> {
    if args.tenants == 0 || args.tenants > 500 {
        return Err(Failure::usage("--tenants must be between 1 and 500"));
    }
    if args.rate == 0 {
        return Err(Failure::usage("--rate must be at least 1"));
    }
    let duration = match &args.duration {
        Some(text) => Some(
            text.parse::<HumanDuration>()
                .map_err(|e| Failure::usage(format!("--duration {text:?}: {e}")))?
                .0,
        ),
        None => None,
    };
    let (lake, dir) = demo_places(&args)?;
    let config = demo_config(&dir)?;
    let lake = lake.with_storage(config.lake.storage.options());
    let now = Utc::now()
        .duration_trunc(chrono::Duration::minutes(1))
        .map_err(|e| Failure::internal(e.to_string()))?;
    write_costs(&dir, now)?;
    // The price book and settings, for report commands run on the demo's lake
    // (which an object-store lake's commands find through `[lake] url`).
    let mut settings = include_str!("demo.toml").to_string();
    if lake.local_path().is_none() {
        settings.push_str(&format!("\n[lake]\nurl = {:?}\n", lake.root().as_str()));
    }
    std::fs::write(dir.join("allot.toml"), settings)
        .map_err(|e| Failure::internal(format!("{}: {e}", dir.display())))?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::usage(format!("--listen {}: {e}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::internal(e.to_string()))?;

    let cluster = MockCluster::new(1)
        .map_err(|e| Failure::internal(format!("the embedded Kafka cluster: {e}")))?;
    for topic in [TOPIC.to_string(), format!("{TOPIC}.dlq")] {
        cluster
            .create_topic(&topic, 4, 1)
            .map_err(|e| Failure::internal(format!("the embedded Kafka cluster: {e}")))?;
    }
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .create()
        .map_err(|e| Failure::internal(format!("the demo producer: {e}")))?;

    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    if let Some(duration) = duration.filter(|d| !d.is_zero()) {
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }

    let tenants = tenant_names(args.tenants);
    let noisy_from = now - chrono::Duration::hours(2);
    let collector = tokio::spawn(allot_ingest::run_collector(
        KafkaIngestOptions {
            brokers: brokers.clone(),
            topic: TOPIC.to_string(),
            group: "allot-demo".to_string(),
            lake: lake.clone(),
            config: config.clone(),
            clock: None,
        },
        cancel.clone(),
    ));
    let options = ApiOptions {
        metrics: Some(crate::prometheus::install_recorder().map_err(Failure::internal)?),
        ..ApiOptions::new(config.clone(), lake.clone())
    };
    let state =
        AppState::new(options).map_err(|e| Failure::internal(format!("the demo server: {e}")))?;
    let server = tokio::spawn(allot_api::serve(
        listener,
        state,
        cancel.clone().cancelled_owned(),
    ));

    let mint = |role: Role, tenant: Option<&String>| {
        mint_token(
            &config.api,
            &TokenRequest {
                sub: format!("demo-{}", tenant.map_or(role.as_str(), String::as_str)),
                role,
                tenant: tenant.cloned(),
                ttl: config.api.max_token_ttl.0,
            },
            Utc::now().timestamp(),
        )
        .map_err(|e| Failure::internal(format!("the demo token: {e}")))
    };
    let token = mint(Role::Finance, None)?;
    let tenant_token = mint(Role::Tenant, tenants.first())?;
    println!(
        "allot demo: {} tenants, one noisy neighbour ({NOISY_TENANT})",
        tenants.len()
    );
    match lake.local_path() {
        Some(lake_dir) => println!("allot demo: lake at {}", lake_dir.display()),
        None => println!(
            "allot demo: lake at {}, settings in {}",
            lake.root(),
            dir.display()
        ),
    }
    println!("allot demo: dashboards at http://{address}/#token={token}");
    println!(
        "allot demo: {}'s own view at http://{address}/#token={tenant_token}",
        tenants.first().map_or("a tenant", String::as_str)
    );
    println!("allot demo: press Ctrl-C to stop");

    produce_history(&producer, &tenants, now, noisy_from).await;
    tracing::info!("demo history produced; live traffic from now on");
    produce_live(producer, tenants, args.rate, noisy_from, cancel.clone()).await;

    let collected = collector
        .await
        .map_err(|e| Failure::internal(e.to_string()))?
        .map_err(Failure::internal)?;
    server
        .await
        .map_err(|e| Failure::internal(e.to_string()))?
        .map_err(Failure::internal)?;
    drop(cluster);
    println!(
        "allot demo: stopped; {} events accepted, {} rejected",
        collected.accepted,
        collected.rejected()
    );
    Ok(())
}
