//! Rules against facts: each (rule, tenant) is a small state machine
//! (docs/reference.md#alert-states).
//!
//! ```text
//!          figure ≥ threshold                     figure < resolve_below
//!   ok ───────────────────────▶ firing ───────────────────────────────▶ ok
//!        (notice `firing`)        │ ▲   (notice `resolved`)
//!                                 └─┘ every `repeat` while it holds (notice `firing`)
//! ```
//!
//! [`evaluate`] is pure: given the facts of one lake refresh and the last
//! notice of every (rule, tenant), it gives the notices to record. It never
//! sends anything; the caller commits the notices, then delivers them.

use std::collections::BTreeMap;

use allot_schemas::config::{ALL_TENANTS, AlertCondition, AlertRule};
pub use allot_schemas::table_schema::notice_key;
use allot_schemas::time::MICROS_PER_HOUR;
use bigdecimal::{BigDecimal, Zero};

use super::facts::{AlertFacts, TenantFacts};
use crate::health::HealthStatus;
use crate::rounding::{Rounding, div_round, format_fixed};

/// Whether an alert is in breach (`firing`) or has left it (`resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// It crossed into breach.
    Firing,
    /// It left the breach.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<AlertState> {
        match text {
            "firing" => Some(AlertState::Firing),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// The last notice of one (rule, tenant), as the evaluator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastNotice {
    /// Its state.
    pub state: AlertState,
    /// How many notices the (rule, tenant) has had, this one included.
    pub number: u64,
    /// When it was recorded, UTC microseconds.
    pub recorded_at: i64,
    /// The `usage_events` version its facts were read at.
    pub lake_version: Option<u64>,
}

/// A notice to record: one (rule, tenant) changed state, or repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotice {
    /// The rule.
    pub rule: String,
    /// The rule's kind.
    pub kind: &'static str,
    /// The tenant, or [`ALL_TENANTS`].
    pub tenant_id: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// The figure as shown (`None`: the tenant has no figure any more).
    pub value: Option<String>,
    /// The threshold as shown.
    pub threshold: String,
    /// The health reasons (`code: message`) of a health rule.
    pub reasons: Vec<String>,
    /// The (rule, tenant)'s notice number: 1 for its first.
    pub number: u64,
    /// The channels to send it to.
    pub channels: Vec<String>,
}

impl NewNotice {
    /// The idempotency key: the same for every delivery and retry of this
    /// notice, and the same whichever server computed it.
    pub fn key(&self) -> String {
        notice_key(&self.rule, &self.tenant_id, self.number)
    }
}

/// A figure against a rule: `breach_from` says whether it reaches the
/// threshold, `clear_below` whether it is below `resolve_below`.
struct Figure {
    /// At or above the threshold.
    reaches: bool,
    /// Below `resolve_below`.
    clears: bool,
    /// As shown.
    shown: String,
    /// The health reasons, for a health rule.
    reasons: Vec<String>,
}

/// A decimal figure `num / den` (den > 0) against a rule's thresholds, compared
/// exactly: `num ≥ threshold × den`.
fn ratio_figure(rule: &AlertRule, num: &BigDecimal, den: &BigDecimal, shown: String) -> Figure {
    Figure {
        reaches: num >= &(&rule.threshold * den),
        clears: num < &(&rule.resolve_below * den),
        shown,
        reasons: Vec::new(),
    }
}

/// A condition that holds or not (health, noisy).
fn flag_figure(holds: bool, shown: String, reasons: Vec<String>) -> Figure {
    Figure {
        reaches: holds,
        clears: !holds,
        shown,
        reasons,
    }
}

