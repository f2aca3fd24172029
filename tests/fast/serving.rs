//! `allot serve` as docs/reference.md#serving has it: the lake held in memory and
//! followed commit by commit, reports cached by what they read, identical requests
//! computed once.
//! Each test runs its own server process on its own lake (so that its metrics are
//! its own) and holds every answer to a fresh `allot` CLI run on the same lake.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{CliLake, Lcg, ServeProcess};

const SECRET: &str = "a test secret that is long enough for HS256";
const MONTH: &str = "2026-05";
const TENANTS: [&str; 3] = ["t1", "t2", "t3"];
/// The refresh interval of these tests' servers.
const REFRESH: Duration = Duration::from_millis(200);
/// How long after a commit its figures must show: the refresh interval, plus
/// room for a refresh and a request on a machine busy with other tests.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// A new lake whose configuration is `price_book` and the server's keys.
fn new_lake(price_book: &str) -> CliLake {
    new_lake_with(price_book, "")
}

/// A new lake whose configuration is `price_book`, the server's keys and the
/// further `[api]` lines `api`.
fn new_lake_with(price_book: &str, api: &str) -> CliLake {
    let lake = CliLake::new("");
    write_config(&lake, price_book, api);
    lake
}

/// Rewrites `lake`'s configuration with `price_book`.
fn set_price_book(lake: &CliLake, price_book: &str) {
    write_config(lake, price_book, "");
}

/// Writes `lake`'s configuration: `price_book`, the server's keys and `api`.
fn write_config(lake: &CliLake, price_book: &str, api: &str) {
    let audit = lake.dir.path().join("audit.jsonl");
    let config = format!(
        "{price_book}\n[api]\njwt_secret = \"{SECRET}\"\naudit_log = \"{}\"\n\
         rate_limit_per_s = 100000\nrefresh_interval = \"{}ms\"\n{api}",
        audit.display(),
        REFRESH.as_millis()
    );
    std::fs::write(lake.config(), config).unwrap();
}

/// `allot serve` on `lake` with a finance token, killed when dropped.
struct Server {
    process: ServeProcess,
    token: String,
}

impl Server {
    /// Starts the server and waits until it is ready.
    fn start(lake: &CliLake) -> Server {
        let process = ServeProcess::start(&lake.config(), Some(&lake.root()));
        process.wait_ready(Duration::from_secs(30));
        let token = process.token("finance", None);
        Server { process, token }
    }

    /// `GET path` as CSV with the finance token: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        self.request(&format!("GET {path}"), &self.token, "")
    }

    /// `POST /v1/sql` of `sql` with `token`, answered as JSON: status and body.
    fn sql(&self, token: &str, sql: &str) -> (u16, String) {
        let body = serde_json::json!({ "sql": sql }).to_string();
        self.request("POST /v1/sql", token, &body)
    }

    /// `method_and_path` with `token` and `body`: status and body.
    fn request(&self, method_and_path: &str, token: &str, body: &str) -> (u16, String) {
        self.process.request(method_and_path, token, body)
    }

    /// The body of a 200 answer to `GET path`.
    fn ok(&self, path: &str) -> String {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The value of the counter `name{report="report"}` (0 when absent).
    fn counter(&self, name: &str, report: &str) -> u64 {
        let (_, text) = self.get("/metrics");
        let series = format!("{name}{{report=\"{report}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |value| value.trim().parse().expect("a counter value"))
    }
}

/// `allot ARGS` on `lake`: its standard output, which must be a success.
fn cli(lake: &CliLake, args: &[&str]) -> String {
    let output = lake.run(args);
    assert!(
        output.status.success(),
        "allot {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The views this test compares, as (server path, CLI arguments).
fn views() -> Vec<(String, Vec<String>)> {
    let mut views = vec![(
        format!("/v1/billing/{MONTH}"),
        vec![
            "invoice".to_string(),
            "--month".to_string(),
            MONTH.to_string(),
        ],
    )];
    for tenant in TENANTS {
        views.push((
            format!("/v1/tenants/{tenant}/invoices/{MONTH}"),
            ["invoice", "--month", MONTH, "--tenant", tenant]
                .map(str::to_string)
                .to_vec(),
        ));
    }
    views
}

/// Every view of the server equals the CLI's on the same lake, within
/// [`VISIBLE_WITHIN`] of the last commit.
fn assert_server_matches_cli(server: &Server, lake: &CliLake, after: &str) {
    for (path, args) in views() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let expected = cli(lake, &args);
        let deadline = Instant::now() + VISIBLE_WITHIN;
        loop {
            let answer = server.ok(&path);
            if answer == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} after {after} still differs from the CLI:\n{answer}\nvs\n{expected}"
            );
            std::thread::sleep(REFRESH / 4);
        }
    }
}

