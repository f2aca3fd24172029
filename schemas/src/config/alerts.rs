//! `[alerts]`, `[[alerts.rules]]` and `[[alerts.channels]]`: what allot pushes
//! to people, when, and where (docs/reference.md#alerts); their checks, and the
//! rules as the evaluator takes them ([`AlertRule`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::metrics::{MetricCatalog, MetricKind};
use super::pricing::TenantConfig;
use super::validate::is_valid_label_key;
use super::values::{ConfigDecimal, HumanDuration, Secret};
use crate::tenant::is_valid_tenant_id;

/// The largest quota percentage a rule may name.
const MAX_QUOTA_PERCENT: u32 = 1000;

/// How alerts are evaluated and delivered (docs/reference.md#alerts).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Rules are evaluated after each lake refresh that read new commits, and
    /// at least this often when none came (time alone moves `silent`,
    /// `forecast` and a new month's figures); above 0.
    pub evaluate_every: HumanDuration,
    /// A delivery still failing this long after its alert was recorded is
    /// given up on (above 0).
    pub give_up_after: HumanDuration,
    /// The wait before the second attempt of a delivery; each later wait
    /// doubles, up to `retry_max` (above 0).
    pub retry_initial: HumanDuration,
    /// The longest wait between two attempts of a delivery (at least
    /// `retry_initial`).
    pub retry_max: HumanDuration,
    /// The time one delivery attempt may take, connection included (above
    /// 0, less than `claim_lease`).
    pub delivery_timeout: HumanDuration,
    /// How long a server's claim on a delivery lasts before another server
    /// of the same lake may take it over (the claimant died).
    pub claim_lease: HumanDuration,
    /// The address of the dashboards (`https://allot.example`), which Slack
    /// messages link to; without it they carry no link.
    pub dashboard_url: Option<String>,
    /// Where alerts are sent.
    pub channels: Vec<AlertChannelConfig>,
    /// When a tenant is alerted on.
    pub rules: Vec<AlertRuleConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluate_every: HumanDuration(Duration::from_secs(60)),
            give_up_after: HumanDuration(Duration::from_secs(24 * 3600)),
            retry_initial: HumanDuration(Duration::from_secs(5)),
            retry_max: HumanDuration(Duration::from_secs(600)),
            delivery_timeout: HumanDuration(Duration::from_secs(10)),
            claim_lease: HumanDuration(Duration::from_secs(60)),
            dashboard_url: None,
            channels: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// One place alerts are sent to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertChannelConfig {
    /// The name rules refer to it by (`^[a-z0-9][a-z0-9_-]{0,62}$`).
    pub name: String,
    /// `webhook` (a signed JSON POST) or `slack` (a Slack-compatible
    /// incoming webhook).
    pub kind: String,
    /// The `http://` or `https://` address posted to.
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Allot-Signature` header (webhook,
    /// required there; at least 16 bytes).
    pub secret: Option<Secret>,
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    /// The rule's name, in every alert it raises (`^[a-z0-9][a-z0-9_-]{0,62}$`).
    pub name: String,
    /// `quota`, `spend`, `forecast`, `health`, `noisy`, `silent` or
    /// `rejected`.
    pub kind: String,
    /// The metric of a `quota` or `noisy` rule.
    pub metric: Option<String>,
    /// `quota`: percent of the quota (0 to 1000); `spend`, `forecast`: an
    /// amount in the configured currency; `rejected`: events in an hour.
    pub threshold: Option<ConfigDecimal>,
    /// A firing alert resolves only once its figure is below this (at most
    /// `threshold`; default `threshold`).
    pub resolve_below: Option<ConfigDecimal>,
    /// `health`: the status that fires, `warning` (warning or worse) or
    /// `critical`.
    pub status: Option<String>,
    /// `silent`: how long a tenant that sent events in the last 7 days may
    /// send none.
    pub after: Option<HumanDuration>,
    /// `spend`, `forecast`: `tenant` (each tenant against the threshold) or
    /// `total` (all tenants together, as tenant `*`); default `tenant`.
    pub per: Option<String>,
    /// The tenants watched, each with a `[tenants.<id>]` entry; default
    /// every tenant.
    pub tenants: Option<Vec<String>>,
    /// The tenants watched are those whose `[tenants.<id>] labels` hold every
    /// one of these pairs (`{ tier = "enterprise" }`, exact match); not with
    /// `tenants`.
    pub tenant_labels: Option<BTreeMap<String, String>>,
    /// While an alert fires, it is sent again this often (a new key each
    /// time); default never.
    pub repeat: Option<HumanDuration>,
    /// The channels it is sent to, by name (at least one).
    pub channels: Vec<String>,
}

/// What a rule watches, checked and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertCondition {
    /// A metric's quota use, in percent of the quota.
    Quota {
        /// The metric (a counter or a gauge with quotas).
        metric: String,
    },
    /// Month-to-date cost.
    Spend {
        /// Each tenant, or all of them together.
        total: bool,
    },
    /// The month-end forecast.
    Forecast {
        /// Each tenant, or all of them together.
        total: bool,
    },
    /// Health status at or above a level.
    Health {
        /// `true`: only `critical` fires; `false`: `warning` or `critical`.
        critical: bool,
    },
    /// A noisy-neighbour flag on a metric in the last 24 h.
    Noisy {
        /// The counter metric.
        metric: String,
    },
    /// No accepted event for a while from a tenant active in the last 7 days.
    Silent {
        /// How long.
        after: Duration,
    },
    /// Rejected events in the last hour.
    Rejected,
}

impl AlertCondition {
    /// The `kind` as written in the file and in alerts.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertCondition::Quota { .. } => "quota",
            AlertCondition::Spend { .. } => "spend",
            AlertCondition::Forecast { .. } => "forecast",
            AlertCondition::Health { .. } => "health",
            AlertCondition::Noisy { .. } => "noisy",
            AlertCondition::Silent { .. } => "silent",
            AlertCondition::Rejected => "rejected",
        }
    }
}

/// A checked rule, as the evaluator takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// Its name.
    pub name: String,
    /// What it watches.
    pub condition: AlertCondition,
    /// The figure at or above which it fires (`health`, `noisy`, `silent`:
    /// 1, the condition holding).
    pub threshold: BigDecimal,
    /// The figure below which a firing alert resolves.
    pub resolve_below: BigDecimal,
    /// The tenants watched (listed, or those with the rule's labels);
    /// `None`: every tenant.
    pub tenants: Option<BTreeSet<String>>,
    /// Resend interval while firing.
    pub repeat: Option<Duration>,
    /// Channel names.
    pub channels: Vec<String>,
}

/// The tenant id of an alert about all tenants together.
pub const ALL_TENANTS: &str = "*";

/// True for a name of a rule or a channel.
fn is_valid_name(name: &str) -> bool {
    is_valid_tenant_id(name)
}

impl AlertsConfig {
    /// Checks every key and gives the rules ready to evaluate.
    pub(super) fn validate(
        &self,
        catalog: &MetricCatalog,
        tenants: &BTreeMap<String, TenantConfig>,
    ) -> Result<Vec<AlertRule>, ConfigError> {
        for (key, value) in [
            ("alerts.evaluate_every", self.evaluate_every),
            ("alerts.give_up_after", self.give_up_after),
            ("alerts.retry_initial", self.retry_initial),
            ("alerts.delivery_timeout", self.delivery_timeout),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::new(key, "must be longer than 0"));
            }
        }
        if self.retry_max.0 < self.retry_initial.0 {
            return Err(ConfigError::new(
                "alerts.retry_max",
                "must be at least alerts.retry_initial",
            ));
        }
        if self.claim_lease.0 <= self.delivery_timeout.0 {
            return Err(ConfigError::new(
                "alerts.claim_lease",
                "must be longer than alerts.delivery_timeout",
            ));
        }
        if let Some(url) = &self.dashboard_url {
            check_url("alerts.dashboard_url", url)?;
        }
        let mut channels = BTreeSet::new();
        for (i, channel) in self.channels.iter().enumerate() {
            let key = |field: &str| format!("alerts.channels[{i}].{field}");
            if !is_valid_name(&channel.name) {
                return Err(ConfigError::new(
                    key("name"),
                    "channel names match ^[a-z0-9][a-z0-9_-]{0,62}$",
                ));
            }
            if !channels.insert(channel.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("another channel is named {:?}", channel.name),
                ));
            }
            check_url(&key("url"), &channel.url)?;
            match (channel.kind.as_str(), &channel.secret) {
                ("webhook", None) => {
                    return Err(ConfigError::new(
                        key("secret"),
                        "a webhook channel needs a secret to sign its bodies with",
                    ));
                }
                ("webhook", Some(secret)) if secret.expose().len() < 16 => {
                    return Err(ConfigError::new(key("secret"), "must be at least 16 bytes"));
                }
                ("webhook", Some(_)) | ("slack", None) => {}
                ("slack", Some(_)) => {
                    return Err(ConfigError::new(
                        key("secret"),
                        "a slack channel is not signed: its URL is its secret",
                    ));
                }
                _ => {
                    return Err(ConfigError::new(
                        key("kind"),
                        "must be \"webhook\" or \"slack\"",
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("alerts.rules[{i}].{field}");
            if !is_valid_name(&rule.name) {
                return Err(ConfigError::new(
                    key("name"),
                    "rule names match ^[a-z0-9][a-z0-9_-]{0,62}$",
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("another rule is named {:?}", rule.name),
                ));
            }
            rules.push(rule.validate(&key, catalog, tenants, &channels)?);
        }
        Ok(rules)
    }
}

/// Refuses what is not an `http` or `https` URL with a host.
fn check_url(key: &str, text: &str) -> Result<(), ConfigError> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(ConfigError::new(
            key,
            "must be an http:// or https:// URL with a host",
        )),
    }
}

impl AlertRuleConfig {
    fn validate(
        &self,
        key: &dyn Fn(&str) -> String,
        catalog: &MetricCatalog,
        tenants: &BTreeMap<String, TenantConfig>,
        channels: &BTreeSet<&str>,
    ) -> Result<AlertRule, ConfigError> {
        let zero = BigDecimal::from(0);
        let needs = |field: &str, kind: &str| {
            ConfigError::new(key(field), format!("a {kind} rule needs this key"))
        };
        let refuse = |field: &str, kind: &str| {
            ConfigError::new(key(field), format!("a {kind} rule does not take this key"))
        };
        let kind = self.kind.as_str();
        let metric = |wanted: &[MetricKind]| -> Result<String, ConfigError> {
            let name = self.metric.clone().ok_or_else(|| needs("metric", kind))?;
            match catalog.get(&name) {
                Some(spec) if wanted.contains(&spec.kind) => Ok(name),
                Some(_) => Err(ConfigError::new(
                    key("metric"),
                    "a noisy rule watches a counter metric",
                )),
                None => Err(ConfigError::new(
                    key("metric"),
                    "is not a metric of the catalog",
                )),
            }
        };
        let total = || match self.per.as_deref() {
            None | Some("tenant") => Ok(false),
            Some("total") => Ok(true),
            Some(_) => Err(ConfigError::new(
                key("per"),
                "must be \"tenant\" or \"total\"",
            )),
        };
        let condition = match kind {
            "quota" => AlertCondition::Quota {
                metric: metric(&[
                    MetricKind::Counter,
                    MetricKind::Gauge,
                    MetricKind::Max,
                    MetricKind::UniqueCount,
                    MetricKind::Latest,
                ])?,
            },
            "spend" => AlertCondition::Spend { total: total()? },
            "forecast" => AlertCondition::Forecast { total: total()? },
            "health" => AlertCondition::Health {
                critical: match self.status.as_deref() {
                    Some("warning") => false,
                    Some("critical") => true,
                    Some(_) => {
                        return Err(ConfigError::new(
                            key("status"),
                            "must be \"warning\" or \"critical\"",
                        ));
                    }
                    None => return Err(needs("status", kind)),
                },
            },
            "noisy" => AlertCondition::Noisy {
                metric: metric(&[MetricKind::Counter])?,
            },
            "silent" => match self.after {
                Some(after) if !after.0.is_zero() => AlertCondition::Silent { after: after.0 },
                Some(_) => return Err(ConfigError::new(key("after"), "must be longer than 0")),
                None => return Err(needs("after", kind)),
            },
            "rejected" => AlertCondition::Rejected,
            _ => {
                return Err(ConfigError::new(
                    key("kind"),
                    "must be one of quota, spend, forecast, health, noisy, silent, rejected",
                ));
            }
        };
        // Each key a kind does not read is refused, so that a typo in the kind
        // never leaves a rule watching something else than written.
        let takes_metric = matches!(kind, "quota" | "noisy");
        let takes_threshold = matches!(kind, "quota" | "spend" | "forecast" | "rejected");
        for (field, set, takes) in [
            ("metric", self.metric.is_some(), takes_metric),
            ("threshold", self.threshold.is_some(), takes_threshold),
            (
                "resolve_below",
                self.resolve_below.is_some(),
                takes_threshold,
            ),
            ("status", self.status.is_some(), kind == "health"),
            ("after", self.after.is_some(), kind == "silent"),
            (
                "per",
                self.per.is_some(),
                matches!(kind, "spend" | "forecast"),
            ),
        ] {
            if set && !takes {
                return Err(refuse(field, kind));
            }
        }
        let threshold = if takes_threshold {
            let threshold = self
                .threshold
                .as_ref()
                .ok_or_else(|| needs("threshold", kind))?
                .0
                .clone();
            if threshold < zero {
                return Err(ConfigError::new(key("threshold"), "must not be negative"));
            }
            if kind == "quota" && threshold > MAX_QUOTA_PERCENT {
                return Err(ConfigError::new(
                    key("threshold"),
                    format!("a quota percentage is between 0 and {MAX_QUOTA_PERCENT}"),
                ));
            }
            threshold
        } else {
            BigDecimal::from(1)
        };
        let resolve_below = match &self.resolve_below {
            Some(below) if below.0 > threshold || below.0 < zero => {
                return Err(ConfigError::new(
                    key("resolve_below"),
                    "must be between 0 and the rule's threshold",
                ));
            }
            Some(below) => below.0.clone(),
            None => threshold.clone(),
        };
        let watched = match (&self.tenants, &self.tenant_labels) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("tenant_labels"),
                    format!(
                        "give {} or {}, not both",
                        key("tenants"),
                        key("tenant_labels")
                    ),
                ));
            }
            (Some(list), None) => {
                let mut watched = BTreeSet::new();
                for (j, tenant) in list.iter().enumerate() {
                    if !tenants.contains_key(tenant) {
                        return Err(ConfigError::new(
                            key(&format!("tenants[{j}]")),
                            format!("{tenant:?} has no [tenants.{tenant}] entry"),
                        ));
                    }
                    watched.insert(tenant.clone());
                }
                Some(watched)
            }
            (None, Some(wanted)) => {
                if wanted.is_empty() {
                    return Err(ConfigError::new(
                        key("tenant_labels"),
                        "name at least one label (leave the key out to watch every tenant)",
                    ));
                }
                if let Some(label) = wanted.keys().find(|label| !is_valid_label_key(label)) {
                    return Err(ConfigError::new(
                        key(&format!("tenant_labels.{label:?}")),
                        "is not a tenant label key (see [tenants.<id>] labels)",
                    ));
                }
                // Tenant labels live in the configuration only, so the scope
                // is resolved once, here, into the tenants it selects.
                Some(
                    tenants
                        .iter()
                        .filter(|(_, settings)| {
                            wanted
                                .iter()
                                .all(|(label, value)| settings.labels.get(label) == Some(value))
                        })
                        .map(|(tenant, _)| tenant.clone())
                        .collect(),
                )
            }
            (None, None) => None,
        };
        if self.channels.is_empty() {
            return Err(ConfigError::new(
                key("channels"),
                "name at least one channel",
            ));
        }
        for (j, channel) in self.channels.iter().enumerate() {
            if !channels.contains(channel.as_str()) {
                return Err(ConfigError::new(
                    key(&format!("channels[{j}]")),
                    format!("no [[alerts.channels]] is named {channel:?}"),
                ));
            }
        }
        if let Some(repeat) = self.repeat
            && repeat.0.is_zero()
        {
            return Err(ConfigError::new(key("repeat"), "must be longer than 0"));
        }
        Ok(AlertRule {
            name: self.name.clone(),
            condition,
            threshold,
            resolve_below,
            tenants: watched,
            repeat: self.repeat.map(|r| r.0),
            channels: self.channels.clone(),
        })
    }
}
