//! The lake on an S3-compatible object store (S3Proxy, started by `scripts/s3-up`,
//! which checks that it enforces `If-None-Match: *`): every report, compaction,
//! a close and its verification, and offboarding read an `s3://` lake as they
//! read a local one; the store refuses to write a taken log version again (what
//! makes a writer that lost a race retry); concurrent backfills lose nothing; two collectors and a backfill on one S3 lake keep exactly once; two
//! server replicas answer alike and follow a commit; an unreachable store is one
//! clear error line, with nothing lost.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use allot_lake::append::LogAppender;
use allot_lake::txns::AppOffset;
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, LakeTable};
use common::{CliLake, FLAT_PRICE_BOOK, Lcg, ServeProcess};
use deltalake::logstore::object_store::{self, ObjectStore, PutMode, PutOptions, PutPayload};

/// The S3 server `scripts/test` started.
struct S3Server {
    endpoint: String,
    bucket: String,
    key_id: String,
    secret: String,
}

fn s3_server() -> S3Server {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with scripts/test, which starts an S3 server")
        })
    };
    S3Server {
        endpoint: var("ALLOT_TEST_S3_ENDPOINT"),
        bucket: var("ALLOT_TEST_S3_BUCKET"),
        key_id: var("ALLOT_TEST_S3_ACCESS_KEY_ID"),
        secret: var("ALLOT_TEST_S3_SECRET_ACCESS_KEY"),
    }
}

/// A lake under a fresh prefix of the test bucket, named by its `allot.toml`
/// (`[lake] url` and `[lake.storage]`), which every command is given.
struct S3Lake {
    dir: tempfile::TempDir,
    url: String,
}

impl S3Lake {
    /// A new, empty lake; `extra` is appended to the configuration.
    fn new(name: &str, extra: &str) -> S3Lake {
        let server = s3_server();
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let url = format!("s3://{}/{name}-{unique}/lake", server.bucket);
        let lake = S3Lake {
            dir: tempfile::tempdir().unwrap(),
            url,
        };
        let config = format!(
            "{FLAT_PRICE_BOOK}\n{extra}\n[lake]\nurl = \"{}\"\n\n{}",
            lake.url,
            storage_section(&server.endpoint, &server)
        );
        std::fs::write(lake.config(), config).unwrap();
        lake
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("allot.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_allot"));
        command.args(args).arg("--config").arg(self.config());
        command
    }

    /// Starts `allot ingest --from-file FILE` on the lake, its output captured.
    fn spawn_backfill(&self, file: &Path) -> std::process::Child {
        self.command(&[
            "ingest",
            "--no-progress",
            "--from-file",
            file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a backfill")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run allot")
    }

    fn stdout(&self, args: &[&str]) -> String {
        stdout_of(args, self.run(args))
    }
}

/// `[lake.storage]` for `server`'s credentials at `endpoint`.
fn storage_section(endpoint: &str, server: &S3Server) -> String {
    format!(
        "[lake.storage]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nallow_http = true\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nretry_timeout = \"2s\"\n",
        server.key_id, server.secret
    )
}

fn stdout_of(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "allot {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn local_stdout(lake: &CliLake, args: &[&str]) -> String {
    stdout_of(args, lake.run(args))
}