/// A batch of events of `tenants` in May, `count` each, some repeating ids of
/// earlier batches (a producer's retries), written to a file.
fn batch(dir: &Path, name: &str, rng: &mut Lcg, tenants: &[&str], count: usize) -> String {
    let mut text = String::new();
    for tenant in tenants {
        for _ in 0..count {
            let day = rng.next() % 20 + 1;
            // Ids repeat across batches: about one in four is a re-send.
            let i = rng.next() % (count as u64 * 3);
            text.push_str(&common::synthetic_event(
                rng, tenant, 5, day as u32, i as usize,
            ));
            text.push('\n');
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The cache never serves a stale figure: for random sequences of commits
/// (backfills touching random tenants, compactions with their rollups), every
/// answer of a running server equals the CLI's on the same lake; a commit
/// touching one tenant leaves another tenant's cached invoice in place; a new
/// price book (a restart) changes the figures.
#[test]
fn a_running_server_answers_as_the_cli_after_every_commit() {
    for seed in [1, 2, 3] {
        let mut rng = Lcg(seed);
        let lake = new_lake(common::FLAT_PRICE_BOOK);
        let inputs = tempfile::tempdir().unwrap();
        let first = batch(inputs.path(), "0.jsonl", &mut rng, &TENANTS, 30);
        cli(&lake, &["ingest", "--no-progress", "--from-file", &first]);
        let server = Server::start(&lake);
        assert_server_matches_cli(&server, &lake, "the first load");

        for step in 1..=4 {
            let commit = if rng.next().is_multiple_of(3) {
                cli(&lake, &["compact"]);
                "a compaction".to_string()
            } else {
                let touched: Vec<&str> = TENANTS
                    .iter()
                    .copied()
                    .filter(|_| rng.next().is_multiple_of(2))
                    .collect();
                let touched = if touched.is_empty() {
                    vec!["t1"]
                } else {
                    touched
                };
                let file = batch(
                    inputs.path(),
                    &format!("{step}.jsonl"),
                    &mut rng,
                    &touched,
                    10,
                );
                cli(&lake, &["ingest", "--no-progress", "--from-file", &file]);
                format!("a backfill of {touched:?}")
            };
            assert_server_matches_cli(&server, &lake, &format!("seed {seed}, {commit}"));
        }

        // A commit of t1 alone leaves t2's cached invoice in place.
        let t2 = format!("/v1/tenants/t2/invoices/{MONTH}");
        server.ok(&t2);
        let file = batch(inputs.path(), "t1.jsonl", &mut rng, &["t1"], 5);
        cli(&lake, &["ingest", "--no-progress", "--from-file", &file]);
        let t1 = ["invoice", "--month", MONTH, "--tenant", "t1"];
        let expected = cli(&lake, &t1);
        let deadline = Instant::now() + VISIBLE_WITHIN;
        while server.ok(&format!("/v1/tenants/t1/invoices/{MONTH}")) != expected {
            assert!(Instant::now() < deadline, "t1's new events did not show");
            std::thread::sleep(REFRESH / 4);
        }
        let computed = server.counter("allot_report_computations_total", "tenant_invoice");
        server.ok(&t2);
        assert_eq!(
            server.counter("allot_report_computations_total", "tenant_invoice"),
            computed,
            "t2's invoice was computed again after a commit of t1 alone"
        );
        drop(server);

        // A new price book takes a restart, and changes the figures.
        let before = server_figures(&lake);
        let dearer = common::FLAT_PRICE_BOOK.replace("\"0.0400\"", "\"0.0500\"");
        assert_ne!(dearer, common::FLAT_PRICE_BOOK);
        set_price_book(&lake, &dearer);
        let server = Server::start(&lake);
        assert_server_matches_cli(&server, &lake, "a new price book");
        assert_ne!(server_figures(&lake), before);
    }
}

/// The all-tenant invoices of the month, from the CLI.
fn server_figures(lake: &CliLake) -> String {
    cli(lake, &["invoice", "--month", MONTH])
}

/// 64 identical requests at once for a report nobody asked for yet run it once.
#[test]
fn sixty_four_identical_requests_compute_once() {
    let mut rng = Lcg(9);
    let lake = new_lake(common::FLAT_PRICE_BOOK);
    let inputs = tempfile::tempdir().unwrap();
    let events = batch(inputs.path(), "events.jsonl", &mut rng, &TENANTS, 200);
    cli(&lake, &["ingest", "--no-progress", "--from-file", &events]);
    let server = Arc::new(Server::start(&lake));
    let path = "/v1/tenants/t2/health?as_of=2026-05-20T06:00:00Z";
    assert_eq!(
        server.counter("allot_report_computations_total", "tenant_health"),
        0
    );
    let start = Arc::new(Barrier::new(64));
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let (server, start) = (Arc::clone(&server), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                server.ok(path)
            })
        })
        .collect();
    let answers: Vec<String> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(answers.iter().all(|answer| answer == &answers[0]));
    assert!(answers[0].contains("t2"), "{}", answers[0]);
    assert_eq!(
        server.counter("allot_report_computations_total", "tenant_health"),
        1
    );
    assert_eq!(
        server.counter("allot_report_cache_hits_total", "tenant_health"),
        63
    );
}

