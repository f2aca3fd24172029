//! Writing a configuration back as TOML (what `allot demo` and period close
//! record).

use super::Config;
use super::metrics::MetricKind;
use super::pricing::RateEntry;

impl Config {
    /// The billing part of a configuration as canonical TOML text: the currency, the
    /// whole effective metric catalog (built-in metrics included), the global price
    /// book and every tenant (discount, quotas, rate overrides). A closing stores
    /// this text and its SHA-256, and `allot verify` parses it back with
    /// [`Config::from_toml_str`]: the same inputs always give the same text, and the
    /// text gives back the same catalog, price book and tenants.
    pub fn billing_toml(&self) -> String {
        let mut out = format!("currency = {}\n", toml_string(&self.currency));
        for (name, spec) in self.catalog().iter() {
            out.push_str(&format!("\n[metrics.{name}]\n"));
            let kind = match spec.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            out.push_str(&format!("kind = \"{kind}\"\n"));
            out.push_str(&format!("unit = {}\n", toml_string(&spec.unit)));
            out.push_str(&format!(
                "divisor = \"{}\"\n",
                spec.divisor.to_plain_string()
            ));
            if let Some(hold) = spec.hold {
                out.push_str(&format!("hold = \"{}ms\"\n", hold.as_millis()));
            }
        }
        let rates = |out: &mut String, header: &str, entries: &[RateEntry]| {
            for entry in entries {
                out.push_str(&format!("\n[[{header}]]\n"));
                out.push_str(&format!("metric = {}\n", toml_string(&entry.metric)));
                out.push_str(&format!(
                    "effective_from = {}\n",
                    toml_string(&entry.effective_from)
                ));
                if let Some(price) = &entry.unit_price {
                    out.push_str(&format!("unit_price = \"{}\"\n", price.0.to_plain_string()));
                }
                if let Some(tiers) = &entry.tiers {
                    let tiers: Vec<String> = tiers
                        .iter()
                        .map(|tier| match &tier.up_to {
                            Some(up_to) => format!(
                                "{{ up_to = \"{}\", unit_price = \"{}\" }}",
                                up_to.0.to_plain_string(),
                                tier.unit_price.0.to_plain_string()
                            ),
                            None => format!(
                                "{{ unit_price = \"{}\" }}",
                                tier.unit_price.0.to_plain_string()
                            ),
                        })
                        .collect();
                    out.push_str(&format!("tiers = [{}]\n", tiers.join(", ")));
                }
            }
        };
        rates(&mut out, "rates", &self.rates);
        for (tenant, settings) in &self.tenants {
            out.push_str(&format!("\n[tenants.{tenant}]\n"));
            if let Some(discount) = &settings.discount_percent {
                out.push_str(&format!(
                    "discount_percent = \"{}\"\n",
                    discount.0.to_plain_string()
                ));
            }
            if !settings.quotas.is_empty() {
                let quotas: Vec<String> = settings
                    .quotas
                    .iter()
                    .map(|(metric, quota)| format!("{metric} = \"{}\"", quota.0.to_plain_string()))
                    .collect();
                out.push_str(&format!("quotas = {{ {} }}\n", quotas.join(", ")));
            }
            rates(
                &mut out,
                &format!("tenants.{tenant}.rates"),
                &settings.rates,
            );
        }
        out
    }
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
pub(super) fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}
