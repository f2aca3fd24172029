//! The lake as the server holds it (docs/reference.md#serving): loaded once, then brought forward
//! every `api.refresh_interval` by a background task that reads only the new
//! commits ([`allot_lake::follow`]). Requests never read the Delta log; each one
//! takes the [`ServedLake`] current when it starts, one consistent set of table
//! versions, and keeps it to its end.
//!
//! The first load happens when the server starts (or on the first request of a
//! router built without [`crate::serve`]); `/readyz` answers ready once it is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use allot_lake::LakeError;
use allot_lake::follow::{LakeFollower, LakeVersions};
use allot_lake::snapshot::LakeSnapshot;
use allot_query::LakeLocation;
use allot_schemas::clock::Clock;

/// Seconds one refresh of the lake took (reading new commits and rebuilding the
/// file lists that moved).
pub const LAKE_REFRESH_SECONDS: &str = "allot_lake_refresh_seconds";
/// The `usage_events` version the server answers from.
pub const LAKE_VERSION: &str = "allot_lake_served_version";
/// The Unix time in seconds as of which the server answers: when it last read
/// the lake's new commits. Set after every refresh, failed ones included, so
/// that its age (`time() - allot_lake_last_refresh_timestamp_seconds`) keeps
/// growing while refreshes fail instead of the series going idle.
pub const LAKE_REFRESHED_AT: &str = "allot_lake_last_refresh_timestamp_seconds";

/// One refresh's view of the lake, shared by every request that starts while it
/// is current.
pub struct ServedLake {
    /// The active files of each table.
    pub snapshot: Arc<LakeSnapshot>,
    /// The versions `snapshot` was read at.
    pub versions: LakeVersions,
    /// When this view was taken, in UTC microseconds: "now" for requests that
    /// name no instant, so that their answers can be shared until the next
    /// refresh (the answer says which instant it is as of).
    pub as_of: i64,
    /// Per tenant, a hash of its `usage_events` files: what changes when a
    /// commit touches that tenant's partitions, and only then.
    tenant_files: Arc<HashMap<String, u64>>,
}