/// A tenant token choosing its own `as_of` gets its own tenant's health
/// computed, never every tenant's: 40 distinct instants are no all-tenant
/// computation, and each answer is that tenant's row of the finance view.
#[test]
fn a_tenant_choosing_as_of_computes_only_its_own_health() {
    let mut rng = Lcg(11);
    let lake = new_lake(common::FLAT_PRICE_BOOK);
    let inputs = tempfile::tempdir().unwrap();
    let events = batch(inputs.path(), "events.jsonl", &mut rng, &TENANTS, 50);
    cli(&lake, &["ingest", "--no-progress", "--from-file", &events]);
    let mut server = Server::start(&lake);
    let finance = server.token.clone();
    let tenant = server.process.token("tenant", Some("t2"));
    let before = server.counter("allot_report_computations_total", "health_rows");
    let instants: Vec<String> = (0..40)
        .map(|i| format!("2026-05-{:02}T{:02}:17:00Z", 1 + i % 20, i % 24))
        .collect();
    server.token = tenant;
    let answers: Vec<String> = instants
        .iter()
        .map(|at| server.ok(&format!("/v1/tenants/t2/health?as_of={at}")))
        .collect();
    server.token = finance;
    assert_eq!(
        server.counter("allot_report_computations_total", "health_rows"),
        before,
        "a tenant's as_of computed every tenant's health"
    );
    assert_eq!(
        server.counter("allot_report_computations_total", "tenant_health"),
        40
    );
    // The same figures as the all-tenant view at those instants.
    for (at, answer) in instants.iter().zip(&answers).take(3) {
        let all = server.ok(&format!("/v1/tenants?as_of={at}"));
        let row = answer.lines().nth(1).expect("a row");
        assert!(
            row.starts_with("t2,") && all.lines().any(|line| line == row),
            "{at}: {row}\nvs\n{all}"
        );
    }
}

