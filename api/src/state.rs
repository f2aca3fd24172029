//! The server's shared state and the options it is built from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use allot_lake::snapshot::LakeSnapshot;
use allot_query::LakeLocation;
use allot_query::QueryError;
use allot_query::allocation::{CostPool, parse_costs_csv};
use allot_query::health::TenantHealth;
use allot_query::live_health::{LiveFacts, LiveHealth};
use allot_query::reports::{self, ReportSettings};
use allot_query::sandbox::{SqlLimits, SqlPool};
use allot_schemas::clock::{Clock, SystemClock};
use allot_schemas::config::{Config, Secret};
use allot_schemas::tenant::TenantId;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::alerts::board::AlertBoard;
use crate::audit::AuditLog;
use crate::auth::{Authenticator, Principal};
use crate::cache::ReportCache;
use crate::error::ApiError;
use crate::lake_view::{Depends, LakeView, ServedLake};
use crate::limits::{RateLimiter, SqlSlots};
use crate::listeners::Listeners;
use crate::server::ConnectionLimits;
use crate::tls::ServerTls;

/// What the server is built from.
#[derive(Clone)]
pub struct ApiOptions {
    /// The configuration (its `[api]` section, price book, tenants, thresholds).
    pub config: Config,
    /// The lake to serve.
    pub lake: LakeLocation,
    /// The clock (the system clock outside tests and demos).
    pub clock: Arc<dyn Clock>,
    /// The process's metrics recorder when the caller installed it (with the
    /// collector's metrics too); `None` installs [`crate::metrics::install_recorder`].
    pub metrics: Option<PrometheusHandle>,
}

impl ApiOptions {
    /// Options with the system clock.
    pub fn new(config: Config, lake: LakeLocation) -> ApiOptions {
        ApiOptions {
            config,
            lake,
            clock: Arc::new(SystemClock),
            metrics: None,
        }
    }
}

