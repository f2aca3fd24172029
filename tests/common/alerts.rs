//! The alert tests' fixtures (docs/reference.md#alerts): a webhook receiver on
//! 127.0.0.1 that records what it gets and can be taken down, lakes whose
//! configuration watches a compute_seconds quota, and checks of what was
//! received (signatures, counts by idempotency key).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allot_api::alerts::deliver::signature;
use allot_schemas::config::Secret;
use serde_json::Value;

use super::{CliLake, FLAT_PRICE_BOOK, ServeProcess};

/// The servers' token key.
pub const JWT_SECRET: &str = "a test secret that is long enough for HS256";
/// Every webhook channel's signing key.
pub const HOOK_SECRET: &str = "the hook's secret, 16 bytes at least";
/// How long a notice may take to arrive: a few refreshes and a delivery on a
/// machine busy with other tests.
pub const ARRIVES_WITHIN: Duration = Duration::from_secs(30);

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub fn key(&self) -> String {
        self.headers["idempotency-key"].clone()
    }
}

/// A webhook receiver on 127.0.0.1: answers 200 to every request while up,
/// and drops every connection unanswered while down.
pub struct Receiver {
    pub address: String,
    pub up: Arc<AtomicBool>,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections dropped while down.
    pub refused: Arc<Mutex<u32>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver = Receiver {
            address: listener.local_addr().unwrap().to_string(),
            up: Arc::new(AtomicBool::new(true)),
            received: Arc::default(),
            refused: Arc::default(),
        };
        let (up, received, refused) = (
            Arc::clone(&receiver.up),
            Arc::clone(&receiver.received),
            Arc::clone(&receiver.refused),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if !up.load(Ordering::SeqCst) {
                    *refused.lock().unwrap() += 1;
                    drop(stream);
                    continue;
                }
                let received = Arc::clone(&received);
                std::thread::spawn(move || {
                    if let Some(request) = read_request(stream) {
                        received.lock().unwrap().push(request);
                    }
                });
            }
        });
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `done` holds of what was received.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        self.try_wait_for(done).unwrap_or_else(|received| {
            panic!("{what}: not received within {ARRIVES_WITHIN:?}; got {received:#?}")
        })
    }

    /// Waits until `done` holds of what was received; what was, if it never did.
    pub fn try_wait_for(
        &self,
        done: impl Fn(&[Received]) -> bool,
    ) -> Result<Vec<Received>, Vec<Received>> {
        let deadline = Instant::now() + ARRIVES_WITHIN;
        loop {
            let received = self.received();
            if done(&received) {
                return Ok(received);
            }
            if Instant::now() >= deadline {
                return Err(received);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads one HTTP/1.1 request and answers 200.
pub fn read_request(mut stream: TcpStream) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(bytes[head_end..head_end + length].to_vec()).ok()?;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Received {
        path,
        headers,
        body,
    })
}

/// A lake whose configuration watches compute_seconds quotas of 1000 (acme,
/// beta, gamma) at 90 %, resolving below 85 %, sent to `channels` (TOML
/// `[[alerts.channels]]` entries, the first named `hook`).
pub fn alert_lake(channels: &str, rule_channels: &str) -> CliLake {
    alert_lake_with(channels, rule_channels, "")
}

/// [`alert_lake`] with the further `[alerts]` keys `alerts`.
pub fn alert_lake_with(channels: &str, rule_channels: &str, alerts: &str) -> CliLake {
    let lake = CliLake::new("");
    let config = format!(
        "{FLAT_PRICE_BOOK}\n\
         [tenants.acme]\nquotas = {{ compute_seconds = \"1000\" }}\n\
         [tenants.beta]\nquotas = {{ compute_seconds = \"1000\" }}\n\
         [tenants.gamma]\nquotas = {{ compute_seconds = \"1000\" }}\n\
         [api]\njwt_secret = \"{JWT_SECRET}\"\naudit_log = \"{audit}\"\n\
         rate_limit_per_s = 100000\nrefresh_interval = \"200ms\"\n\
         [alerts]\nretry_initial = \"500ms\"\nretry_max = \"1s\"\ndelivery_timeout = \"2s\"\n\
         claim_lease = \"3s\"\n{alerts}\n\
         {channels}\n\
         [[alerts.rules]]\nname = \"q90\"\nkind = \"quota\"\nmetric = \"compute_seconds\"\n\
         threshold = \"90\"\nresolve_below = \"85\"\nchannels = [{rule_channels}]\n",
        audit = lake.dir.path().join("audit.jsonl").display(),
    );
    std::fs::write(lake.config(), config).unwrap();
    lake
}

pub fn webhook(name: &str, url: &str) -> String {
    format!(
        "[[alerts.channels]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{HOOK_SECRET}\"\n"
    )
}

/// Ingests one compute_seconds event of `value` for `tenant`, a minute ago.
pub fn use_compute(lake: &CliLake, tenant: &str, id: &str, value: &str) {
    let at = (chrono::Utc::now() - chrono::Duration::seconds(60))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    use_compute_at(lake, tenant, id, value, &at);
}

/// Ingests one compute_seconds event of `value` for `tenant` at `at`.
pub fn use_compute_at(lake: &CliLake, tenant: &str, id: &str, value: &str, at: &str) {
    let file = lake.dir.path().join(format!("{id}.jsonl"));
    std::fs::write(
        &file,
        format!(
            r#"{{"event_id":"{id}","tenant_id":"{tenant}","ts":"{at}","metric":"compute_seconds","value":{value}}}"#
        ) + "\n",
    )
    .unwrap();
    lake.ingest(&file);
}

/// The notices of `received` by key, each with how many times it came.
pub fn by_key(received: &[Received]) -> BTreeMap<String, usize> {
    let mut keys = BTreeMap::new();
    for r in received {
        *keys.entry(r.key()).or_default() += 1;
    }
    keys
}

pub fn assert_signed(request: &Received) {
    assert_eq!(
        request.headers["x-allot-signature"],
        signature(
            &Secret::from(HOOK_SECRET.to_string()),
            request.body.as_bytes()
        ),
        "{request:?}"
    );
    assert_eq!(request.json()["key"], request.key());
}

/// The alerts `GET /v1/alerts` lists for `token`.
pub fn alerts_of(server: &ServeProcess, token: &str) -> Vec<Value> {
    let (status, body) = server.request("GET /v1/alerts", token, "");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["alerts"].as_array().unwrap().clone()
}
