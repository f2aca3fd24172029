//! The alert runner (docs/reference.md#alerts): after each lake refresh it
//! evaluates the rules on the refresh's facts, commits the notices to the
//! `alerts` table, then delivers them.
//!
//! ```text
//!  each refresh with new commits (or every `evaluate_every`) ─▶ facts ─▶ evaluate ─▶ commit notices + claims (fenced) ─┐
//!  every tick ──▶ due deliveries ─▶ claim the unclaimed (fenced) ─▶ spawn attempts
//!                  attempt ─▶ commit its record (delivered / failed + next time / given up)
//! ```
//!
//! A commit fenced by another server's means that server decided first: the
//! runner reads its records and decides again, so each notice is recorded once
//! and each delivery attempted by one server at a time. Each attempt runs in a
//! task of its own, so a dead endpoint never holds up the others.
//!
//! [`AlertBoard`] is what the runner last read, for `GET /v1/alerts` and
//! `/metrics`; a server without rules has an empty one.

pub mod board;
pub mod deliver;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allot_lake::follow::LakeVersions;
use allot_query::LakeLocation;
use allot_query::alerts::{
    AlertFacts, AlertLog, AlertRecord, AlertStore, AttemptDetails, Notice, evaluate,
};
use allot_query::live_health::LiveHealth;
use allot_query::reports::ReportSettings;
use allot_schemas::clock::Clock;
use allot_schemas::config::{AlertRule, AlertsConfig, Config};
use tokio_util::sync::CancellationToken;

pub use self::board::AlertBoard;
use self::deliver::Channel;
use crate::error::ApiError;
use crate::lake_view::{LakeView, ServedLake};
use crate::state::AppState;

/// Alerts of each rule now firing.
pub const ALERTS_FIRING: &str = "allot_alerts_firing";
/// Delivery attempts by channel and outcome (`delivered`, `failed`, `given_up`).
pub const ALERT_DELIVERIES: &str = "allot_alert_deliveries_total";

/// The env var of the crash test's hook (builds with `test-hooks` only): the
/// process aborts right after committing notices, before sending them.
pub const ABORT_AFTER_NOTICE_ENV: &str = "ALLOT_TEST_ALERTS_ABORT_AFTER_NOTICE";

/// Where the runner gets the lake and every tenant's health from.
#[derive(Clone)]
pub enum FactSource {
    /// Inside `allot serve`: the server's view and its health followed across
    /// refreshes (the very rows its dashboards show).
    Server(AppState),
    /// `allot alerts run`: a view of its own.
    Alone {
        /// The lake as followed.
        view: Arc<LakeView>,
        /// Catalog, price book, thresholds.
        settings: Arc<ReportSettings>,
        /// Health followed across the view's refreshes.
        live: Arc<LiveHealth>,
    },
}

impl FactSource {
    /// A source of its own on `view`.
    pub fn alone(view: Arc<LakeView>, settings: Arc<ReportSettings>) -> FactSource {
        FactSource::Alone {
            view,
            settings,
            live: Arc::new(LiveHealth::new()),
        }
    }

    /// The view the facts are read from.
    fn view(&self) -> &Arc<LakeView> {
        match self {
            FactSource::Server(state) => &state.lake_view,
            FactSource::Alone { view, .. } => view,
        }
    }

    async fn served(&self) -> Result<Arc<ServedLake>, ApiError> {
        match self {
            FactSource::Server(state) => state.served().await,
            FactSource::Alone { view, .. } => Ok(view
                .current()
                .await
                .map_err(allot_query::QueryError::from)?),
        }
    }

    /// The facts as of `served`, and how many tenants' inputs were read from
    /// the lake for them.
    async fn facts(&self, served: &ServedLake) -> Result<(AlertFacts, usize), ApiError> {
        let live = match self {
            FactSource::Server(state) => state.live_facts(served).await?,
            FactSource::Alone { settings, live, .. } => {
                live.facts(&served.snapshot, settings, served.as_of).await?
            }
        };
        Ok((
            AlertFacts::new(&live, served.versions.usage),
            live.tenants_read,
        ))
    }
}

