//! The HTTP API over a real lake written by `allot ingest`, driven with
//! `tower::ServiceExt::oneshot` (no socket): every route for every role, the
//! BOLA matrix of docs/reference.md#security-model with its audit lines, SQL through the API (the
//! sandbox escape corpus, tenant scope), rate limits and SQL slots per tenant,
//! the OpenAPI document against the router, metrics, and `allot serve` /
//! `allot token` as processes.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use allot_api::auth::{Claims, Role};
use allot_api::{ApiOptions, AppState, LakeLocation, route_table, router};
use allot_schemas::clock::FixedClock;
use allot_schemas::config::Config;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;
use tower::ServiceExt;

use common::ServeProcess;

const TENANTS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];
const SECRET: &str = "test-secret-for-the-api-tests-of-allot";
/// 2026-03-15T12:00:00Z, the server's "now" in these tests.
const NOW_MICROS: i64 = 1_773_576_000_000_000;

// Ed25519 keys made with `openssl genpkey -algorithm ed25519`, for these tests only.
const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOFzGfdrU1uN+CFywZuBSIr2i3a2sA+XOYynB7t3e8ls\n-----END PRIVATE KEY-----\n";
const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEASYigLIhxzS9il0QW5/ea19jdqCCPcVtUrBOoRkbJGUc=\n-----END PUBLIC KEY-----\n";
const ED_OTHER_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIIN2vRuw5kAdHk+27DD8pjR3sujpktHp8OEOD9vQ+Cn2\n-----END PRIVATE KEY-----\n";

fn allot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_allot"))
}

/// The lake, config files and keys shared by every test of this file.
struct Fixture {
    dir: tempfile::TempDir,
    lake: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = dir.path().join("lake");
        let mut rng = common::Lcg(7);
        let mut lines = String::new();
        for (month, days) in [(2, 1..=28), (3, 1..=15)] {
            for day in days {
                for (t, tenant) in TENANTS.iter().enumerate() {
                    for i in 0..(6 + t) {
                        lines.push_str(&common::synthetic_event(&mut rng, tenant, month, day, i));
                        lines.push('\n');
                    }
                }
            }
        }
        lines.push_str("{not json\n");
        let events = dir.path().join("events.jsonl");
        std::fs::write(&events, lines).expect("write events");
        common::ingest_into(&lake, &events);
        std::fs::write(
            dir.path().join("costs.csv"),
            "period,pool,amount,currency,driver\n2026-03,shared-compute,1000.00,USD,compute_seconds\n",
        )
        .expect("write costs");
        std::fs::write(dir.path().join("ed.pub.pem"), ED_PUBLIC).expect("write key");
        std::fs::write(dir.path().join("ed.pem"), ED_PRIVATE).expect("write key");
        Fixture { dir, lake }
    })
}

/// One test's server: its own audit log, the fixture's lake, a fixed clock.
struct Server {
    app: Router,
    audit: PathBuf,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn config_text(audit: &Path, api_extra: &str) -> String {
    let fixture = fixture();
    let root = fixture.dir.path();
    let price_book = common::FLAT_PRICE_BOOK;
    format!(
        r#"
{price_book}
[tenants.alpha]
quotas = {{ compute_seconds = "1000000" }}

[tenants.echo]
discount_percent = "5"

[api]
jwt_secret = "{SECRET}"
jwt_public_key = "{public}"
jwt_private_key = "{private}"
audit_log = "{audit}"
costs_file = "{costs}"
{anonymous}
{api_extra}
"#,
        // Most tests send many requests without a valid token on purpose.
        anonymous = if api_extra.contains("anonymous_rate_limit_per_s") {
            ""
        } else {
            "anonymous_rate_limit_per_s = 100000"
        },
        public = root.join("ed.pub.pem").display(),
        private = root.join("ed.pem").display(),
        audit = audit.display(),
        costs = root.join("costs.csv").display(),
    )
}

fn server_with(api_extra: &str) -> Server {
    let fixture = fixture();
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.jsonl");
    let text = config_text(&audit, api_extra);
    let config_path = dir.path().join("allot.toml");
    std::fs::write(&config_path, &text).expect("write config");
    let config = Config::from_toml_str(&text, "test", Vec::new()).expect("config");
    let lake = LakeLocation::parse(fixture.lake.to_str().unwrap()).expect("lake");
    let options = ApiOptions {
        clock: Arc::new(FixedClock::new(NOW_MICROS)),
        ..ApiOptions::new(config, lake)
    };
    let state = AppState::new(options).expect("state");
    Server {
        app: router(state),
        audit,
        config_path,
        _dir: dir,
    }
}

fn server() -> Server {
    server_with("rate_limit_per_s = 100000")
}

/// What a token says and how it is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Tenant,
    TenantEddsa,
    Finance,
    Admin,
    Expired,
    OtherKey,
    OtherEdKey,
    AlgNone,
    WrongAudience,
    NoToken,
}

const CALLERS: [Caller; 10] = [
    Caller::Tenant,
    Caller::TenantEddsa,
    Caller::Finance,
    Caller::Admin,
    Caller::Expired,
    Caller::OtherKey,
    Caller::OtherEdKey,
    Caller::AlgNone,
    Caller::WrongAudience,
    Caller::NoToken,
];

impl Caller {
    fn is_valid(self) -> bool {
        matches!(
            self,
            Caller::Tenant | Caller::TenantEddsa | Caller::Finance | Caller::Admin
        )
    }

    fn is_tenant(self) -> bool {
        matches!(self, Caller::Tenant | Caller::TenantEddsa)
    }
}

fn claims(role: Role, tenant: Option<&str>, exp_in_secs: i64) -> Claims {
    let now = NOW_MICROS / 1_000_000;
    Claims {
        sub: format!("test-{}", role.as_str()),
        role,
        tenant: tenant.map(str::to_string),
        iss: "allot".to_string(),
        aud: "allot".to_string(),
        iat: now,
        exp: now + exp_in_secs,
    }
}