/// SQL bombs from several tenants at once leave the server up, within its
/// memory bound (`ServeProcess::assert_within_sql_memory_bound`), and
/// answering `/healthz` quickly meanwhile.
#[test]
fn sql_bombs_leave_the_server_within_its_memory_bound() {
    const SQL_MEMORY: u64 = 64 << 20;
    const SQL_MAX_BYTES: u64 = 8 << 20;
    let mut rng = Lcg(13);
    let lake = new_lake_with(
        common::FLAT_PRICE_BOOK,
        "sql_memory = \"64MiB\"\nsql_max_bytes = \"8MiB\"\nsql_timeout = \"4s\"\n\
         sql_concurrency = 2\n",
    );
    let inputs = tempfile::tempdir().unwrap();
    let events = batch(inputs.path(), "events.jsonl", &mut rng, &TENANTS, 200);
    cli(&lake, &["ingest", "--no-progress", "--from-file", &events]);
    let server = Arc::new(Server::start(&lake));
    let tokens: Vec<String> = TENANTS
        .iter()
        .map(|tenant| server.process.token("tenant", Some(tenant)))
        .collect();
    // Warm the engine up with a query of each shape, then take the baseline.
    for token in &tokens {
        let (status, body) = server.sql(
            token,
            "SELECT metric, sum(value) FROM usage_events GROUP BY metric",
        );
        assert_eq!(status, 200, "{body}");
    }
    let before = server.process.peak_rss();

    let bombs = [
        "SELECT length(repeat('x', 1500000000))",
        "SELECT cardinality(range(0, 300000000))",
        "SELECT repeat('x', 50000) r FROM usage_events a, usage_events b LIMIT 20000",
        "SELECT count(DISTINCT n) FROM (SELECT unnest(range(0, 100000000)) AS n) t",
        "SELECT string_agg(repeat('y', 1000), ',') FROM usage_events a, usage_events b",
        "SELECT n, repeat('z', 200) FROM (SELECT unnest(range(0, 90000)) AS n) t",
        "SELECT * FROM usage_events a, usage_events b, usage_events c ORDER BY a.value",
        "SELECT array_agg(n) FROM (SELECT unnest(range(0, 50000000)) AS n) t",
    ];
    let start = Arc::new(Barrier::new(tokens.len() + 1));
    let attackers: Vec<_> = tokens
        .iter()
        .cloned()
        .map(|token| {
            let (server, start) = (Arc::clone(&server), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for _round in 0..2 {
                    for bomb in bombs {
                        let (status, body) = server.sql(&token, bomb);
                        assert!(
                            [400, 408, 413, 429].contains(&status),
                            "{bomb}: {status} {}",
                            &body[..body.len().min(300)]
                        );
                    }
                }
            })
        })
        .collect();
    start.wait();
    let mut health = Vec::new();
    while attackers.iter().any(|attacker| !attacker.is_finished()) {
        let asked = Instant::now();
        assert_eq!(server.request("GET /healthz", "", "").0, 200);
        health.push(asked.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    for attacker in attackers {
        attacker.join().unwrap();
    }

    server
        .process
        .assert_within_sql_memory_bound(before, SQL_MEMORY, SQL_MAX_BYTES);
    health.sort();
    let p99 = health[(health.len() * 99 / 100).min(health.len() - 1)];
    assert!(
        health.len() >= 20 && p99 < Duration::from_millis(50),
        "/healthz p99 {p99:?} over {} requests",
        health.len()
    );
    // Still serving SQL.
    let (status, body) = server.sql(&tokens[0], "SELECT 1 + 1 AS two");
    assert_eq!((status, body.contains("\"2\"")), (200, true), "{body}");
}

/// The value of the sample `series` (a name with its labels, if any) in the
/// Prometheus text `scrape`, if it is there.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.trim().parse().expect("a sample value"))
    })
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A running server's `/metrics` is what Prometheus expects of a scrape
/// (`promtool check metrics`: a help text and a type for every metric, names
/// by its conventions), and dates the lake it answers from: the time of its
/// last read of the lake's commits, which stops moving while the lake's log
/// cannot be read (the age the operators' alert `AllotLakeRefreshStale` reads).
#[test]
fn the_servers_metrics_pass_promtool_and_date_the_served_lake() {
    let mut rng = Lcg(31);
    let lake = new_lake(common::FLAT_PRICE_BOOK);
    let inputs = tempfile::tempdir().unwrap();
    let events = batch(inputs.path(), "events.jsonl", &mut rng, &TENANTS, 40);
    cli(&lake, &["ingest", "--no-progress", "--from-file", &events]);
    let started = unix_now();
    let server = Server::start(&lake);

    // Reports computed and then answered from the cache, a refused token and a
    // route that does not exist, so that every series of the server is there.
    let invoice = format!("/v1/tenants/t1/invoices/{MONTH}");
    for path in ["/v1/tenants", "/v1/tenants", &invoice, &invoice] {
        server.ok(path);
    }
    assert_eq!(server.request("GET /v1/tenants", "forged", "").0, 401);
    assert_eq!(server.get("/v1/no-such-route").0, 404);
    std::thread::sleep(REFRESH * 3);
    let (status, scrape) = server.get("/metrics");
    assert_eq!(status, 200);
    for name in [
        allot_api::metrics::HTTP_REQUESTS,
        allot_api::metrics::HTTP_DURATION,
        allot_api::cache::REPORT_COMPUTATIONS,
        allot_api::cache::REPORT_CACHE_HITS,
        allot_api::cache::REPORT_CACHE_BYTES,
        allot_api::lake_view::LAKE_REFRESH_SECONDS,
        allot_api::lake_view::LAKE_VERSION,
        allot_api::lake_view::LAKE_REFRESHED_AT,
    ] {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "{name} has no help text in the scrape:\n{scrape}"
        );
    }
    common::promtool::assert_promtool_accepts_metrics(&scrape);

    // The served lake is dated by the last refresh: within a few refresh
    // intervals of now.
    let refreshed_at = |scrape: &str| {
        sample(scrape, allot_api::lake_view::LAKE_REFRESHED_AT).unwrap_or_else(|| {
            panic!(
                "no {} in:\n{scrape}",
                allot_api::lake_view::LAKE_REFRESHED_AT
            )
        })
    };
    let dated = refreshed_at(&scrape);
    assert!(
        dated >= started && dated <= unix_now(),
        "refreshed at {dated}, the server started at {started}, now is {}",
        unix_now()
    );

    // A commit the server cannot read (a corrupt log entry): it keeps serving
    // the last state it read, and its date stops moving while the series stays.
    let log = lake.root().join("usage_events/_delta_log");
    let next = std::fs::read_dir(&log)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".json")
        })
        .count();
    std::fs::write(
        log.join(format!("{next:020}.json")),
        "this is not a Delta commit\n",
    )
    .unwrap();
    std::thread::sleep(REFRESH * 3);
    let stuck = refreshed_at(&server.get("/metrics").1);
    std::thread::sleep(REFRESH * 5);
    assert_eq!(
        refreshed_at(&server.get("/metrics").1),
        stuck,
        "the date moved on an unreadable log"
    );
    server.ok(&invoice);
}