/// What a cached answer depends on, besides its parameters.
#[derive(Debug, Clone, Copy)]
pub enum Depends<'a> {
    /// One tenant's usage files (usage series).
    TenantUsage(&'a str),
    /// One tenant's usage files and the period closes (its invoices).
    TenantInvoices(&'a str),
    /// Every tenant's usage, the rejected events and the period closes
    /// (all-tenant reports, and health, whose noisy flags compare a tenant with
    /// all the others).
    AllTenants,
}

impl ServedLake {
    fn new(follower: &LakeFollower, as_of: i64) -> ServedLake {
        let snapshot = follower.snapshot();
        ServedLake {
            versions: follower.versions(),
            tenant_files: Arc::new(snapshot.usage.fingerprints_by_tenant()),
            snapshot,
            as_of,
        }
    }

    /// The same lake seen at a later instant.
    fn at(&self, as_of: i64) -> ServedLake {
        ServedLake {
            snapshot: Arc::clone(&self.snapshot),
            versions: self.versions,
            as_of,
            tenant_files: Arc::clone(&self.tenant_files),
        }
    }

    /// A text that changes whenever what `depends` names changes: the part of
    /// a cache key that ties an answer to the lake it was computed from.
    pub fn stamp(&self, depends: Depends<'_>) -> String {
        let tenant = |id: &str| self.tenant_files.get(id).copied().unwrap_or(0);
        let LakeVersions {
            usage,
            rejected,
            closings,
            ..
        } = self.versions;
        match depends {
            Depends::TenantUsage(id) => format!("files {:016x}", tenant(id)),
            Depends::TenantInvoices(id) => {
                format!("files {:016x} closings {closings:?}", tenant(id))
            }
            Depends::AllTenants => {
                format!("usage {usage:?} rejected {rejected:?} closings {closings:?}")
            }
        }
    }
}

/// The server's lake: the follower and the view requests read.
pub struct LakeView {
    location: LakeLocation,
    refresh_interval: Duration,
    clock: Arc<dyn Clock>,
    /// The follower, once the first load succeeded; held while loading or
    /// refreshing, so only one of them runs at a time.
    follower: tokio::sync::Mutex<Option<LakeFollower>>,
    current: RwLock<Option<Arc<ServedLake>>>,
    refreshing: AtomicBool,
    /// The versions of each view installed that read new commits, for those
    /// that act on new commits at once ([`Self::watch_versions`]).
    moved: tokio::sync::watch::Sender<Option<LakeVersions>>,
}

impl LakeView {
    /// A view of `location` that nothing has loaded yet.
    pub fn new(location: LakeLocation, refresh_interval: Duration, clock: Arc<dyn Clock>) -> Self {
        LakeView {
            location,
            refresh_interval,
            clock,
            follower: tokio::sync::Mutex::new(None),
            current: RwLock::new(None),
            refreshing: AtomicBool::new(false),
            moved: tokio::sync::watch::channel(None).0,
        }
    }

    /// The current view; the first call loads the lake (concurrent first calls
    /// wait for one load) and starts the background refresh.
    pub async fn current(self: &Arc<Self>) -> Result<Arc<ServedLake>, LakeError> {
        if let Some(served) = self.loaded() {
            return Ok(served);
        }
        let mut follower = self.follower.lock().await;
        if let Some(served) = self.loaded() {
            return Ok(served);
        }
        let started = Instant::now();
        let opened = LakeFollower::open(&self.location).await?;
        let served = Arc::new(ServedLake::new(&opened, self.clock.now_micros()));
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            files = served.snapshot.usage.files.len(),
            version = ?served.versions.usage,
            "lake loaded"
        );
        *follower = Some(opened);
        self.install(Arc::clone(&served));
        drop(follower);
        self.start_refreshing();
        Ok(served)
    }

    /// The view, if the first load is done.
    pub fn loaded(&self) -> Option<Arc<ServedLake>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A receiver that sees the versions of each view installed that read new
    /// commits (the first load included), as soon as it is installed: the
    /// alert runner evaluates on it without waiting for a poll of its own.
    pub fn watch_versions(&self) -> tokio::sync::watch::Receiver<Option<LakeVersions>> {
        self.moved.subscribe()
    }

    fn install(&self, served: Arc<ServedLake>) {
        record_served(&served);
        let versions = served.versions;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(served);
        self.moved.send_if_modified(|last| {
            let moved = *last != Some(versions);
            *last = Some(versions);
            moved
        });
    }

    /// Starts the task that refreshes the view every `refresh_interval` until
    /// the view is dropped.
    fn start_refreshing(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let view = Arc::downgrade(self);
        let interval = self.refresh_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(view) = view.upgrade() else {
                    return;
                };
                view.refresh().await;
            }
        });
    }

    /// Reads the new commits and installs the view they give; on an error the
    /// view stays where it was and the error is logged.
    async fn refresh(&self) {
        let mut guard = self.follower.lock().await;
        let Some(follower) = guard.as_mut() else {
            return;
        };
        let started = Instant::now();
        let moved = follower.refresh().await;
        let now = self.clock.now_micros();
        match moved {
            Ok(true) => {
                let served = Arc::new(ServedLake::new(follower, now));
                tracing::debug!(
                    seconds = started.elapsed().as_secs_f64(),
                    version = ?served.versions.usage,
                    "lake refreshed with new commits"
                );
                self.install(served);
            }
            Ok(false) => {
                if let Some(served) = self.loaded() {
                    self.install(Arc::new(served.at(now)));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the lake's new commits; serving the last state read");
                if let Some(served) = self.loaded() {
                    record_served(&served);
                }
            }
        }
        metrics::histogram!(LAKE_REFRESH_SECONDS).record(started.elapsed().as_secs_f64());
    }
}

/// Sets the gauges that say which lake the server answers from and as of when.
fn record_served(served: &ServedLake) {
    if let Some(version) = served.versions.usage {
        metrics::gauge!(LAKE_VERSION).set(version as f64);
    }
    metrics::gauge!(LAKE_REFRESHED_AT).set(served.as_of as f64 / 1e6);
}