/// The figure of `rule` for one tenant; `None` when the rule has nothing to
/// say about it (no quota for the metric).
fn tenant_figure(rule: &AlertRule, facts: &TenantFacts, now: i64) -> Option<Figure> {
    let one = BigDecimal::from(1);
    let health = &facts.health;
    match &rule.condition {
        AlertCondition::Quota { metric } => {
            let quota = health.quota_use.iter().find(|q| &q.metric == metric)?;
            if quota.quota <= BigDecimal::zero() {
                return None;
            }
            Some(ratio_figure(
                rule,
                &(&quota.used * BigDecimal::from(100)),
                &quota.quota,
                quota.percent.to_plain_string(),
            ))
        }
        AlertCondition::Spend { .. } => Some(ratio_figure(
            rule,
            &health.mtd_cost,
            &one,
            format_fixed(&health.mtd_cost, 2),
        )),
        AlertCondition::Forecast { .. } => Some(ratio_figure(
            rule,
            &health.forecast,
            &one,
            format_fixed(&health.forecast, 2),
        )),
        AlertCondition::Health { critical } => {
            let wanted = if *critical {
                HealthStatus::Critical
            } else {
                HealthStatus::Warning
            };
            Some(flag_figure(
                health.status >= wanted,
                health.status.to_string(),
                health.reason_lines(),
            ))
        }
        AlertCondition::Noisy { metric } => {
            let flagged = health.noisy_metrics.iter().any(|m| m == metric);
            Some(flag_figure(
                flagged,
                if flagged { "1" } else { "0" }.to_string(),
                Vec::new(),
            ))
        }
        AlertCondition::Silent { after } => {
            let after = i64::try_from(after.as_micros()).unwrap_or(i64::MAX);
            // No accepted event in the last 7 days: dormant, which neither
            // starts an alert nor ends one (only an event does).
            let Some(last) = facts.last_event_7d_micros else {
                return Some(Figure {
                    reaches: false,
                    clears: false,
                    shown: "dormant".to_string(),
                    reasons: Vec::new(),
                });
            };
            let silent = now.saturating_sub(last);
            Some(Figure {
                reaches: silent >= after,
                clears: silent < after,
                shown: hours(silent),
                reasons: Vec::new(),
            })
        }
        AlertCondition::Rejected => Some(ratio_figure(
            rule,
            &BigDecimal::from(facts.rejected_last_hour),
            &one,
            facts.rejected_last_hour.to_string(),
        )),
    }
}

/// Microseconds as hours with 2 places, floored.
fn hours(micros: i64) -> String {
    div_round(
        &BigDecimal::from(micros),
        &BigDecimal::from(MICROS_PER_HOUR),
        2,
        Rounding::Floor,
    )
    .to_plain_string()
}

/// The threshold of `rule` as shown.
fn threshold_text(rule: &AlertRule) -> String {
    match &rule.condition {
        AlertCondition::Health { critical: true } => "critical".to_string(),
        AlertCondition::Health { critical: false } => "warning".to_string(),
        AlertCondition::Silent { after } => hours(i64::try_from(after.as_micros()).unwrap_or(0)),
        _ => rule.threshold.to_plain_string(),
    }
}

/// The figures of `rule`, by tenant id ([`ALL_TENANTS`] for a total).
fn figures(rule: &AlertRule, facts: &AlertFacts) -> BTreeMap<String, Figure> {
    let watched = |id: &str| rule.tenants.as_ref().is_none_or(|set| set.contains(id));
    let total = match rule.condition {
        AlertCondition::Spend { total } | AlertCondition::Forecast { total } => total,
        _ => false,
    };
    if total {
        let sum: BigDecimal = facts
            .tenants
            .iter()
            .filter(|t| watched(&t.health.tenant_id))
            .map(|t| match rule.condition {
                AlertCondition::Spend { .. } => t.health.mtd_cost.clone(),
                _ => t.health.forecast.clone(),
            })
            .sum();
        let shown = format_fixed(&sum, 2);
        let figure = ratio_figure(rule, &sum, &BigDecimal::from(1), shown);
        return BTreeMap::from([(ALL_TENANTS.to_string(), figure)]);
    }
    facts
        .tenants
        .iter()
        .filter(|t| watched(&t.health.tenant_id))
        .filter_map(|t| {
            tenant_figure(rule, t, facts.as_of_micros).map(|f| (t.health.tenant_id.clone(), f))
        })
        .collect()
}