/// Evaluates rules and delivers notices; see the module docs.
pub struct AlertRunner {
    rules: Vec<AlertRule>,
    channels: BTreeMap<String, Channel>,
    timing: AlertsConfig,
    /// This process, in claims.
    me: String,
    store: tokio::sync::Mutex<AlertStore>,
    board: Arc<AlertBoard>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Deliveries being attempted by this process.
    in_flight: Mutex<BTreeSet<(String, String)>>,
    /// How often due deliveries are looked for without a refresh that read
    /// new commits (`api.refresh_interval`).
    tick: Duration,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl AlertRunner {
    /// A runner for the rules of `config` on `lake`, publishing to `board`;
    /// `None` when there are no rules.
    pub async fn open(
        config: &Config,
        lake: &LakeLocation,
        board: Arc<AlertBoard>,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Arc<AlertRunner>>, ApiError> {
        if config.alert_rules().is_empty() {
            return Ok(None);
        }
        let store = AlertStore::open(lake).await?;
        board.set(store.log());
        let timing = config.alerts.clone();
        let channels = timing
            .channels
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Channel::new(c, timing.dashboard_url.as_deref()),
                )
            })
            .collect();
        let client = reqwest::Client::builder()
            .connect_timeout(timing.delivery_timeout.0)
            .build()
            .map_err(|e| ApiError::Internal(format!("alerts: the HTTP client: {e}")))?;
        let me = format!("{}-{}", std::process::id(), clock.now_micros());
        metrics::describe_gauge!(ALERTS_FIRING, "Alerts of each rule now firing");
        metrics::describe_counter!(
            ALERT_DELIVERIES,
            "Alert delivery attempts, by channel and outcome (delivered, failed, given_up)"
        );
        Ok(Some(Arc::new(AlertRunner {
            rules: config.alert_rules().to_vec(),
            channels,
            tick: config.api.refresh_interval.0,
            timing,
            me,
            store: tokio::sync::Mutex::new(store),
            board,
            client,
            clock,
            in_flight: Mutex::new(BTreeSet::new()),
        })))
    }

    /// Runs until `cancel`: evaluates as soon as a refresh of `source`'s lake
    /// reads new commits (and every `alerts.evaluate_every` without them),
    /// then attempts due deliveries, and looks for due deliveries every tick.
    /// Errors are logged and retried at the next tick.
    pub async fn run(self: Arc<Self>, source: FactSource, cancel: CancellationToken) {
        // The lake versions and instant of the last evaluation.
        let mut evaluated: Option<(LakeVersions, i64)> = None;
        let every = micros(self.timing.evaluate_every.0);
        let mut moved = source.view().watch_versions();
        loop {
            // A refresh installed from here on wakes the wait below.
            moved.borrow_and_update();
            match source.served().await {
                Ok(served)
                    if evaluated.is_none_or(|(versions, at)| {
                        versions != served.versions || served.as_of.saturating_sub(at) >= every
                    }) =>
                {
                    if let Err(error) = self.evaluate_on(&source, &served).await {
                        tracing::warn!(%error, "cannot evaluate alert rules; trying again at the next refresh");
                    } else {
                        evaluated = Some((served.versions, served.as_of));
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "alerts: cannot read the lake"),
            }
            if let Err(error) = Arc::clone(&self).dispatch().await {
                tracing::warn!(%error, "cannot dispatch alert deliveries; trying again");
            }
            // A refresh that read new commits wakes the runner at once, so a
            // crossing is evaluated (and delivered) without waiting for a tick.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.tick) => {}
                Ok(()) = moved.changed() => {}
            }
        }
    }

    /// Evaluates the rules on `served` and commits the notices they give.
    async fn evaluate_on(&self, source: &FactSource, served: &ServedLake) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let (facts, tenants_read) = source.facts(served).await?;
        let facts_seconds = started.elapsed().as_secs_f64();
        let mut store = self.store.lock().await;
        store.refresh().await?;
        loop {
            let log = store.log();
            let notices = evaluate(&self.rules, &facts, &log.last_notices());
            if notices.is_empty() {
                break;
            }
            let now = self.clock.now_micros();
            let until = now.saturating_add(micros(self.timing.claim_lease.0));
            let mut records = Vec::new();
            for new in &notices {
                let notice = Notice::record(new, facts.as_of_micros, facts.lake_version, now);
                for channel in &notice.channels {
                    records.push(AlertRecord::Claim {
                        key: notice.key.clone(),
                        channel: channel.clone(),
                        details: AttemptDetails {
                            by: self.me.clone(),
                            until,
                            attempt: None,
                            outcome: None,
                            error: None,
                            next_attempt_at: None,
                        },
                        at: now,
                    });
                }
                tracing::info!(rule = %notice.rule, tenant = %notice.tenant_id, state = notice.state.as_str(), key = %notice.key, "alert");
                records.insert(0, AlertRecord::Notice(notice));
            }
            // Notices first, then their claims, in one commit.
            records.sort_by_key(|r| !matches!(r, AlertRecord::Notice(_)));
            if store.commit(records).await? {
                abort_after_notice_hook();
                break;
            }
            tracing::debug!("another server recorded alerts first; deciding again on its records");
        }
        let log = store.log();
        drop(store);
        self.publish(log);
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            facts_seconds,
            tenants_read,
            version = ?served.versions.usage,
            "alert rules evaluated"
        );
        Ok(())
    }

    /// Sets the board and the firing gauges.
    fn publish(&self, log: Arc<AlertLog>) {
        let firing = log.firing_by_rule();
        for rule in &self.rules {
            let count = firing.get(rule.name.as_str()).copied().unwrap_or(0);
            metrics::gauge!(ALERTS_FIRING, "rule" => rule.name.clone()).set(count as f64);
        }
        self.board.set(log);
    }

    /// Claims the due deliveries nobody holds and spawns an attempt for each
    /// due delivery this process holds.
    async fn dispatch(self: Arc<Self>) -> Result<(), ApiError> {
        let mut store = self.store.lock().await;
        store.refresh().await?;
        if let Err(error) = store.compact_when_due().await {
            tracing::warn!(%error, "cannot compact the alerts table; trying again later");
        }
        let now = self.clock.now_micros();
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let due: Vec<(String, String, bool)> = store
            .log()
            .due(now, &self.me)
            .into_iter()
            .filter(|(key, channel, _)| !in_flight.contains(&(key.clone(), channel.clone())))
            .collect();
        if due.is_empty() {
            self.publish(store.log());
            return Ok(());
        }
        let claims: Vec<AlertRecord> = due
            .iter()
            .filter(|(_, _, unclaimed)| *unclaimed)
            .map(|(key, channel, _)| AlertRecord::Claim {
                key: key.clone(),
                channel: channel.clone(),
                details: AttemptDetails {
                    by: self.me.clone(),
                    until: now.saturating_add(micros(self.timing.claim_lease.0)),
                    attempt: None,
                    outcome: None,
                    error: None,
                    next_attempt_at: None,
                },
                at: now,
            })
            .collect();
        if !store.commit(claims).await? {
            // Another server moved first: decide again at the next tick.
            return Ok(());
        }
        let log = store.log();
        drop(store);
        self.publish(Arc::clone(&log));
        for (key, channel, _) in due {
            let Some(notice) = log.notice(&key).cloned() else {
                continue;
            };
            let attempts = log
                .deliveries
                .get(&(key.clone(), channel.clone()))
                .map_or(0, |d| d.attempts);
            self.in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert((key.clone(), channel.clone()));
            let runner = Arc::clone(&self);
            tokio::spawn(async move {
                runner.attempt(notice, channel.clone(), attempts + 1).await;
                runner
                    .in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&(key, channel));
            });
        }
        Ok(())
    }

    /// The wait after the `attempt`th failed attempt.
    fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.timing
            .retry_initial
            .0
            .saturating_mul(1 << doublings)
            .min(self.timing.retry_max.0)
    }

    /// One attempt of `notice` to `channel_name`, and its record.
    async fn attempt(&self, notice: Notice, channel_name: String, attempt: u32) {
        let result = match self.channels.get(&channel_name) {
            Some(channel) => {
                deliver::attempt(
                    &self.client,
                    channel,
                    &notice,
                    self.timing.delivery_timeout.0,
                )
                .await
            }
            None => Err("the channel is no longer configured".to_string()),
        };
        let now = self.clock.now_micros();
        let lease = micros(self.timing.claim_lease.0);
        let (outcome, error, next) = match result {
            Ok(()) => ("delivered", None, None),
            Err(error) => {
                let next = now.saturating_add(micros(self.backoff(attempt)));
                let deadline = notice
                    .recorded_at
                    .saturating_add(micros(self.timing.give_up_after.0));
                if next > deadline || !self.channels.contains_key(&channel_name) {
                    ("given_up", Some(error), None)
                } else {
                    ("failed", Some(error), Some(next))
                }
            }
        };
        match outcome {
            "delivered" => {
                tracing::info!(key = %notice.key, channel = %channel_name, attempt, "alert delivered")
            }
            "failed" => {
                tracing::warn!(key = %notice.key, channel = %channel_name, attempt, error = error.as_deref().unwrap_or(""), "alert delivery failed; will retry")
            }
            _ => {
                tracing::error!(key = %notice.key, channel = %channel_name, attempt, error = error.as_deref().unwrap_or(""), "alert delivery given up")
            }
        }
        metrics::counter!(ALERT_DELIVERIES, "channel" => channel_name.clone(), "outcome" => outcome)
            .increment(1);
        let record = AlertRecord::Attempt {
            key: notice.key.clone(),
            channel: channel_name,
            details: AttemptDetails {
                by: self.me.clone(),
                until: next.unwrap_or(now).saturating_add(lease),
                attempt: Some(attempt),
                outcome: Some(outcome.to_string()),
                error,
                next_attempt_at: next,
            },
            at: now,
        };
        // An attempt's record decides nothing: commit it on whatever the log is.
        for _ in 0..20 {
            let mut store = self.store.lock().await;
            match store.commit(vec![record.clone()]).await {
                Ok(true) => {
                    let log = store.log();
                    drop(store);
                    self.publish(log);
                    return;
                }
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(%error, key = %notice.key, "cannot record an alert delivery attempt");
                    drop(store);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Sends a sample notice to `channel` now, recording nothing: what the
    /// channel answered.
    pub async fn test_channel(config: &Config, channel: &str, now: i64) -> Result<String, String> {
        let Some(settings) = config.alerts.channels.iter().find(|c| c.name == channel) else {
            return Err(format!("no [[alerts.channels]] is named {channel:?}"));
        };
        let target = Channel::new(settings, config.alerts.dashboard_url.as_deref());
        let sample = allot_query::alerts::NewNotice {
            rule: "test".to_string(),
            kind: "test",
            tenant_id: channel.to_string(),
            state: allot_query::alerts::AlertState::Firing,
            value: Some("1".to_string()),
            threshold: "1".to_string(),
            reasons: vec!["a sample alert from allot alerts test".to_string()],
            number: u64::try_from(now).unwrap_or(0),
            channels: vec![channel.to_string()],
        };
        let notice = Notice::record(&sample, now, None, now);
        let client = reqwest::Client::new();
        deliver::attempt(&client, &target, &notice, config.alerts.delivery_timeout.0)
            .await
            .map(|()| format!("delivered {} to {channel}", notice.key))
    }
}

/// The crash test's hook: with `test-hooks` and the env var set, abort as a
/// kill -9 would, after the notices' commit and before any delivery.
fn abort_after_notice_hook() {
    #[cfg(feature = "test-hooks")]
    if std::env::var_os(ABORT_AFTER_NOTICE_ENV).is_some() {
        std::process::abort();
    }
}
