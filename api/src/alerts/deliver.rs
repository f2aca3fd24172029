//! One delivery attempt to one channel (docs/reference.md#alert-delivery): a
//! signed webhook POST or a Slack message, and what came of it. No retries
//! here; the runner schedules them.

use std::time::Duration;

use allot_query::alerts::Notice;
use allot_schemas::config::{AlertChannelConfig, Secret};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A channel ready to send to.
#[derive(Clone)]
pub enum Channel {
    /// A signed JSON POST.
    Webhook {
        /// Where.
        url: String,
        /// The HMAC key.
        secret: Secret,
    },
    /// A Slack-compatible incoming webhook.
    Slack {
        /// Where (the URL is the channel's secret).
        url: String,
        /// The dashboards' address, for links.
        dashboard_url: Option<String>,
    },
}

impl Channel {
    /// The channel `config` describes (already validated).
    pub fn new(config: &AlertChannelConfig, dashboard_url: Option<&str>) -> Channel {
        match (config.kind.as_str(), &config.secret) {
            ("webhook", Some(secret)) => Channel::Webhook {
                url: config.url.clone(),
                secret: secret.clone(),
            },
            _ => Channel::Slack {
                url: config.url.clone(),
                dashboard_url: dashboard_url.map(|u| u.trim_end_matches('/').to_string()),
            },
        }
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 (RFC 2104) of `body` keyed with `secret`,
/// as the `X-Allot-Signature` header carries it.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let key = secret.expose().as_bytes();
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

/// The text of a Slack message about `notice`.
pub fn slack_text(notice: &Notice, dashboard_url: Option<&str>) -> String {
    let body: Value = serde_json::from_str(&notice.body).unwrap_or(Value::Null);
    let text = |field: &str| match body.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "—".to_string(),
        Some(other) => other.to_string(),
    };
    let tenant = match dashboard_url {
        Some(base) if notice.tenant_id != allot_schemas::config::ALL_TENANTS => format!(
            "<{base}/#/tenant/{}|{}>",
            notice.tenant_id, notice.tenant_id
        ),
        _ => notice.tenant_id.clone(),
    };
    let mut line = format!(
        "[{}] {} ({}) for tenant {tenant}: value {}, threshold {}",
        notice.state.as_str().to_uppercase(),
        notice.rule,
        text("kind"),
        text("value"),
        text("threshold"),
    );
    if let Some(Value::Array(reasons)) = body.get("reasons") {
        for reason in reasons.iter().filter_map(Value::as_str) {
            line.push_str("\n• ");
            line.push_str(reason);
        }
    }
    line
}

/// Sends `notice` to `channel` once. `Err` says what went wrong, in words
/// fit for a log (never the secret, nor the URL's query).
pub async fn attempt(
    client: &reqwest::Client,
    channel: &Channel,
    notice: &Notice,
    timeout: Duration,
) -> Result<(), String> {
    let request = match channel {
        Channel::Webhook { url, secret } => client
            .post(url)
            .header("content-type", "application/json")
            .header(
                "x-allot-signature",
                signature(secret, notice.body.as_bytes()),
            )
            .header("idempotency-key", &notice.key)
            .body(notice.body.clone()),
        Channel::Slack { url, dashboard_url } => {
            let text = slack_text(notice, dashboard_url.as_deref());
            client
                .post(url)
                .header("content-type", "application/json")
                .header("idempotency-key", &notice.key)
                .body(serde_json::json!({ "text": text }).to_string())
        }
    };
    match request.timeout(timeout).send().await {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) => Err(format!("answered {}", answer.status())),
        Err(error) if error.is_timeout() => Err(format!("no answer within {timeout:?}")),
        Err(error) if error.is_connect() => Err("cannot connect".to_string()),
        Err(error) => Err(error.without_url().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let secret = Secret::from("Jefe".to_string());
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than a block is hashed first (value from Python's hmac module).
        let long = Secret::from("k".repeat(100));
        assert_eq!(
            signature(&long, br#"{"rule":"r"}"#),
            "sha256=4c31e542c4a6bd6d3ce3cc981b408d5c773be18898ae34fbe0ec3f56bea0a33e"
        );
    }
}