/// With `api.tls_cert` set every listener speaks TLS only
/// (docs/reference.md#server-settings): HTTPS answers a client that trusts the
/// certificate, Flight SQL answers ADBC over `grpc+tls`, and neither answers
/// a client that skips TLS.
#[test]
fn tls_listeners_speak_tls_only() {
    let mut rng = Lcg(31);
    let flight = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let certificates = tempfile::tempdir().unwrap();
    let certificate = common::test_certificate(certificates.path());
    let lake = new_lake_with(
        common::FLAT_PRICE_BOOK,
        &format!(
            "flight_sql_listen = \"{flight}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certificate.cert.display(),
            certificate.key.display()
        ),
    );
    let inputs = tempfile::tempdir().unwrap();
    let events = batch(inputs.path(), "events.jsonl", &mut rng, &TENANTS, 100);
    cli(&lake, &["ingest", "--no-progress", "--from-file", &events]);
    let server = ServeProcess::start_tls(&lake.config(), Some(&lake.root()), &certificate.ca);
    server.wait_ready(Duration::from_secs(30));
    assert!(server.base_url().starts_with("https://"));
    let tenant = server.token("tenant", Some("t1"));
    let sql = "SELECT tenant_id, sum(value) AS total FROM usage_events GROUP BY tenant_id";
    let (status, ready) = server.request("GET /readyz", "", "");
    assert_eq!(status, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(
        ready["listeners"]["flight_sql"],
        flight.to_string(),
        "{ready}"
    );

    let (status, body) = server.request(
        "POST /v1/sql",
        &tenant,
        &serde_json::json!({ "sql": sql }).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let over_https: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_https["rows"][0][0], "t1", "{body}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = std::net::TcpStream::connect(server.address()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    std::io::Write::write_all(&mut plain, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let seen = common::python_json(
        "flight_sql_tls_check.py",
        &[
            flight.to_string().as_str(),
            &certificate.ca.display().to_string(),
            sql,
        ],
        &[("ALLOT_TENANT_TOKEN", &tenant)],
    );
    assert_eq!(seen["tls"], over_https["rows"], "{seen}");
    assert!(seen["plain"].is_string(), "plain gRPC was answered: {seen}");
}