/// Everything a handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    /// Catalog, price book and the whole configuration.
    pub settings: ReportSettings,
    /// The lake.
    pub lake: LakeLocation,
    /// The lake as served: loaded once, following new commits.
    pub lake_view: Arc<LakeView>,
    /// Computed reports.
    pub cache: ReportCache,
    /// Every tenant's health, followed across the lake's refreshes.
    pub live_health: LiveHealth,
    /// Token verification.
    pub auth: Authenticator,
    /// Requests per second per caller.
    pub rate: RateLimiter,
    /// Requests per second without a valid token, per source address.
    pub anonymous_rate: RateLimiter,
    /// Concurrent SQL queries per caller.
    pub sql_slots: SqlSlots,
    /// Limits of one SQL query.
    pub sql_limits: SqlLimits,
    /// The threads SQL queries run on, apart from the request workers.
    pub sql_pool: SqlPool,
    /// Denied attempts.
    pub audit: AuditLog,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The bearer token `/metrics` requires, when one is configured.
    pub metrics_token: Option<Secret>,
    /// The shared-costs CSV of `/v1/allocation/{month}`.
    pub costs_file: Option<PathBuf>,
    /// Time limit of one request.
    pub request_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// The header-read, idle and shutdown timeouts of a connection.
    pub connection_limits: ConnectionLimits,
    /// The alerts as the alert runner last read them (empty without rules).
    pub alerts: Arc<AlertBoard>,
    /// The listeners' certificate and key, when `api.tls_cert` is set.
    pub tls: Option<ServerTls>,
    /// The listeners besides HTTP, for `/readyz`.
    pub listeners: Listeners,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Checks the configuration (keys readable, audit log writable, costs file
    /// valid) and builds the state.
    pub fn new(options: ApiOptions) -> Result<AppState, ApiError> {
        let api = options.config.api.clone();
        let sql_limits = SqlLimits::from(&options.config);
        let metrics = match options.metrics.clone() {
            Some(handle) => handle,
            None => crate::metrics::install_recorder(&[]).unwrap_or_else(|error| {
                tracing::warn!(%error, "/metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }),
        };
        let auth = Authenticator::new(&api)?;
        let audit = AuditLog::open(std::path::Path::new(&api.audit_log))?;
        let tls = ServerTls::from_config(&api)?;
        let settings = ReportSettings::new(options.config);
        let costs_file = api.costs_file.as_ref().map(PathBuf::from);
        let lake_view = Arc::new(LakeView::new(
            options.lake.clone(),
            api.refresh_interval.0,
            Arc::clone(&options.clock),
        ));
        let state = AppState(Arc::new(Inner {
            settings,
            lake: options.lake,
            lake_view,
            cache: ReportCache::new(api.cache_memory.0),
            live_health: LiveHealth::new(),
            auth,
            rate: RateLimiter::new(api.rate_limit_per_s),
            anonymous_rate: RateLimiter::new(api.anonymous_rate_limit_per_s),
            sql_slots: SqlSlots::new(api.sql_concurrency),
            sql_limits,
            sql_pool: SqlPool::new(SqlPool::default_threads()).map_err(|e| ApiError::Setup {
                key: "api.sql_concurrency",
                message: e.to_string(),
            })?,
            audit,
            clock: options.clock,
            metrics,
            metrics_token: api.metrics_token.clone(),
            costs_file,
            request_timeout: api.request_timeout.0,
            max_body: usize::try_from(api.max_body.0).unwrap_or(usize::MAX),
            connection_limits: ConnectionLimits {
                header_read: api.header_read_timeout.0,
                idle: api.idle_timeout.0,
                shutdown: api.shutdown_timeout.0,
            },
            alerts: Arc::new(AlertBoard::default()),
            tls,
            listeners: Listeners::default(),
        }));
        if state.costs_file.is_some() {
            state.cost_pools().map_err(|e| ApiError::Setup {
                key: "api.costs_file",
                message: e.to_string(),
            })?;
        }
        Ok(state)
    }

    /// Now, in UTC microseconds.
    pub fn now_micros(&self) -> i64 {
        self.clock.now_micros()
    }

    /// The lake as of the last refresh (loaded by the first call).
    pub async fn served(&self) -> Result<Arc<ServedLake>, ApiError> {
        Ok(self.lake_view.current().await.map_err(QueryError::from)?)
    }

    /// Every tenant's health as of `now` on `served`, computed once per lake
    /// state and instant: as of the refresh's own instant, from the health
    /// followed across refreshes ([`Self::live_facts`]); as of any other, from
    /// scratch.
    pub async fn health_rows(
        &self,
        served: &ServedLake,
        now: i64,
    ) -> Result<Arc<Vec<TenantHealth>>, ApiError> {
        let key = format!("{now} {}", served.stamp(Depends::AllTenants));
        self.cache
            .health_rows(key, async {
                if now == served.as_of {
                    Ok(Arc::clone(&self.live_facts(served).await?.health))
                } else {
                    Ok(Arc::new(
                        reports::health(&served.snapshot, &self.settings, now, None).await?,
                    ))
                }
            })
            .await
    }

    /// Every tenant's health and the alert signals as of `served`'s instant,
    /// read again only for the tenants the lake changed since the last call.
    pub async fn live_facts(&self, served: &ServedLake) -> Result<Arc<LiveFacts>, ApiError> {
        Ok(self
            .live_health
            .facts(&served.snapshot, &self.settings, served.as_of)
            .await?)
    }

    /// Tenant `id`'s health as of `now` on `served`: cut from every tenant's
    /// rows ([`Self::health_rows`], shared by every dashboard at one instant),
    /// or, when `alone`, computed for this tenant only. A tenant token asking
    /// for an instant of its choosing gets the latter, so a tenant cannot make
    /// the server compute every tenant's health once per request.
    pub async fn tenant_health(
        &self,
        served: &ServedLake,
        id: &str,
        now: i64,
        alone: bool,
    ) -> Result<TenantHealth, ApiError> {
        let row = if alone {
            reports::health(&served.snapshot, &self.settings, now, Some(id))
                .await?
                .into_iter()
                .find(|row| row.tenant_id == id)
        } else {
            let rows = self.health_rows(served, now).await?;
            rows.iter().find(|row| row.tenant_id == id).cloned()
        };
        row.ok_or_else(|| ApiError::Internal("health report without its tenant".to_string()))
    }

    /// The configured cost pools, read afresh so edits need no restart. The
    /// file is the server's, so a problem with it is internal (500, logged).
    pub fn cost_pools(&self) -> Result<Vec<CostPool>, ApiError> {
        let path = self.costs_file.as_ref().ok_or(ApiError::NotFound(
            "no shared costs are configured on this server",
        ))?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            ApiError::Internal(format!(
                "cannot read the costs file {}: {e}",
                path.display()
            ))
        })?;
        parse_costs_csv(
            &text,
            &self.settings.catalog,
            &self.settings.config.currency,
        )
        .map_err(|e: QueryError| ApiError::Internal(format!("costs file {}: {e}", path.display())))
    }

    /// Whether `principal` may see tenant `id` and the tenant exists (files in
    /// `snapshot` or a `[tenants.<id>]` entry). A tenant token asking for
    /// another tenant gets the very answer of a missing tenant, plus an audit
    /// line. The path segment becomes a [`TenantId`] here, once.
    pub fn authorize_tenant(
        &self,
        principal: &Principal,
        id: &str,
        snapshot: &LakeSnapshot,
    ) -> Result<TenantId, ApiError> {
        if principal.confined_to().is_some_and(|own| own != id) {
            return Err(ApiError::TenantNotFound { other_tenant: true });
        }
        match TenantId::parse(id) {
            Ok(tenant) if self.settings.tenant_exists(snapshot, &tenant) => Ok(tenant),
            _ => Err(ApiError::TenantNotFound {
                other_tenant: false,
            }),
        }
    }
}