/// Writes the synthetic September events `first..first + count` of six tenants
/// (every day) to a JSON Lines file in `dir`, plus each `resend`-th event a second
/// time (a producer's retry), and returns its path. Event `i` is the same in every
/// file, so files that overlap hold copies, not conflicting events.
fn events_file(dir: &Path, name: &str, first: usize, count: usize, resend: usize) -> PathBuf {
    let mut lines = Vec::new();
    for i in first..first + count {
        let mut rng = Lcg(i as u64 + 7);
        for tenant in ["t1", "t2", "t3", "t4", "t5", "t6"] {
            let event = common::synthetic_event(&mut rng, tenant, 9, (i % 30) as u32 + 1, i);
            if i % resend == 0 {
                lines.push(event.clone());
            }
            lines.push(event);
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The reports every user runs, as their CSV output.
const REPORTS: &[&[&str]] = &[
    &["invoice", "--month", "2026-09"],
    &["invoice", "--month", "2026-09", "--tenant", "t3"],
    &[
        "noisy",
        "--from",
        "2026-09-01",
        "--to",
        "2026-10-01",
        "--all",
    ],
    &["health", "--as-of", "2026-09-30T12:00:00Z"],
    &[
        "sql",
        "SELECT tenant_id, metric, count(*) AS events, sum(value) AS total \
         FROM usage_events GROUP BY tenant_id, metric ORDER BY tenant_id, metric",
    ],
];

#[test]
fn reports_compaction_and_a_close_on_s3_match_a_local_lake() {
    let inputs = tempfile::tempdir().unwrap();
    let local = CliLake::new(FLAT_PRICE_BOOK);
    let s3 = S3Lake::new("reports", "");
    // Two backfills, so that tenant-days have two files for compaction to merge.
    for (name, first) in [("a.jsonl", 0), ("b.jsonl", 100)] {
        let file = events_file(inputs.path(), name, first, 100, 7);
        let file = file.to_str().unwrap();
        local_stdout(&local, &["ingest", "--no-progress", "--from-file", file]);
        let said = s3.stdout(&["ingest", "--no-progress", "--from-file", file]);
        assert!(said.contains(" 0 rejected"), "{said}");
    }
    let local_reports: Vec<String> = REPORTS.iter().map(|a| local_stdout(&local, a)).collect();
    for (args, expected) in REPORTS.iter().zip(&local_reports) {
        assert_eq!(&s3.stdout(args), expected, "allot {args:?} on S3");
    }

    let compacted = s3.stdout(&["compact"]);
    assert!(!compacted.trim().is_empty());
    for (args, expected) in REPORTS.iter().zip(&local_reports) {
        assert_eq!(
            &s3.stdout(args),
            expected,
            "allot {args:?} on S3 after compaction"
        );
    }

    let closed = s3.stdout(&["close", "--month", "2026-09", "--by", "finance"]);
    assert!(closed.starts_with("closed 2026-09 revision 0"), "{closed}");
    assert_eq!(
        s3.stdout(&["verify", "--month", "2026-09"]).trim(),
        "verified"
    );
    assert_eq!(
        s3.stdout(&["invoice", "--month", "2026-09"]),
        local_reports[0],
        "the final invoice is the draft's figures"
    );
    s3.stdout(&["vacuum", "--retention", "0s"]);
    assert_eq!(
        s3.stdout(&["verify", "--month", "2026-09"]).trim(),
        "verified"
    );

    // Offboarding on S3: the export holds the tenant's events, and after the
    // erasure the lake holds none while the other tenants' figures stay.
    let export = tempfile::tempdir().unwrap();
    let out = export.path().to_str().unwrap();
    s3.stdout(&["tenant", "export", "t6", "--out", out]);
    let exported = std::fs::read_to_string(export.path().join("events.jsonl")).unwrap();
    assert!(exported.lines().count() >= 200, "{exported}");
    s3.stdout(&["tenant", "delete", "t6", "--confirm", "t6"]);
    let remaining = "SELECT count(*) AS events FROM usage_events WHERE tenant_id = 't6'";
    assert_eq!(s3.stdout(&["sql", remaining]), "events\n0\n");
    let others: String = local_reports[0]
        .lines()
        .filter(|line| !line.starts_with("t6,"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        s3.stdout(&["invoice", "--month", "2026-09", "--live"]),
        others
    );
}

#[test]
fn concurrent_backfills_on_one_s3_lake_lose_nothing() {
    let inputs = tempfile::tempdir().unwrap();
    // Small commits, so that the three writers race for the same versions often.
    let s3 = S3Lake::new("race", "[ingest]\nbackfill_flush_rows = 40\n");
    let files: Vec<PathBuf> = (0..3)
        .map(|n| events_file(inputs.path(), &format!("{n}.jsonl"), n * 50, 80, 5))
        .collect();
    let writers: Vec<_> = files.iter().map(|file| s3.spawn_backfill(file)).collect();
    for writer in writers {
        let output = writer.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "a backfill failed: {stderr}");
    }
    // The same events, overlapping ids included, backfilled one file after the
    // other into a local lake.
    let local = CliLake::new(FLAT_PRICE_BOOK);
    for file in &files {
        local_stdout(
            &local,
            &[
                "ingest",
                "--no-progress",
                "--from-file",
                file.to_str().unwrap(),
            ],
        );
    }
    for args in REPORTS {
        assert_eq!(
            s3.stdout(args),
            local_stdout(&local, args),
            "allot {args:?}"
        );
    }
}

/// Whether two processes race for a version is up to timing, so the store's
/// part of a lost race is checked directly: after a commit, writing its log
/// entry again with `If-None-Match: *` (what a writer that lost the race does)
/// is refused as "already exists" by the lake's own store, opened with the
/// lake's settings, and the winner's entry stays. The appender turns that
/// refusal into a retry at the next version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_version_cannot_be_written_again_on_s3() {
    let s3 = S3Lake::new("lost-race", "");
    let text = std::fs::read_to_string(s3.config()).unwrap();
    let config = Config::from_toml_str(&text, "allot.toml", Vec::new()).unwrap();
    let location = LakeLocation::parse(config.lake.url.as_deref().unwrap())
        .unwrap()
        .with_storage(config.lake.storage.options());
    let mut appender = LogAppender::open(&location, LakeTable::UsageEvents)
        .await
        .unwrap();
    let taken = appender
        .append(Vec::new(), vec![AppOffset::new("winner", 7)], &[])
        .await
        .unwrap();
    let table = allot_lake::snapshot::table_builder(&location, LakeTable::UsageEvents)
        .unwrap()
        .build()
        .unwrap();
    let store = table.log_store().object_store(None);
    let entry = deltalake::Path::from(format!("_delta_log/{taken:020}.json"));
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let overwrite = store
        .put_opts(&entry, PutPayload::from_static(b"{}\n"), create)
        .await;
    assert!(
        matches!(overwrite, Err(object_store::Error::AlreadyExists { .. })),
        "{overwrite:?}"
    );
    let recorded = allot_lake::txns::recorded_txns(&location, LakeTable::UsageEvents, taken)
        .await
        .unwrap();
    assert_eq!(recorded.get("winner"), Some(&7));
}

/// A collector process, killed when dropped so that a failing test leaves none
/// behind.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_and_a_backfill_on_one_s3_lake_keep_exactly_once() {
    let _serial = common::serial().await;
    let topic = common::fresh_topic("s3collect", 2).await;
    let broker = common::Broker::plain();
    let s3 = S3Lake::new("collect", "[ingest]\nflush_interval = \"1s\"\n");
    let collector = || {
        Spawned(
            s3.command(&[
                "ingest",
                "--brokers",
                &broker.bootstrap,
                "--topic",
                &topic,
                "--group",
                &format!("{topic}-collectors"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a collector"),
        )
    };
    let mut collectors = [collector(), collector()];
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 600 events through Kafka, half of them sent twice (a producer's retry on
    // the other partition), while a backfill writes 600 more and re-sends 100 of
    // the Kafka events.
    const EVENTS: usize = 600;
    let mut rng = Lcg(11);
    let kafka_events: Vec<String> = (0..EVENTS)
        .map(|i| {
            common::synthetic_event(
                &mut rng,
                ["k1", "k2", "k3"][i % 3],
                9,
                (i % 30) as u32 + 1,
                i,
            )
        })
        .collect();
    let mut payloads = Vec::new();
    for (i, event) in kafka_events.iter().enumerate() {
        payloads.push((format!("a{i}"), event.clone()));
        if i % 2 == 0 {
            payloads.push((format!("b{i}"), event.clone()));
        }
    }
    let inputs = tempfile::tempdir().unwrap();
    let backfill_file = events_file(inputs.path(), "backfill.jsonl", 0, EVENTS / 6, 1_000_000);
    let mut backfill_text = std::fs::read_to_string(&backfill_file).unwrap();
    for event in kafka_events.iter().take(100) {
        backfill_text.push_str(event);
        backfill_text.push('\n');
    }
    std::fs::write(&backfill_file, backfill_text).unwrap();
    let backfill = s3.spawn_backfill(&backfill_file);
    common::produce(&topic, payloads).await;
    let output = backfill.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let distinct = "SELECT count(*) AS events FROM \
        (SELECT DISTINCT tenant_id, event_id FROM usage_events)";
    let expected = format!("events\n{}\n", EVENTS + EVENTS);
    let deadline = Instant::now() + Duration::from_secs(120);
    while s3.stdout(&["sql", distinct]) != expected {
        assert!(Instant::now() < deadline, "the collectors did not catch up");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for Spawned(child) in &mut collectors {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for Spawned(child) in &mut collectors {
        assert!(child.wait().unwrap().success());
    }
    // Reports count each event once, whichever writer brought it and however
    // often; the same holds after compaction, which removes the copies.
    let counted = "SELECT count(*) AS events FROM usage_events";
    let invoice = s3.stdout(&["invoice", "--month", "2026-09"]);
    s3.stdout(&["compact"]);
    assert_eq!(s3.stdout(&["sql", counted]), expected);
    assert_eq!(s3.stdout(&["invoice", "--month", "2026-09"]), invoice);
}

#[test]
fn an_unreachable_store_is_one_clear_line_and_loses_nothing() {
    let server = s3_server();
    let inputs = tempfile::tempdir().unwrap();
    let file = events_file(inputs.path(), "events.jsonl", 0, 20, 1_000_000);
    let file = file.to_str().unwrap();
    let s3 = S3Lake::new("unreachable", "");
    // The same lake through an endpoint nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let text = std::fs::read_to_string(s3.config()).unwrap();
    let unreachable = text.replace(&server.endpoint, &dead_endpoint);
    let unreachable_config = s3.dir.path().join("unreachable.toml");
    std::fs::write(&unreachable_config, unreachable).unwrap();

    for args in [
        vec!["ingest", "--no-progress", "--from-file", file],
        vec!["invoice", "--month", "2026-09"],
        vec!["compact"],
    ] {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_allot"))
            .args(&args)
            .arg("--config")
            .arg(&unreachable_config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "allot {args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "allot {args:?} printed {stderr}");
        assert!(lines[0].contains("error"), "{}", lines[0]);
        assert!(
            !stderr.contains(&server.secret),
            "the secret leaked: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "allot {args:?} took {:?} to give up",
            started.elapsed()
        );
    }
    // Nothing was written, and nothing is lost: the same backfill against the
    // reachable store then holds every event.
    s3.stdout(&["ingest", "--no-progress", "--from-file", file]);
    let local = CliLake::new(FLAT_PRICE_BOOK);
    local_stdout(&local, &["ingest", "--no-progress", "--from-file", file]);
    assert_eq!(
        s3.stdout(&["invoice", "--month", "2026-09"]),
        local_stdout(&local, &["invoice", "--month", "2026-09"])
    );
}

#[test]
fn two_servers_on_one_s3_lake_answer_alike() {
    let audit = tempfile::tempdir().unwrap();
    let api = format!(
        "[api]\njwt_secret = \"a test secret that is long enough for HS256\"\n\
         audit_log = \"{}\"\n",
        audit.path().join("audit.jsonl").display()
    );
    let s3 = S3Lake::new("serve", &api);
    let inputs = tempfile::tempdir().unwrap();
    let file = events_file(inputs.path(), "events.jsonl", 0, 40, 1_000_000);
    let file = file.to_str().unwrap();
    s3.stdout(&["ingest", "--no-progress", "--from-file", file]);
    // Two replicas, as behind a load balancer.
    let servers = [(); 2].map(|()| ServeProcess::start(&s3.config(), None));
    for server in &servers {
        server.wait_ready(Duration::from_secs(60));
    }
    let token = servers[0].token("tenant", Some("t2"));
    let get = |server: &ServeProcess, path: &str| {
        let (status, body) = server.request(&format!("GET {path}"), &token, "");
        assert_eq!(status, 200, "GET {path} on {}: {body}", server.base_url());
        body
    };
    let invoice = "/v1/tenants/t2/invoices/2026-09";
    let cli = || s3.stdout(&["invoice", "--month", "2026-09", "--tenant", "t2"]);
    let before = cli();
    for server in &servers {
        assert_eq!(get(server, invoice), before, "{}", server.base_url());
    }
    // A commit made meanwhile (a late event of t2) shows on both replicas.
    let late = inputs.path().join("late.jsonl");
    std::fs::write(
        &late,
        r#"{"event_id":"late-1","tenant_id":"t2","ts":"2026-09-15T10:00:00Z","metric":"compute_seconds","value":3600}"#,
    )
    .unwrap();
    s3.stdout(&[
        "ingest",
        "--no-progress",
        "--from-file",
        late.to_str().unwrap(),
    ]);
    let after = cli();
    assert_ne!(after, before);
    // Each replica reads new commits every `api.refresh_interval` (1 s).
    for server in &servers {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(server, invoice) != after {
            assert!(
                Instant::now() < deadline,
                "the replica at {} did not show a commit",
                server.base_url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