/// The notices `rules` give on `facts`, given the last notice of each (rule,
/// tenant) in `last` (see the module docs). A firing (rule, tenant) whose
/// tenant no longer has a figure resolves, with no value.
pub fn evaluate(
    rules: &[AlertRule],
    facts: &AlertFacts,
    last: &BTreeMap<(String, String), LastNotice>,
) -> Vec<NewNotice> {
    let now = facts.as_of_micros;
    let mut notices = Vec::new();
    for rule in rules {
        let mut figures = figures(rule, facts);
        // Firing alerts of this rule whose tenant has no figure any more.
        for ((name, tenant), notice) in last.range((rule.name.clone(), String::new())..) {
            if name != &rule.name {
                break;
            }
            if notice.state == AlertState::Firing && !figures.contains_key(tenant) {
                figures.insert(
                    tenant.clone(),
                    Figure {
                        reaches: false,
                        clears: true,
                        shown: String::new(),
                        reasons: Vec::new(),
                    },
                );
            }
        }
        for (tenant, figure) in figures {
            let previous = last.get(&(rule.name.clone(), tenant.clone()));
            // Another server decided this one on a newer lake than these facts
            // come from: they are stale for it, whatever they say.
            if previous.is_some_and(|p| p.lake_version > facts.lake_version) {
                continue;
            }
            let firing = previous.is_some_and(|p| p.state == AlertState::Firing);
            let number = previous.map_or(0, |p| p.number) + 1;
            let state = match (firing, previous) {
                (false, _) if figure.reaches => AlertState::Firing,
                (true, _) if figure.clears => AlertState::Resolved,
                (true, Some(p))
                    if rule.repeat.is_some_and(|every| {
                        now.saturating_sub(p.recorded_at)
                            >= i64::try_from(every.as_micros()).unwrap_or(i64::MAX)
                    }) =>
                {
                    AlertState::Firing
                }
                _ => continue,
            };
            notices.push(NewNotice {
                rule: rule.name.clone(),
                kind: rule.condition.kind(),
                tenant_id: tenant,
                state,
                value: (!figure.shown.is_empty()).then_some(figure.shown),
                threshold: threshold_text(rule),
                reasons: figure.reasons,
                number,
                channels: rule.channels.clone(),
            });
        }
    }
    notices
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use allot_schemas::config::Config;

    use super::*;
    use crate::health::{QuotaUse, TenantHealth};
    use crate::test_support::{d, ts};

    /// The rules of `rules_toml` (tenants acme, beta and gamma exist).
    fn rules(rules_toml: &str) -> Vec<AlertRule> {
        let text = format!(
            "[tenants.acme]\nlabels = {{ tier = \"enterprise\", region = \"eu\" }}\n\
             [tenants.beta]\nlabels = {{ tier = \"startup\", region = \"eu\" }}\n\
             [tenants.gamma]\nlabels = {{ tier = \"enterprise\" }}\n\
             [[alerts.channels]]\nname = \"hook\"\nkind = \"webhook\"\n\
             url = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\n{rules_toml}"
        );
        Config::from_toml_str(&text, "test", std::iter::empty::<(String, String)>())
            .unwrap()
            .alert_rules()
            .to_vec()
    }

    fn health(tenant: &str) -> TenantHealth {
        TenantHealth {
            tenant_id: tenant.to_string(),
            as_of_micros: 0,
            status: HealthStatus::Ok,
            reasons: Vec::new(),
            quota_use: Vec::new(),
            mtd_cost: d("0"),
            forecast: d("0"),
            noisy_metrics: Vec::new(),
            events_24h: 0,
        }
    }

    fn facts(at: &str, tenants: Vec<TenantFacts>) -> AlertFacts {
        AlertFacts {
            as_of_micros: ts(at),
            lake_version: Some(7),
            tenants,
        }
    }

    fn plain(health: TenantHealth) -> TenantFacts {
        TenantFacts {
            health,
            last_event_7d_micros: None,
            rejected_last_hour: 0,
        }
    }

    fn quota(tenant: &str, used: &str) -> TenantFacts {
        let mut h = health(tenant);
        let used = d(used);
        h.quota_use = vec![QuotaUse {
            metric: "compute_seconds".to_string(),
            percent: div_round(
                &(&used * BigDecimal::from(100)),
                &d("1000"),
                2,
                Rounding::Floor,
            ),
            used,
            quota: d("1000"),
        }];
        plain(h)
    }

    /// Runs `rules` over a sequence of facts, recording each notice as it
    /// would be committed; the (tenant, state, value) of each step's notices.
    fn replay(
        rules: &[AlertRule],
        steps: Vec<AlertFacts>,
    ) -> Vec<Vec<(String, &'static str, Option<String>)>> {
        let mut last: BTreeMap<(String, String), LastNotice> = BTreeMap::new();
        let mut out = Vec::new();
        for facts in steps {
            let notices = evaluate(rules, &facts, &last);
            for n in &notices {
                last.insert(
                    (n.rule.clone(), n.tenant_id.clone()),
                    LastNotice {
                        state: n.state,
                        number: n.number,
                        recorded_at: facts.as_of_micros,
                        lake_version: facts.lake_version,
                    },
                );
            }
            out.push(
                notices
                    .into_iter()
                    .map(|n| (n.tenant_id, n.state.as_str(), n.value))
                    .collect(),
            );
        }
        out
    }

    fn fired(tenant: &str, value: &str) -> (String, &'static str, Option<String>) {
        (tenant.to_string(), "firing", Some(value.to_string()))
    }

    fn resolved(tenant: &str, value: &str) -> (String, &'static str, Option<String>) {
        (tenant.to_string(), "resolved", Some(value.to_string()))
    }

    #[test]
    fn quota_crosses_stays_under_and_flaps_with_hysteresis() {
        // Quota 1000; fires at 90 % (used ≥ 900), resolves below 85 % (used < 850).
        // acme crosses (899.999 → 900), beta stays under (899.999 throughout),
        // gamma flaps around 90 %: 905 fires, 880 and 899 stay firing (not
        // below 85), 849.99 resolves, 860 stays resolved, 900 fires again.
        let rules = rules(
            "[[alerts.rules]]\nname = \"q90\"\nkind = \"quota\"\nmetric = \"compute_seconds\"\n\
             threshold = \"90\"\nresolve_below = \"85\"\nchannels = [\"hook\"]",
        );
        let steps = [
            ("899.999", "899.999", "905"),
            ("900", "899.999", "880"),
            ("950", "899.999", "899"),
            ("950", "899.999", "849.99"),
            ("950", "899.999", "860"),
            ("950", "899.999", "900"),
        ];
        let facts_seq = steps
            .iter()
            .enumerate()
            .map(|(i, (a, b, g))| {
                facts(
                    &format!("2026-12-0{}T00:00:00Z", i + 1),
                    vec![quota("acme", a), quota("beta", b), quota("gamma", g)],
                )
            })
            .collect();
        assert_eq!(
            replay(&rules, facts_seq),
            vec![
                vec![fired("gamma", "90.50")],
                vec![fired("acme", "90.00")],
                vec![],
                vec![resolved("gamma", "84.99")],
                vec![],
                vec![fired("gamma", "90.00")],
            ]
        );
    }

    #[test]
    fn notice_numbers_make_the_keys() {
        let rules = rules(
            "[[alerts.rules]]\nname = \"q\"\nkind = \"quota\"\nmetric = \"compute_seconds\"\n\
             threshold = \"50\"\nchannels = [\"hook\"]",
        );
        let mut last = BTreeMap::new();
        let first = evaluate(
            &rules,
            &facts("2026-12-01T00:00:00Z", vec![quota("acme", "500")]),
            &last,
        );
        assert_eq!(first[0].key(), "q/acme/1");
        last.insert(
            ("q".to_string(), "acme".to_string()),
            LastNotice {
                state: AlertState::Firing,
                number: 1,
                recorded_at: 0,
                lake_version: Some(7),
            },
        );
        let second = evaluate(
            &rules,
            &facts("2026-12-02T00:00:00Z", vec![quota("acme", "100")]),
            &last,
        );
        assert_eq!(second[0].key(), "q/acme/2");
        assert_eq!(second[0].state, AlertState::Resolved);
    }

    /// Two servers: one fired on version 9 of the lake; the other, whose
    /// refresh still shows version 7 (usage under the quota), must not
    /// resolve it, and does once its facts are as new.
    #[test]
    fn facts_older_than_the_last_notice_change_nothing() {
        let rules = rules(
            "[[alerts.rules]]\nname = \"q\"\nkind = \"quota\"\nmetric = \"compute_seconds\"\n\
             threshold = \"50\"\nchannels = [\"hook\"]",
        );
        let last = BTreeMap::from([(
            ("q".to_string(), "acme".to_string()),
            LastNotice {
                state: AlertState::Firing,
                number: 1,
                recorded_at: 0,
                lake_version: Some(9),
            },
        )]);
        let stale = facts("2026-12-02T00:00:00Z", vec![quota("acme", "100")]);
        assert_eq!(stale.lake_version, Some(7));
        assert!(evaluate(&rules, &stale, &last).is_empty());
        let current = AlertFacts {
            lake_version: Some(9),
            ..stale
        };
        let notices = evaluate(&rules, &current, &last);
        assert_eq!(notices[0].key(), "q/acme/2");
        assert_eq!(notices[0].state, AlertState::Resolved);
    }

    #[test]
    fn spend_per_tenant_and_in_total() {
        // Budget 100.00: acme 100.00 (reaches), beta 99.99 (under). In total,
        // 199.99 against 150: fires as tenant `*`; with resolve_below 120 it
        // holds at 120.00 and resolves at 119.99.
        let per_tenant = rules(
            "[[alerts.rules]]\nname = \"budget\"\nkind = \"spend\"\nthreshold = \"100\"\nchannels = [\"hook\"]",
        );
        let spend = |tenant: &str, cost: &str| {
            let mut h = health(tenant);
            h.mtd_cost = d(cost);
            plain(h)
        };
        let at = "2026-12-05T00:00:00Z";
        assert_eq!(
            replay(
                &per_tenant,
                vec![facts(
                    at,
                    vec![spend("acme", "100.00"), spend("beta", "99.99")]
                )]
            ),
            vec![vec![fired("acme", "100.00")]]
        );
        let total = rules(
            "[[alerts.rules]]\nname = \"all\"\nkind = \"spend\"\nper = \"total\"\nthreshold = \"150\"\n\
             resolve_below = \"120\"\nchannels = [\"hook\"]",
        );
        assert_eq!(
            replay(
                &total,
                vec![
                    facts(at, vec![spend("acme", "100.00"), spend("beta", "99.99")]),
                    facts(at, vec![spend("acme", "60.00"), spend("beta", "60.00")]),
                    facts(at, vec![spend("acme", "60.00"), spend("beta", "59.99")]),
                ]
            ),
            vec![
                vec![fired("*", "199.99")],
                vec![],
                vec![resolved("*", "119.99")]
            ]
        );
    }

    #[test]
    fn forecast_fires_on_the_forecast_not_the_spend() {
        let rules = rules(
            "[[alerts.rules]]\nname = \"fc\"\nkind = \"forecast\"\nthreshold = \"1000\"\nchannels = [\"hook\"]",
        );
        let mut h = health("acme");
        h.mtd_cost = d("100.00");
        h.forecast = d("1000.00");
        let mut under = health("beta");
        under.mtd_cost = d("900.00");
        under.forecast = d("999.99");
        assert_eq!(
            replay(
                &rules,
                vec![facts("2026-12-04T00:00:00Z", vec![plain(h), plain(under)])]
            ),
            vec![vec![fired("acme", "1000.00")]]
        );
    }

    #[test]
    fn health_warning_and_critical_carry_the_reasons() {
        let warning = rules(
            "[[alerts.rules]]\nname = \"hw\"\nkind = \"health\"\nstatus = \"warning\"\nchannels = [\"hook\"]",
        );
        let critical = rules(
            "[[alerts.rules]]\nname = \"hc\"\nkind = \"health\"\nstatus = \"critical\"\nchannels = [\"hook\"]",
        );
        let status = |tenant: &str, status: HealthStatus| {
            let mut h = health(tenant);
            h.status = status;
            if status != HealthStatus::Ok {
                h.reasons = vec![crate::health::HealthReason {
                    code: "stale",
                    severity: status,
                    message: "no event for 2h".to_string(),
                }];
            }
            plain(h)
        };
        let at = "2026-12-04T00:00:00Z";
        let step = |a, b| facts(at, vec![status("acme", a), status("beta", b)]);
        let seq = || {
            vec![
                step(HealthStatus::Warning, HealthStatus::Ok),
                step(HealthStatus::Critical, HealthStatus::Ok),
                step(HealthStatus::Ok, HealthStatus::Ok),
            ]
        };
        assert_eq!(
            replay(&warning, seq()),
            vec![
                vec![fired("acme", "warning")],
                vec![],
                vec![resolved("acme", "ok")]
            ]
        );
        assert_eq!(
            replay(&critical, seq()),
            vec![
                vec![],
                vec![fired("acme", "critical")],
                vec![resolved("acme", "ok")]
            ]
        );
        let notice = &evaluate(&warning, &seq()[0], &BTreeMap::new())[0];
        assert_eq!(notice.reasons, ["stale: no event for 2h"]);
        assert_eq!(notice.threshold, "warning");
    }

    #[test]
    fn noisy_fires_on_its_metric_only() {
        let rules = rules(
            "[[alerts.rules]]\nname = \"n\"\nkind = \"noisy\"\nmetric = \"compute_seconds\"\nchannels = [\"hook\"]",
        );
        let noisy = |tenant: &str, metrics: &[&str]| {
            let mut h = health(tenant);
            h.noisy_metrics = metrics.iter().map(|m| (*m).to_string()).collect();
            plain(h)
        };
        let at = "2026-12-04T00:00:00Z";
        assert_eq!(
            replay(
                &rules,
                vec![
                    facts(
                        at,
                        vec![
                            noisy("acme", &["compute_seconds"]),
                            noisy("beta", &["egress_bytes"])
                        ]
                    ),
                    facts(
                        at,
                        vec![noisy("acme", &[]), noisy("beta", &["egress_bytes"])]
                    ),
                ]
            ),
            vec![vec![fired("acme", "1")], vec![resolved("acme", "0")]]
        );
    }

    #[test]
    fn silent_fires_after_the_quiet_spell_and_resolves_on_an_event() {
        // after = 6h. acme's last event 6h before → fires (6.00 h); beta's 5h59m
        // → stays under; a day later acme sent nothing since (30 h) → still
        // firing; gamma dormant (nothing in 7 days) → never fires; then acme
        // sends an event 1 minute before → resolves.
        let rules = rules(
            "[[alerts.rules]]\nname = \"s\"\nkind = \"silent\"\nafter = \"6h\"\nchannels = [\"hook\"]",
        );
        let tenant = |id: &str, last: Option<&str>| TenantFacts {
            last_event_7d_micros: last.map(ts),
            ..plain(health(id))
        };
        assert_eq!(
            replay(
                &rules,
                vec![
                    facts(
                        "2026-12-04T12:00:00Z",
                        vec![
                            tenant("acme", Some("2026-12-04T06:00:00Z")),
                            tenant("beta", Some("2026-12-04T06:01:00Z")),
                            tenant("gamma", None),
                        ]
                    ),
                    facts(
                        "2026-12-05T12:00:00Z",
                        vec![
                            tenant("acme", Some("2026-12-04T06:00:00Z")),
                            tenant("gamma", None)
                        ]
                    ),
                    facts(
                        "2026-12-05T13:00:00Z",
                        vec![tenant("acme", Some("2026-12-05T12:59:00Z"))]
                    ),
                ]
            ),
            vec![
                vec![fired("acme", "6.00")],
                vec![],
                vec![resolved("acme", "0.01")]
            ]
        );
        assert_eq!(
            rules[0].condition,
            AlertCondition::Silent {
                after: Duration::from_secs(6 * 3600)
            }
        );
    }

    #[test]
    fn rejected_counts_the_last_hour() {
        let rules = rules(
            "[[alerts.rules]]\nname = \"r\"\nkind = \"rejected\"\nthreshold = \"10\"\nresolve_below = \"5\"\n\
             tenants = [\"acme\", \"beta\"]\nchannels = [\"hook\"]",
        );
        let rejected = |id: &str, n: u64| TenantFacts {
            rejected_last_hour: n,
            ..plain(health(id))
        };
        let at = "2026-12-04T00:00:00Z";
        // gamma is not watched: 50 rejected events never fire.
        assert_eq!(
            replay(
                &rules,
                vec![
                    facts(
                        at,
                        vec![
                            rejected("acme", 10),
                            rejected("beta", 9),
                            rejected("gamma", 50)
                        ]
                    ),
                    facts(at, vec![rejected("acme", 5), rejected("beta", 9)]),
                    facts(at, vec![rejected("acme", 4), rejected("beta", 9)]),
                ]
            ),
            vec![
                vec![fired("acme", "10")],
                vec![],
                vec![resolved("acme", "4")]
            ]
        );
        assert_eq!(
            rules[0].tenants,
            Some(BTreeSet::from(["acme".to_string(), "beta".to_string()]))
        );
    }

    #[test]
    fn a_label_scope_watches_only_the_tenants_with_every_label() {
        // Quota 1000 at 90 %, only tenants labelled tier = enterprise and
        // region = eu: acme (both labels) crosses and fires; beta (a startup)
        // and gamma (enterprise, no region) cross too and are not watched.
        let eu_enterprise = rules(
            "[[alerts.rules]]\nname = \"eu-enterprise\"\nkind = \"quota\"\nmetric = \"compute_seconds\"\n\
             threshold = \"90\"\ntenant_labels = { tier = \"enterprise\", region = \"eu\" }\n\
             channels = [\"hook\"]",
        );
        assert_eq!(
            eu_enterprise[0].tenants,
            Some(BTreeSet::from(["acme".to_string()]))
        );
        assert_eq!(
            replay(
                &eu_enterprise,
                vec![
                    facts(
                        "2026-12-04T00:00:00Z",
                        vec![
                            quota("acme", "899"),
                            quota("beta", "899"),
                            quota("gamma", "899")
                        ]
                    ),
                    facts(
                        "2026-12-04T01:00:00Z",
                        vec![
                            quota("acme", "950"),
                            quota("beta", "990"),
                            quota("gamma", "1000")
                        ]
                    ),
                ]
            ),
            vec![vec![], vec![fired("acme", "95.00")]]
        );
        // One label: both enterprise tenants.
        let enterprise = rules(
            "[[alerts.rules]]\nname = \"ent\"\nkind = \"spend\"\nthreshold = \"10\"\n\
             tenant_labels = { tier = \"enterprise\" }\nchannels = [\"hook\"]",
        );
        assert_eq!(
            enterprise[0].tenants,
            Some(BTreeSet::from(["acme".to_string(), "gamma".to_string()]))
        );
    }

    #[test]
    fn repeat_resends_while_firing_and_a_vanished_tenant_resolves() {
        let rules = rules(
            "[[alerts.rules]]\nname = \"q\"\nkind = \"quota\"\nmetric = \"compute_seconds\"\n\
             threshold = \"50\"\nrepeat = \"1h\"\nchannels = [\"hook\"]",
        );
        assert_eq!(
            replay(
                &rules,
                vec![
                    facts("2026-12-04T00:00:00Z", vec![quota("acme", "600")]),
                    facts("2026-12-04T00:59:59Z", vec![quota("acme", "600")]),
                    facts("2026-12-04T01:00:00Z", vec![quota("acme", "600")]),
                    facts("2026-12-04T01:30:00Z", vec![plain(health("acme"))]),
                ]
            ),
            vec![
                vec![fired("acme", "60.00")],
                vec![],
                vec![fired("acme", "60.00")],
                vec![("acme".to_string(), "resolved", None)],
            ]
        );
    }
}