fn sign_hs(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn sign_ed(claims: &Claims, pem: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        claims,
        &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn token(caller: Caller) -> Option<String> {
    let tenant = claims(Role::Tenant, Some("alpha"), 900);
    let admin = claims(Role::Admin, None, 900);
    Some(match caller {
        Caller::Tenant => sign_hs(&tenant, SECRET),
        Caller::TenantEddsa => sign_ed(&tenant, ED_PRIVATE),
        Caller::Finance => sign_hs(&claims(Role::Finance, None, 900), SECRET),
        Caller::Admin => sign_hs(&admin, SECRET),
        Caller::Expired => sign_hs(&claims(Role::Admin, None, -3600), SECRET),
        Caller::OtherKey => sign_hs(&admin, "another-secret"),
        Caller::OtherEdKey => sign_ed(&admin, ED_OTHER_PRIVATE),
        Caller::AlgNone => format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(&serde_json::to_vec(&admin).unwrap())
        ),
        Caller::WrongAudience => sign_hs(
            &Claims {
                aud: "someone-else".to_string(),
                ..admin
            },
            SECRET,
        ),
        Caller::NoToken => return None,
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    }
}

fn request(
    method: &str,
    uri: &str,
    token: Option<&str>,
    accept: Option<&str>,
    body: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(accept) = accept {
        builder = builder.header(header::ACCEPT, accept);
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

async fn get(app: &Router, uri: &str, caller: Caller) -> Answer {
    send(
        app,
        request("GET", uri, token(caller).as_deref(), None, None),
    )
    .await
}

async fn post_sql(app: &Router, sql: &str, caller: Caller) -> Answer {
    let body = serde_json::json!({ "sql": sql }).to_string();
    send(
        app,
        request(
            "POST",
            "/v1/sql",
            token(caller).as_deref(),
            None,
            Some(&body),
        ),
    )
    .await
}

/// The test lakes' own price book as a preview body: their rates and the
/// server's tenants.
fn own_price_book() -> String {
    let rates = common::FLAT_PRICE_BOOK.replace("currency = \"USD\"", "");
    format!(
        "{rates}\n[tenants.alpha]\nquotas = {{ compute_seconds = \"1000000\" }}\n\n[tenants.echo]\ndiscount_percent = \"5\"\n"
    )
}

async fn post_preview(app: &Router, query: &str, book: &str, caller: Caller) -> Answer {
    send(
        app,
        request(
            "POST",
            &format!("/v1/preview?{query}"),
            token(caller).as_deref(),
            None,
            Some(book),
        ),
    )
    .await
}

#[tokio::test]
async fn preview_prices_a_proposal_and_refuses_a_bad_one() {
    let server = server();
    // The own price book: every tenant's actual and proposed totals agree with
    // its invoice.
    let own = post_preview(
        &server.app,
        "month=2026-03",
        &own_price_book(),
        Caller::Finance,
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let rows = own.json()["rows"].as_array().unwrap().clone();
    assert!(!rows.is_empty());
    let billing = get(&server.app, "/v1/billing/2026-03", Caller::Finance)
        .await
        .json();
    for row in &rows {
        assert_eq!(row["difference"], "0.00", "{row}");
        let invoice = billing["invoices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["tenant_id"] == row["tenant_id"])
            .unwrap();
        assert_eq!(row["actual_total"], invoice["total"], "{row}");
    }
    // Compute at half price: every difference is negative or zero, as CSV too.
    let cheaper = own_price_book().replace("0.0400", "0.0200");
    let answer = send(
        &server.app,
        request(
            "POST",
            "/v1/preview?months=2026-03..2026-03&lines=true",
            token(Caller::Finance).as_deref(),
            Some("text/csv"),
            Some(&cheaper),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer
            .body
            .starts_with("tenant_id,period,item,actual_amount,proposed_amount,difference\n")
    );
    assert!(
        answer
            .body
            .lines()
            .any(|l| l.contains(",compute_seconds,") && l.contains(",-"))
    );
    // Refusals, each a 400 naming what is wrong.
    let bad = [
        ("month=2026-03", "[api]\nlisten = \"x\"".to_string(), "api"),
        ("month=2026-03", own_price_book().replace("0.0400", "-1"), "rates[0].unit_price"),
        ("month=2026-03", "[[rates]\n".to_string(), "(syntax)"),
        ("month=2026-13", own_price_book(), "2026-13"),
        ("months=2026-03", own_price_book(), "YYYY-MM..YYYY-MM"),
        ("", own_price_book(), "one month"),
        ("month=2026-03&colour=red", own_price_book(), "colour"),
        // A proposal leaving usage without a rate (storage) is the caller's to fix.
        (
            "month=2026-03",
            "[[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-01-01\"\nunit_price = \"0.04\"\n\
             [[rates]]\nmetric = \"egress_bytes\"\neffective_from = \"2026-01-01\"\nunit_price = \"0.09\"\n"
                .to_string(),
            "no rate",
        ),
    ];
    for (query, body, needle) in bad {
        let answer = post_preview(&server.app, query, &body, Caller::Finance).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            answer.body
        );
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(needle), "{query}: {message}");
    }
    // A body past the server's limit is refused before it is read.
    let huge = post_preview(
        &server.app,
        "month=2026-03",
        &"#".repeat(4 << 20),
        Caller::Finance,
    )
    .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", huge.body);
    // Nothing was written: the billing answer is the same.
    let again = get(&server.app, "/v1/billing/2026-03", Caller::Finance)
        .await
        .json();
    assert_eq!(again, billing);
}

fn audit_lines(server: &Server) -> Vec<Value> {
    std::fs::read_to_string(&server.audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// Values only bravo's data holds: its id, its event ids and the raw figures
/// of its usage series.
async fn bravo_fingerprints(server: &Server) -> Vec<String> {
    let usage = get(
        &server.app,
        "/v1/tenants/bravo/usage?from=2026-03-01&to=2026-03-16&bucket=1d",
        Caller::Admin,
    )
    .await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.body);
    let mut values: Vec<String> = usage.json()["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["raw"].as_str().unwrap().to_string())
        .filter(|raw| raw.len() >= 12)
        .collect();
    assert!(values.len() > 10, "bravo has usage: {}", usage.body);
    values.extend(["bravo".to_string(), "bravo-3-".to_string()]);
    values
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Own,
    Other,
    Missing,
}

fn tenant_of(target: Target) -> &'static str {
    match target {
        Target::Own => "alpha",
        Target::Other => "bravo",
        Target::Missing => "zulu",
    }
}

/// The expected status of a tenant route, and whether the answer is audited.
fn expect_tenant_route(caller: Caller, target: Target) -> (StatusCode, bool) {
    if !caller.is_valid() {
        return (StatusCode::UNAUTHORIZED, true);
    }
    match (caller.is_tenant(), target) {
        // A tenant token naming any id but its own is a denied attempt, audited
        // whether or not that tenant exists.
        (true, Target::Other | Target::Missing) => (StatusCode::NOT_FOUND, true),
        (false, Target::Missing) => (StatusCode::NOT_FOUND, false),
        _ => (StatusCode::OK, false),
    }
}

fn expect_all_tenant_route(caller: Caller) -> (StatusCode, bool) {
    match caller {
        c if !c.is_valid() => (StatusCode::UNAUTHORIZED, true),
        c if c.is_tenant() => (StatusCode::FORBIDDEN, true),
        _ => (StatusCode::OK, false),
    }
}

fn expect_sql(caller: Caller) -> (StatusCode, bool) {
    match caller {
        c if !c.is_valid() => (StatusCode::UNAUTHORIZED, true),
        Caller::Finance => (StatusCode::FORBIDDEN, true),
        _ => (StatusCode::OK, false),
    }
}

#[tokio::test]
async fn bola_matrix_every_route_target_and_caller() {
    let server = server();
    let fingerprints = bravo_fingerprints(&server).await;
    let tenant_routes = [
        "/v1/tenants/{t}/health",
        "/v1/tenants/{t}/usage?from=2026-03-10&to=2026-03-12",
        "/v1/tenants/{t}/invoices/2026-03",
    ];
    let all_tenant_routes = [
        "/v1/tenants",
        "/v1/billing/2026-03",
        "/v1/allocation/2026-03",
        "/v1/noisy-neighbors?from=2026-03-10&to=2026-03-11",
    ];
    let mut checked = 0;
    let mut audit_count = audit_lines(&server).len();
    let mut check = |answer: &Answer,
                     caller: Caller,
                     what: &str,
                     expected: (StatusCode, bool),
                     server: &Server| {
        assert_eq!(
            answer.status, expected.0,
            "{what} as {caller:?}: {}",
            answer.body
        );
        let lines = audit_lines(server);
        let added = lines.len() - audit_count;
        assert_eq!(
            added,
            usize::from(expected.1),
            "{what} as {caller:?}: audit lines"
        );
        if expected.1 {
            let line = lines.last().unwrap();
            assert_eq!(line["status"], expected.0.as_u16(), "{line}");
            assert!(line["path"].as_str().unwrap().starts_with("/v1/"), "{line}");
            for key in [
                "time", "sub", "role", "tenant", "method", "outcome", "reason",
            ] {
                assert!(line.get(key).is_some(), "{line} lacks {key}");
            }
        }
        audit_count = lines.len();
        if caller.is_tenant() || !caller.is_valid() {
            for value in &fingerprints {
                assert!(
                    !answer.body.contains(value.as_str()),
                    "{what} as {caller:?} leaks {value}: {}",
                    answer.body
                );
            }
        }
        if !answer.status.is_success() {
            let error = answer.json();
            assert!(
                error["error"]["code"].is_string() && error["error"]["message"].is_string(),
                "{}",
                answer.body
            );
        }
        checked += 1;
    };
    for caller in CALLERS {
        for route in tenant_routes {
            let mut not_found = Vec::new();
            for target in [Target::Own, Target::Other, Target::Missing] {
                let uri = route.replace("{t}", tenant_of(target));
                let answer = get(&server.app, &uri, caller).await;
                check(
                    &answer,
                    caller,
                    &uri,
                    expect_tenant_route(caller, target),
                    &server,
                );
                if answer.status == StatusCode::NOT_FOUND {
                    not_found.push(answer);
                }
            }
            // Another tenant's resource is byte for byte a missing tenant's.
            if let [other, missing] = not_found.as_slice() {
                assert_eq!(other.body, missing.body, "{route} as {caller:?}");
                assert_eq!(other.headers, missing.headers, "{route} as {caller:?}");
            }
        }
        for route in all_tenant_routes {
            let answer = get(&server.app, route, caller).await;
            check(
                &answer,
                caller,
                route,
                expect_all_tenant_route(caller),
                &server,
            );
        }
        let answer = post_sql(
            &server.app,
            "SELECT tenant_id, count(*) AS n FROM usage_events GROUP BY tenant_id ORDER BY tenant_id",
            caller,
        )
        .await;
        check(&answer, caller, "POST /v1/sql", expect_sql(caller), &server);
        let preview = post_preview(&server.app, "month=2026-03", &own_price_book(), caller).await;
        check(
            &preview,
            caller,
            "POST /v1/preview",
            expect_all_tenant_route(caller),
            &server,
        );
        if answer.status == StatusCode::OK {
            let tenants: Vec<&str> = answer.json()["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r[0].as_str().unwrap())
                .map(|t| TENANTS.iter().find(|k| **k == t).copied().unwrap())
                .collect();
            if caller.is_tenant() {
                assert_eq!(tenants, ["alpha"]);
            } else {
                assert_eq!(tenants, TENANTS);
            }
        }
    }
    assert_eq!(checked, CALLERS.len() * (3 * 3 + 4 + 2));
}

#[tokio::test]
async fn every_report_has_its_json_shape_and_its_csv() {
    let server = server();
    let app = &server.app;

    let tenants = get(app, "/v1/tenants", Caller::Finance).await.json();
    assert_eq!(tenants["as_of"], "2026-03-15T12:00:00Z");
    assert_eq!(tenants["currency"], "USD");
    let ids: Vec<&str> = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "bravo", "charlie", "delta", "echo"]);

    let health = get(app, "/v1/tenants/alpha/health", Caller::Tenant)
        .await
        .json();
    assert_eq!(health, tenants["tenants"][0]);
    for key in [
        "status",
        "reasons",
        "quota_use",
        "mtd_cost",
        "forecast",
        "currency",
    ] {
        assert!(health.get(key).is_some(), "health lacks {key}: {health}");
    }
    assert_eq!(health["quota_use"][0]["metric"], "compute_seconds");

    let usage = get(app, "/v1/tenants/alpha/usage", Caller::Tenant)
        .await
        .json();
    assert_eq!(usage["tenant_id"], "alpha");
    assert_eq!(usage["from"], "2026-03-14T12:00:00Z");
    assert_eq!(usage["to"], "2026-03-15T12:00:00Z");
    assert_eq!(usage["bucket"], "1h");
    let daily = get(
        app,
        "/v1/tenants/alpha/usage?from=2026-03-01&to=2026-03-16&bucket=1d&metric=compute_seconds",
        Caller::Tenant,
    )
    .await
    .json();
    let points = daily["points"].as_array().unwrap();
    assert!(!points.is_empty());
    assert!(
        points
            .iter()
            .all(|p| p["metric"] == "compute_seconds" && p["unit"] == "vCPU-hour")
    );

    let invoice = get(app, "/v1/tenants/alpha/invoices/2026-03", Caller::Tenant)
        .await
        .json();
    assert_eq!(invoice["tenant_id"], "alpha");
    assert_eq!(invoice["period"], "2026-03");
    assert!(!invoice["lines"].as_array().unwrap().is_empty());
    let empty = get(app, "/v1/tenants/echo/invoices/2026-03", Caller::Finance)
        .await
        .json();
    assert_eq!(empty["lines"], serde_json::json!([]));
    assert_eq!(empty["total"], "0.00");
    assert_eq!(empty["discount_percent"], "5");

    let billing = get(app, "/v1/billing/2026-03", Caller::Finance)
        .await
        .json();
    assert_eq!(billing["period"], "2026-03");
    assert_eq!(billing["currency"], "USD");
    assert_eq!(billing["invoices"].as_array().unwrap().len(), 4);
    assert_eq!(billing["invoices"][0], invoice);

    let allocation = get(app, "/v1/allocation/2026-03", Caller::Finance)
        .await
        .json();
    assert_eq!(allocation["period"], "2026-03");
    let cents: i64 = allocation["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["amount"]
                .as_str()
                .unwrap()
                .replace('.', "")
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        cents, 100_000,
        "the pool is split to the cent: {allocation}"
    );

    let noisy = get(
        app,
        "/v1/noisy-neighbors?from=2026-03-10&to=2026-03-11&all=true",
        Caller::Finance,
    )
    .await
    .json();
    let rows = noisy["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r.get("flagged").is_some() && r.get("z").is_some())
    );

    let sql = post_sql(app, "SELECT count(*) AS n FROM usage_events", Caller::Admin)
        .await
        .json();
    assert_eq!(sql["columns"], serde_json::json!(["n"]));

    // Accept: text/csv gives the CSV of the same report.
    let csv_headers = [
        (
            "/v1/tenants",
            "tenant_id,as_of,status,reasons,mtd_cost,forecast,quota_use",
        ),
        (
            "/v1/tenants/alpha/health",
            "tenant_id,as_of,status,reasons,mtd_cost,forecast,quota_use",
        ),
        (
            "/v1/tenants/alpha/usage",
            "metric,unit,bucket_start,raw,quantity",
        ),
        (
            "/v1/tenants/alpha/invoices/2026-03",
            "tenant_id,period,metric,unit,segment_start,segment_end,tier_from,tier_to,quantity,unit_price,amount,kind,adjusts,dimensions",
        ),
        (
            "/v1/billing/2026-03",
            "tenant_id,period,metric,unit,segment_start,segment_end,tier_from,tier_to,quantity,unit_price,amount,kind,adjusts,dimensions",
        ),
        (
            "/v1/allocation/2026-03",
            "period,pool,tenant_id,driver_quantity,share,amount",
        ),
        (
            "/v1/noisy-neighbors?from=2026-03-10&to=2026-03-11",
            "metric,bucket_start,tenant_id,usage,share,baseline_mean,baseline_stddev,z,active_tenants",
        ),
    ];
    for (uri, first_line) in csv_headers {
        let answer = send(
            app,
            request(
                "GET",
                uri,
                token(Caller::Admin).as_deref(),
                Some("text/csv"),
                None,
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.body);
        assert_eq!(
            answer.headers[header::CONTENT_TYPE],
            "text/csv; charset=utf-8"
        );
        assert_eq!(answer.body.lines().next(), Some(first_line), "{uri}");
    }
    let billing_csv = send(
        app,
        request(
            "GET",
            "/v1/billing/2026-03",
            token(Caller::Finance).as_deref(),
            Some("text/csv"),
            None,
        ),
    )
    .await
    .body;
    let total_rows: Vec<&str> = billing_csv
        .lines()
        .filter(|l| l.contains(",total,"))
        .collect();
    assert_eq!(total_rows.len(), 4);
    // The total row ends with the amount, then empty kind, adjusts and dimensions.
    assert!(total_rows[0].ends_with(&format!("{},,,", invoice["total"].as_str().unwrap())));
    let sql_csv = send(
        app,
        request(
            "POST",
            "/v1/sql",
            token(Caller::Admin).as_deref(),
            Some("text/csv"),
            Some(r#"{"sql": "SELECT 1 AS one"}"#),
        ),
    )
    .await;
    assert_eq!(sql_csv.body, "one\n1\n");
}

#[tokio::test]
async fn sql_escapes_are_refused_with_a_clean_400() {
    let plain = server();
    for common::SqlEscape { sql, limit, error } in common::SQL_ESCAPES {
        let limited;
        let server = match limit {
            None => &plain,
            Some((key, value)) => {
                limited = server_with(&format!("{key} = {value}"));
                &limited
            }
        };
        let answer = post_sql(&server.app, sql, Caller::Tenant).await;
        // A time limit is 408, a result over its cap 413, any other refusal 400.
        let status = match *error {
            "time limit" => StatusCode::REQUEST_TIMEOUT,
            e if e.starts_with("more than") => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        assert_eq!(answer.status, status, "{sql}: {}", answer.body);
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(error), "{sql}: {message}");
        assert!(!message.contains('\n'), "{sql}: {message}");
        for leak in ["/tmp", "/etc", "bravo", "usage_events/", ".parquet"] {
            assert!(
                !answer.body.contains(leak),
                "{sql}: error leaks {leak}: {}",
                answer.body
            );
        }
    }

    // A tenant's SELECT * sees its own rows only; admin sees everyone's.
    let rows = post_sql(&plain.app, "SELECT * FROM usage_events", Caller::Tenant)
        .await
        .json();
    let columns = rows["columns"].as_array().unwrap();
    let tenant_col = columns.iter().position(|c| c == "tenant_id").unwrap();
    let rows = rows["rows"].as_array().unwrap();
    assert_eq!(rows.len(), (28 + 15) * 6);
    assert!(rows.iter().all(|r| r[tenant_col] == "alpha"));
    let everyone = post_sql(
        &plain.app,
        "SELECT count(*) FROM usage_events",
        Caller::Admin,
    )
    .await
    .json();
    assert_eq!(
        everyone["rows"][0][0],
        ((28 + 15) * (6 + 7 + 8 + 9)).to_string()
    );
    let rejected = post_sql(
        &plain.app,
        "SELECT reason FROM rejected_events",
        Caller::Admin,
    )
    .await
    .json();
    assert_eq!(rejected["rows"], serde_json::json!([["invalid_json"]]));
    assert_eq!(
        post_sql(&plain.app, "SELECT 1", Caller::Finance)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_hammering_tenant_is_limited_while_another_is_served() {
    let server = server_with("rate_limit_per_s = 5");
    let alpha = token(Caller::Tenant).unwrap();
    let bravo = sign_hs(&claims(Role::Tenant, Some("bravo"), 900), SECRET);
    let hammer = (0..40).map(|_| {
        send(
            &server.app,
            request(
                "GET",
                "/v1/tenants/alpha/invoices/2026-03",
                Some(&alpha),
                None,
                None,
            ),
        )
    });
    let answers = futures::future::join_all(hammer).await;
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let served = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    assert!(
        limited.len() >= 30,
        "{} limited, {served} served",
        limited.len()
    );
    assert!(served >= 5);
    for answer in &limited {
        let retry: u64 = answer.headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
        assert_eq!(answer.json()["error"]["code"], "rate_limited");
    }
    // bravo's own bucket is full: every one of its requests is served, promptly.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let answer = send(
            &server.app,
            request("GET", "/v1/tenants/bravo/health", Some(&bravo), None, None),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Rate limiting is not a denial: nothing was audited.
    assert!(audit_lines(&server).is_empty());
}

/// `GET path` without a token, as if from `peer`.
async fn anonymous_from(app: &Router, path: &str, peer: [u8; 4]) -> Answer {
    let mut request = request("GET", path, None, None, None);
    let address = std::net::SocketAddr::from((peer, 40_000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(address));
    send(app, request).await
}

/// Requests without a valid token are limited per source address before they
/// are audited, and an audited path is cut: 2,000 requests with 30 KB paths
/// add a handful of short lines to the audit log, not 60 MB.
#[tokio::test]
async fn anonymous_requests_cannot_flood_the_audit_log() {
    let server = server_with("rate_limit_per_s = 100000\nanonymous_rate_limit_per_s = 5");
    let long = format!("/v1/tenants/{}/health", "a".repeat(30_000));
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        statuses.push(
            anonymous_from(&server.app, &long, [10, 0, 0, 1])
                .await
                .status,
        );
    }
    let denied = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // The bucket's 5, and 5 more each second the loop took.
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=6 + refilled).contains(&denied),
        "{denied} answered 401"
    );
    assert_eq!(denied + limited, 2_000);
    let lines = audit_lines(&server);
    assert_eq!(lines.len(), denied, "only the 401s are audited");
    for line in &lines {
        let path = line["path"].as_str().unwrap();
        assert!(path.len() <= 512 && long.starts_with(path), "{path}");
        assert_eq!(line["path_truncated"], true);
    }
    let size = std::fs::metadata(&server.audit).unwrap().len();
    assert!(
        size <= denied as u64 * 1024,
        "the audit log grew by {size} bytes"
    );

    // Another address has its own bucket; a valid token is not limited by it.
    let other = anonymous_from(&server.app, "/v1/tenants", [10, 0, 0, 2]).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let mut request = request(
        "GET",
        "/v1/tenants/alpha/health",
        token(Caller::Tenant).as_deref(),
        None,
        None,
    );
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [10, 0, 0, 1],
            40_001,
        ))));
    assert_eq!(send(&server.app, request).await.status, StatusCode::OK);
}

/// `/metrics` names every tenant, so `api.metrics_token` closes it to anyone
/// without that token.
#[tokio::test]
async fn metrics_take_the_metrics_token_when_one_is_set() {
    let metrics_token = "a-metrics-token-of-at-least-32-bytes";
    let server = server_with(&format!(
        "rate_limit_per_s = 100000\nmetrics_token = \"{metrics_token}\""
    ));
    let scrape =
        |token: Option<&str>| send(&server.app, request("GET", "/metrics", token, None, None));
    assert_eq!(scrape(None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(Some("a-metrics-token-of-at-least-32-byteS"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let finance = token(Caller::Finance).unwrap();
    assert_eq!(
        scrape(Some(&finance)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let answer = scrape(Some(metrics_token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let audited: Vec<String> = audit_lines(&server)
        .iter()
        .map(|line| line["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(audited, ["/metrics"; 3]);
    // Without a token configured, /metrics stays open (for a private network).
    assert_eq!(
        get(&self::server().app, "/metrics", Caller::NoToken)
            .await
            .status,
        StatusCode::OK
    );
}

/// Every instant a report derives from a bucket is checked: a bucket too wide
/// for the supported range is a 400 naming the problem, never a 500.
#[tokio::test]
async fn buckets_too_wide_for_the_supported_range_are_a_400() {
    let server = server();
    for path in [
        "/v1/tenants/alpha/usage?bucket=100000000d",
        "/v1/tenants/alpha/usage?bucket=367d",
        "/v1/noisy-neighbors?bucket=100000000d",
        "/v1/noisy-neighbors?bucket=99999999999d",
    ] {
        let answer = get(&server.app, path, Caller::Finance).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            answer.body
        );
        let message = answer.json()["error"]["message"].to_string();
        assert!(
            message.contains("366d") || message.contains("supported range"),
            "{path}: {message}"
        );
    }
    let answer = get(
        &server.app,
        "/v1/noisy-neighbors?bucket=1d&from=1970-01-01&to=1970-01-03",
        Caller::Finance,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

/// `allot noisy` and `GET /v1/noisy-neighbors` build their request the same
/// way: without a bucket both use `noisy.bucket` (an hour here), and a bad
/// value is refused with the same message, a usage error and a 400.
#[tokio::test]
async fn the_cli_and_the_api_share_noisy_defaults_and_refusals() {
    let server = server();
    let noisy_cli = |extra: &[&str]| {
        allot()
            .args(["noisy", "--from", "2026-03-10", "--to", "2026-03-11"])
            .args(extra)
            .args(["--all", "--format", "json", "--lake"])
            .arg(&fixture().lake)
            .arg("--config")
            .arg(&server.config_path)
            .output()
            .expect("run allot noisy")
    };
    let output = noisy_cli(&[]);
    assert!(output.status.success(), "{output:?}");
    let cli: Value = serde_json::from_slice(&output.stdout).expect("JSON rows");
    let api = get(
        &server.app,
        "/v1/noisy-neighbors?from=2026-03-10&to=2026-03-11&all=true",
        Caller::Finance,
    )
    .await
    .json();
    assert_eq!(cli, api["rows"]);
    let buckets: BTreeSet<&str> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["bucket_start"].as_str().unwrap())
        .collect();
    // Only buckets with usage have rows: several of the day, on whole hours.
    assert!(
        buckets.len() > 1 && buckets.iter().all(|b| b.ends_with(":00:00Z")),
        "hourly buckets: {buckets:?}"
    );

    let output = noisy_cli(&["--bucket", "367d"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let api = get(
        &server.app,
        "/v1/noisy-neighbors?from=2026-03-10&to=2026-03-11&all=true&bucket=367d",
        Caller::Finance,
    )
    .await;
    assert_eq!(api.status, StatusCode::BAD_REQUEST, "{}", api.body);
    let message = api.json()["error"]["message"].as_str().unwrap().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.trim_end().ends_with(&message),
        "{stderr} vs {message}"
    );
}

#[tokio::test]
async fn sql_slots_are_per_tenant() {
    let server = server_with("rate_limit_per_s = 1000\nsql_concurrency = 1\nsql_timeout = \"3s\"");
    let slow = "SELECT count(*) FROM usage_events a, usage_events b, usage_events c, usage_events d, usage_events e";
    let app = server.app.clone();
    let first = tokio::spawn(async move { post_sql(&app, slow, Caller::Tenant).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = post_sql(&server.app, "SELECT 1", Caller::Tenant).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.body
    );
    assert_eq!(second.json()["error"]["code"], "sql_busy");
    assert!(second.headers.contains_key(header::RETRY_AFTER));
    // Another caller's slot is free meanwhile.
    let admin = post_sql(&server.app, "SELECT 1", Caller::Admin).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::REQUEST_TIMEOUT, "{}", first.body);
    assert_eq!(first.json()["error"]["code"], "sql_timeout");
    assert!(first.body.contains("time limit"));
    assert_eq!(
        post_sql(&server.app, "SELECT 1", Caller::Tenant)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes_of_the_router() {
    let server = server();
    let answer = get(&server.app, "/v1/openapi.json", Caller::NoToken).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, routed);
    // Every route of the table is really routed (not the fallback's 404).
    for (method, path) in routed {
        let uri = path.replace("{id}", "alpha").replace("{month}", "2026-03");
        let body = (method == "POST").then_some(r#"{"sql": "SELECT 1"}"#);
        let answer = send(
            &server.app,
            request(&method, &uri, token(Caller::Admin).as_deref(), None, body),
        )
        .await;
        assert_ne!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            answer.body
        );
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
    }
    // Every $ref resolves.
    let text = answer.body;
    for reference in text.split("\"$ref\": \"#/").skip(1) {
        let pointer = format!("/{}", reference.split('"').next().unwrap());
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let server = server();
    get(&server.app, "/v1/tenants/alpha/health", Caller::Tenant).await;
    get(&server.app, "/v1/tenants/charlie/health", Caller::Finance).await;
    get(&server.app, "/healthz", Caller::NoToken).await;
    let answer = get(&server.app, "/metrics", Caller::NoToken).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = answer.body;
    assert!(text.contains("allot_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/v1/tenants/{id}/health\""), "{text}");
    assert!(
        text.contains("allot_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("allot_http")) {
        assert!(
            !line.contains("alpha") && !line.contains("charlie"),
            "raw path in a label: {line}"
        );
    }
}

#[tokio::test]
async fn probes_dashboards_and_error_shapes() {
    let server = server();
    let app = &server.app;
    assert_eq!(
        get(app, "/healthz", Caller::NoToken).await.json()["status"],
        "ok"
    );
    assert_eq!(
        get(app, "/readyz", Caller::NoToken).await.json()["status"],
        "ready"
    );

    let index = get(app, "/", Caller::NoToken).await;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(
        index.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(
        index.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert!(index.body.contains("<html"));
    for file in allot_api::routes::web::embedded_files() {
        let answer = get(app, &format!("/{file}"), Caller::NoToken).await;
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert!(!answer.headers[header::CONTENT_TYPE].is_empty());
    }

    let error_cases = [
        (
            request("GET", "/nowhere", None, None, None),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            request(
                "DELETE",
                "/v1/tenants",
                token(Caller::Admin).as_deref(),
                None,
                None,
            ),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            request(
                "POST",
                "/v1/sql",
                token(Caller::Admin).as_deref(),
                None,
                Some("{not json"),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            request(
                "POST",
                "/v1/sql",
                token(Caller::Admin).as_deref(),
                None,
                Some(r#"{"sql": "SELECT 1", "x": 1}"#),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            request(
                "POST",
                "/v1/sql",
                token(Caller::Admin).as_deref(),
                None,
                Some(&format!("{{\"sql\": \"{}\"}}", "x".repeat(100_000))),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            request(
                "GET",
                "/v1/billing/2026-13",
                token(Caller::Finance).as_deref(),
                None,
                None,
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            request(
                "GET",
                "/v1/tenants/alpha/usage?bucket=soon",
                token(Caller::Tenant).as_deref(),
                None,
                None,
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            request(
                "GET",
                "/v1/tenants/alpha/usage?colour=red",
                token(Caller::Tenant).as_deref(),
                None,
                None,
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            request(
                "GET",
                "/v1/noisy-neighbors?metric=storage_bytes",
                token(Caller::Finance).as_deref(),
                None,
                None,
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (request, status, code) in error_cases {
        let what = format!("{} {}", request.method(), request.uri());
        let answer = send(app, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_eq!(
            answer.json()["error"]["code"],
            code,
            "{what}: {}",
            answer.body
        );
    }
    let unauthorized = get(app, "/v1/tenants", Caller::NoToken).await;
    assert_eq!(unauthorized.headers[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn a_lake_that_cannot_be_read_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = Config::from_toml_str(&config_text(&audit, ""), "test", Vec::new()).unwrap();
    let lake = LakeLocation::parse(dir.path().join("empty").to_str().unwrap()).unwrap();
    let app = router(AppState::new(ApiOptions::new(config, lake)).unwrap());
    let answer = get(&app, "/readyz", Caller::NoToken).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["error"]["code"], "not_ready");
    assert!(!answer.body.contains(dir.path().to_str().unwrap()));
}

#[tokio::test]
async fn allot_token_mints_what_the_server_accepts() {
    let server = server();
    let mint = |args: &[&str]| {
        allot()
            .arg("token")
            .args(args)
            .arg("--config")
            .arg(&server.config_path)
            .output()
            .expect("run allot token")
    };
    // The configured private key signs EdDSA; the server verifies it. Its
    // clock is fixed in March 2026, so check the token's shape only here and
    // verify a token against a real-time server below.
    let output = mint(&["--role", "tenant", "--tenant", "alpha", "--ttl", "15m"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let header = jsonwebtoken::decode_header(stdout.trim()).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);

    let config =
        Config::from_toml_str(&config_text(&server.audit, ""), "test", Vec::new()).unwrap();
    let lake = LakeLocation::parse(fixture().lake.to_str().unwrap()).unwrap();
    let live = router(AppState::new(ApiOptions::new(config, lake)).unwrap());
    let answer = send(
        &live,
        request(
            "GET",
            "/v1/tenants/alpha/invoices/2026-03",
            Some(stdout.trim()),
            None,
            None,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = send(
        &live,
        request("GET", "/v1/tenants", Some(stdout.trim()), None, None),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    for bad in [
        &["--role", "tenant", "--ttl", "15m"][..],
        &["--role", "boss"],
        &["--role", "finance", "--ttl", "2h"],
        &["--role", "finance", "--ttl", "soon"],
        &["--role", "tenant", "--tenant", "../etc"],
    ] {
        let output = mint(bad);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{bad:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .lines()
                .count(),
            1,
            "{bad:?}: {output:?}"
        );
    }
}

/// A connection that sent half a request's headers and nothing more.
fn half_sent_request(address: &str) -> std::net::TcpStream {
    use std::io::Write;

    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
        .unwrap();
    stream
}

#[test]
fn allot_serve_answers_and_stops_on_sigterm() {
    use std::io::Write;

    let server = server();
    let mut serve = ServeProcess::start(&server.config_path, Some(&fixture().lake));
    let (status, body) = serve.request("GET /healthz", "", "");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    // A half-sent request (the header read timeout is 10 s by default) and an
    // idle kept-alive connection do not hold the stopping server.
    let _half = half_sent_request(serve.address());
    let mut idle = std::net::TcpStream::connect(serve.address()).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let status = serve.terminate(Duration::from_secs(3));
    assert!(status.success(), "{status:?}");
    // Stopping while the lake is still loading is clean too.
    let log = serve.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A connection that does not finish its request's headers within
/// `api.header_read_timeout` is closed; the server answers others meanwhile.
#[test]
fn a_half_sent_request_is_closed_after_the_header_read_timeout() {
    use std::io::Read;

    let server = server_with("rate_limit_per_s = 100000\nheader_read_timeout = \"1s\"");
    let serve = ServeProcess::start(&server.config_path, Some(&fixture().lake));
    let started = std::time::Instant::now();
    let mut half = half_sent_request(serve.address());
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let closed = half.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        closed.is_ok() || waited < Duration::from_secs(10),
        "the connection was not closed: {closed:?}"
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "closed after {waited:?}"
    );
    // The server still answers.
    assert_eq!(serve.request("GET /healthz", "", "").0, 200);
}

/// Query parameters the API reads, and values a client might send: well formed,
/// out of range, and malformed ones (already percent-encoded).
const FUZZ_KEYS: &[&str] = &[
    "from", "to", "bucket", "metric", "as_of", "live", "revision", "all", "tenant", "x",
];
const FUZZ_VALUES: &[&str] = &[
    "",
    "2026-03-01",
    "2026-03-02T12:00:00Z",
    "2026-02-01",
    "1970-01-01",
    "9999-12-31",
    "-2026-01-01",
    "2026-13-45",
    "1ms",
    "1m",
    "1h",
    "1d",
    "0s",
    "-1h",
    "99999999999d",
    "100000000d",
    "366d",
    "compute_seconds",
    "storage_bytes",
    "nope",
    "true",
    "false",
    "0",
    "-1",
    "18446744073709551616",
    "%00",
    "%F0%9F%92%A5",
    "a%20b",
];
const FUZZ_PATHS: &[&str] = &[
    "/v1/noisy-neighbors",
    "/v1/tenants/alpha/health",
    "/v1/tenants/alpha/usage",
    "/v1/tenants/alpha/invoices/2026-03",
    "/v1/billing/2026-03",
    "/v1/margin/2026-03",
    "/v1/tenants",
];

proptest::proptest! {
    // A fixed seed, so that CI runs the same requests every time.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261130),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// No query string makes the server fail: each answer is a success or a 4xx
    /// naming what is wrong, never a 500 or a panic.
    #[test]
    fn no_query_string_makes_the_server_fail(
        path in proptest::sample::select(FUZZ_PATHS),
        params in proptest::collection::vec(
            (proptest::sample::select(FUZZ_KEYS), proptest::sample::select(FUZZ_VALUES)),
            0..4,
        ),
    ) {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        static SERVER: OnceLock<Server> = OnceLock::new();
        let runtime = RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().unwrap());
        let server = SERVER.get_or_init(|| {
            let _in_runtime = runtime.enter();
            server()
        });
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let uri = format!("{path}?{}", query.join("&"));
        let answer = runtime.block_on(get(&server.app, &uri, Caller::Finance));
        proptest::prop_assert!(
            answer.status.is_success() || answer.status.is_client_error(),
            "{uri}: {} {}",
            answer.status,
            answer.body
        );
    }
}

/// The error code and message of an answer.
fn error_of(answer: &Answer) -> (String, String) {
    let body = answer.json();
    (
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn sql_bombs_get_a_clean_answer_and_the_server_stays_up() {
    // A body large enough for the longest statements, so the SQL check answers.
    let server = server_with("max_body = \"1MiB\"\nrate_limit_per_s = 1000");
    let deep = |n: usize| format!("SELECT {}1", "1+".repeat(n));
    let wide = |n: usize| format!("SELECT {}value FROM usage_events", "value+".repeat(n));
    let nested = |n: usize| format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n));
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (deep(1_800), StatusCode::BAD_REQUEST, "sql_rejected"),
        (deep(20_000), StatusCode::BAD_REQUEST, "sql_rejected"),
        (deep(200_000), StatusCode::BAD_REQUEST, "sql_rejected"),
        (wide(2_000), StatusCode::BAD_REQUEST, "sql_rejected"),
        (nested(20_000), StatusCode::BAD_REQUEST, "sql_rejected"),
        (
            "SELECT length(repeat('x',1500000000))".into(),
            StatusCode::BAD_REQUEST,
            "sql_limit",
        ),
        (
            "SELECT cardinality(range(0,300000000))".into(),
            StatusCode::BAD_REQUEST,
            "sql_limit",
        ),
        (
            "SELECT repeat('x',50000) r FROM usage_events a, usage_events b LIMIT 20000".into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "sql_result_too_large",
        ),
    ];
    for (sql, status, code) in cases {
        let started = std::time::Instant::now();
        let answer = post_sql(&server.app, &sql, Caller::Tenant).await;
        let head = &sql[..sql.len().min(60)];
        assert_eq!(
            answer.status,
            status,
            "{head}: {}",
            &answer.body[..answer.body.len().min(300)]
        );
        let (answer_code, message) = error_of(&answer);
        assert_eq!(answer_code, code, "{head}: {message}");
        assert!(
            !message.contains('\n') && message.len() < 300,
            "{head}: {message}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{head}");
    }
    // Still serving, SQL included.
    assert_eq!(
        get(&server.app, "/healthz", Caller::NoToken).await.status,
        StatusCode::OK
    );
    let one = post_sql(&server.app, "SELECT 1 + 1 AS two", Caller::Tenant).await;
    assert_eq!(one.json()["rows"], serde_json::json!([["2"]]));
}

#[tokio::test]
async fn heavy_sql_runs_apart_from_the_routes_and_stops_at_its_time_limit() {
    // This test's runtime has one thread: had SQL run on it, /healthz would
    // wait for the queries.
    let server = server_with("rate_limit_per_s = 1000\nsql_timeout = \"3s\"");
    let endless = "SELECT count(*) FROM (SELECT unnest(range(0, 1000000)) AS a) x \
                   CROSS JOIN (SELECT unnest(range(0, 1000000)) AS b) y";
    let started = std::time::Instant::now();
    let queries: Vec<_> = [Caller::Tenant, Caller::Admin]
        .into_iter()
        .map(|caller| {
            let app = server.app.clone();
            tokio::spawn(async move { post_sql(&app, endless, caller).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(2_500) {
        let asked = std::time::Instant::now();
        let health = get(&server.app, "/healthz", Caller::NoToken).await;
        assert_eq!(health.status, StatusCode::OK);
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?}"
    );
    for query in queries {
        let answer = query.await.unwrap();
        assert_eq!(
            answer.status,
            StatusCode::REQUEST_TIMEOUT,
            "{}",
            answer.body
        );
        assert_eq!(error_of(&answer).0, "sql_timeout");
    }
    // The time limit ended both queries' work: the next one answers at once.
    assert!(started.elapsed() < Duration::from_secs(5));
    let asked = std::time::Instant::now();
    let one = post_sql(&server.app, "SELECT 1", Caller::Tenant).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert!(asked.elapsed() < Duration::from_secs(1));
}

#[test]
fn allot_sql_refuses_a_deep_expression_instead_of_crashing() {
    let lake = &fixture().lake;
    // 60,000 terms: about the longest argument a command line takes.
    for terms in [20_000, 60_000] {
        let sql = format!("SELECT {}1", "1+".repeat(terms));
        let output = allot()
            .args(["sql", &sql, "--lake"])
            .arg(lake)
            .output()
            .expect("run allot sql");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{terms}: {stderr}");
        assert!(stderr.contains("nests more than"), "{terms}: {stderr}");
    }
}
