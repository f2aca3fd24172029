//! Helpers shared by the end-to-end tests: the real Kafka broker started by
//! `scripts/test`, fresh topics, collectors on them ([`scenario::Scenario`]),
//! reading the lake's tables back, a running `allot serve` ([`ServeProcess`]),
//! the test lakes' price book, `promtool` ([`promtool`]), and what the tests of
//! SQL over the wire share ([`wire`]).

#![allow(dead_code)]

pub mod alerts;
pub mod promtool;
pub mod scenario;
mod serve;
pub mod wire;

pub use serve::ServeProcess;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use deltalake::DeltaTable;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The bootstrap address of the broker `scripts/test` started.
pub fn kafka_bootstrap() -> String {
    std::env::var("ALLOT_TEST_KAFKA").expect(
        "ALLOT_TEST_KAFKA is not set: run the tests with scripts/test, which starts a real Kafka broker",
    )
}

/// The Python of the venv `scripts/py-env` made (DuckDB, deltalake).
pub fn test_python() -> String {
    std::env::var("ALLOT_TEST_PYTHON")
        .expect("ALLOT_TEST_PYTHON is not set: run the tests with scripts/test")
}

/// Creates a topic with a unique name for one test on the plain broker and
/// returns the name.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    Broker::plain().fresh_topic(prefix, partitions).await
}

/// A broker `scripts/test` started, and the client settings it needs.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Bootstrap address.
    pub bootstrap: String,
    /// librdkafka properties every client of the broker needs.
    pub properties: BTreeMap<String, String>,
    /// An `allot.toml` holding those properties, for `allot --config`.
    pub config_file: Option<PathBuf>,
}

impl Broker {
    /// The plaintext broker.
    pub fn plain() -> Broker {
        Broker {
            bootstrap: kafka_bootstrap(),
            properties: BTreeMap::new(),
            config_file: None,
        }
    }

    /// The SASL_SSL broker (`scripts/kafka-up --sasl-ssl`): SCRAM-SHA-512 over
    /// TLS, with the client settings of the `allot.toml` fragment it wrote.
    pub fn sasl_ssl() -> Broker {
        let bootstrap = std::env::var("ALLOT_TEST_KAFKA_SASL_SSL").expect(
            "ALLOT_TEST_KAFKA_SASL_SSL is not set: run the tests with scripts/test, which starts a SASL_SSL broker",
        );
        let config_file = PathBuf::from(std::env::var("ALLOT_TEST_KAFKA_SASL_SSL_CONFIG").expect(
            "ALLOT_TEST_KAFKA_SASL_SSL_CONFIG is not set: run the tests with scripts/test",
        ));
        let text = std::fs::read_to_string(&config_file).expect("the client settings");
        let fragment: toml::Table = text.parse().expect("a TOML fragment");
        let properties = fragment["kafka"]["properties"]
            .as_table()
            .expect("a [kafka.properties] table")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_string()))
            .collect();
        Broker {
            bootstrap,
            properties,
            config_file: Some(config_file),
        }
    }

    /// A client configuration for this broker.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Creates a topic with a unique name for one test and returns the name.
    pub async fn fresh_topic(&self, prefix: &str, partitions: i32) -> String {
        self.fresh_topic_with(prefix, partitions, &[]).await
    }

    /// Creates a topic with a unique name and the topic settings `configs` for
    /// one test, and returns the name.
    pub async fn fresh_topic_with(
        &self,
        prefix: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> String {
        let name = format!("{prefix}-{}-{}", std::process::id(), chrono_like_nanos());
        self.create_topic_with(&name, partitions, configs).await;
        name
    }

    /// Creates `name`.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]).await;
    }

    /// Creates `name` with the topic settings `configs`.
    async fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().expect("admin client");
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let results = admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .expect("create topic");
        for result in results {
            result.expect("topic created");
        }
    }
}

fn chrono_like_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One row of a lake table, with its partition values taken from the file path.
#[derive(Debug, Clone)]
pub struct LakeRow {
    /// The file the row is in, relative to the table.
    pub file: String,
    /// Partition values from the path (`tenant_id`, `day`).
    pub partition: BTreeMap<String, String>,
    /// String columns by name (others rendered with Arrow's display).
    pub columns: BTreeMap<String, Option<String>>,
}

/// Reads every active row of `<lake>/<table>`.
pub async fn read_lake_table(lake: &Path, table: &str) -> Vec<LakeRow> {
    let dir = lake.join(table);
    let url = url::Url::from_directory_path(&dir).unwrap();
    let mut delta = DeltaTable::try_from_url(url).await.expect("open table");
    delta.load().await.expect("load table");
    let files: Vec<PathBuf> = delta
        .get_file_uris()
        .expect("files")
        .map(|uri| match url::Url::parse(&uri) {
            Ok(url) => url.to_file_path().unwrap(),
            Err(_) => PathBuf::from(uri),
        })
        .collect();
    let mut rows = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&dir).unwrap().display().to_string();
        let partition: BTreeMap<String, String> = relative
            .split('/')
            .filter_map(|segment| segment.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch: RecordBatch = batch.unwrap();
            for row in 0..batch.num_rows() {
                let mut columns = BTreeMap::new();
                for (i, field) in batch.schema().fields().iter().enumerate() {
                    let column = batch.column(i);
                    let value = if column.is_null(row) {
                        None
                    } else if let Some(strings) = column.as_string_opt::<i32>() {
                        Some(strings.value(row).to_string())
                    } else {
                        Some(arrow::util::display::array_value_to_string(column, row).unwrap())
                    };
                    columns.insert(field.name().clone(), value);
                }
                rows.push(LakeRow {
                    file: relative.clone(),
                    partition: partition.clone(),
                    columns,
                });
            }
        }
    }
    rows
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    paths_under(dir)
        .into_iter()
        .filter(|path| !path.is_dir())
        .collect()
}

/// Every path under `dir` (files and directories), recursively, sorted.
pub fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Serializes the tests that use the plaintext broker: they share it, one of them
/// restarts it, the collectors depend on session timeouts, and they would
/// starve each other on a two-core machine. Since the service tier is one test
/// binary, a test there that uses the broker takes this first.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The address `allot serve` logs it is serving on, read from its stderr
/// (the lines up to that one are consumed).
pub fn served_address(stderr: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let read = stderr.read_line(&mut line).expect("read the server's log");
        assert!(read > 0, "the server stopped before serving");
        if let Some(rest) = line.split("serving on http").nth(1)
            && let Some((_, url)) = rest.split_once("://")
        {
            return url.split(['/', ' ']).next().unwrap_or_default().to_string();
        }
    }
}

/// A server certificate for `localhost` and `127.0.0.1` and the test CA that
/// signed it, made by `openssl` (PEM files).
pub struct TestCertificate {
    /// The CA's certificate, which clients trust.
    pub ca: PathBuf,
    /// The server's certificate (`api.tls_cert`).
    pub cert: PathBuf,
    /// The server's private key (`api.tls_key`).
    pub key: PathBuf,
}

/// Makes a [`TestCertificate`] in `dir`.
pub fn test_certificate(dir: &Path) -> TestCertificate {
    let made = TestCertificate {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let (ca_key, request, extensions) = (
        dir.join("ca.key"),
        dir.join("server.csr"),
        dir.join("server.ext"),
    );
    std::fs::write(
        &extensions,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("run openssl (scripts/install-deps installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let os = |text: &'static str| std::ffi::OsStr::new(text);
    let curve = [os("-newkey"), os("ec"), os("-pkeyopt")];
    let curve = [
        &curve[..],
        &[os("ec_paramgen_curve:prime256v1"), os("-nodes")],
    ]
    .concat();
    openssl(
        &[
            &[os("req"), os("-x509")],
            &curve[..],
            &[os("-days"), os("2"), os("-subj"), os("/CN=allot test CA")],
            &[
                os("-keyout"),
                ca_key.as_os_str(),
                os("-out"),
                made.ca.as_os_str(),
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &[os("req")],
            &curve[..],
            &[os("-subj"), os("/CN=localhost")],
            &[
                os("-keyout"),
                made.key.as_os_str(),
                os("-out"),
                request.as_os_str(),
            ],
        ]
        .concat(),
    );
    openssl(&[
        os("x509"),
        os("-req"),
        os("-in"),
        request.as_os_str(),
        os("-CA"),
        made.ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("2"),
        os("-extfile"),
        extensions.as_os_str(),
        os("-out"),
        made.cert.as_os_str(),
    ]);
    made
}

/// A fixed pseudo-random sequence (64-bit LCG), so test lakes are the same every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number (31 bits).
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// The `i`-th synthetic event of `tenant` on 2026-`month`-`day`: a random metric of
/// the built-in catalog with a decimal value (up to 9 fractional digits), at a
/// random hour and minute `i % 60`.
pub fn synthetic_event(rng: &mut Lcg, tenant: &str, month: u32, day: u32, i: usize) -> String {
    let hour = rng.next() % 24;
    let (metric, value) = match rng.next() % 3 {
        0 => (
            "compute_seconds",
            format!("{}.{:09}", rng.next() % 5000, rng.next() % 1_000_000_000),
        ),
        1 => ("egress_bytes", format!("{}", rng.next() % 20_000_000_000)),
        _ => ("storage_bytes", format!("{}", rng.next() % 500_000_000_000)),
    };
    format!(
        r#"{{"event_id":"{tenant}-{month}-{day}-{i}","tenant_id":"{tenant}","ts":"2026-{month:02}-{day:02}T{hour:02}:{minute:02}:00Z","metric":"{metric}","value":{value},"resource":"r{i}"}}"#,
        minute = i % 60
    )
}

/// A lake in its own temporary directory, with an `allot.toml` beside it, that
/// a test drives through the `allot` binary.
pub struct CliLake {
    /// The directory holding `lake/` and `allot.toml`.
    pub dir: tempfile::TempDir,
}

impl CliLake {
    /// An empty lake whose configuration is `config`.
    pub fn new(config: &str) -> CliLake {
        let lake = CliLake {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::write(lake.config(), config).expect("write config");
        lake
    }

    /// The lake's root directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    /// Its `allot.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("allot.toml")
    }

    /// Runs `allot ARGS --lake … --config …`.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_with_env(args, &[])
    }

    /// Runs `allot ingest --from-file FILE` into the lake and gives what it
    /// printed; fails the test, with allot's error, when it fails.
    pub fn ingest(&self, file: &std::path::Path) -> String {
        let out = self.run(&[
            "ingest",
            "--no-progress",
            "--from-file",
            file.to_str().expect("a UTF-8 path"),
        ]);
        assert!(
            out.status.success(),
            "allot ingest {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs `allot ARGS --lake … --config …` with the variables `env` set.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
            .args(args)
            .arg("--lake")
            .arg(self.root())
            .arg("--config")
            .arg(self.config())
            .envs(env.iter().copied())
            .output()
            .expect("run allot")
    }
}

/// The price book of the test lakes, `fixtures/price_book.toml`: flat rates for
/// the three built-in metrics, in USD.
pub const FLAT_PRICE_BOOK: &str = include_str!("fixtures/price_book.toml");

/// The test lakes' price book followed by the further configuration `extra`
/// (a tenant's discount or rates, an `[api]` section, ...).
pub fn price_book_with(extra: &str) -> String {
    format!("{FLAT_PRICE_BOOK}\n{extra}")
}

/// One SQL escape the sandbox must refuse: the query, the `[api]` limit it needs
/// (key and TOML value), and part of the expected error.
pub struct SqlEscape {
    /// The query.
    pub sql: &'static str,
    /// An `[api]` setting to apply first (`sql_memory`, `sql_timeout`, …).
    pub limit: Option<(&'static str, &'static str)>,
    /// Part of the one-line error.
    pub error: &'static str,
}

/// Every way out of the SQL sandbox the CLI and the API are tested with.
pub const SQL_ESCAPES: &[SqlEscape] = &[
    SqlEscape {
        sql: "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp/lake'",
        limit: None,
        error: "CREATE EXTERNAL TABLE is not allowed",
    },
    SqlEscape {
        sql: "COPY (SELECT 1) TO '/tmp/out.csv' STORED AS CSV",
        limit: None,
        error: "COPY is not allowed",
    },
    SqlEscape {
        sql: "INSERT INTO usage_events SELECT * FROM usage_events",
        limit: None,
        error: "INSERT is not allowed",
    },
    SqlEscape {
        sql: "DELETE FROM usage_events",
        limit: None,
        error: "DELETE is not allowed",
    },
    SqlEscape {
        sql: "DROP TABLE usage_events",
        limit: None,
        error: "DROP is not allowed",
    },
    SqlEscape {
        sql: "SET datafusion.execution.batch_size = 1",
        limit: None,
        error: "SET is not allowed",
    },
    SqlEscape {
        sql: "SELECT * FROM read_parquet('/etc/passwd')",
        limit: None,
        error: "table functions are not allowed",
    },
    SqlEscape {
        sql: "SELECT * FROM '/etc/passwd'",
        limit: None,
        error: "unknown table",
    },
    SqlEscape {
        sql: "SELECT * FROM information_schema.tables",
        limit: None,
        error: "information_schema",
    },
    SqlEscape {
        sql: "SELECT * FROM rejected_events",
        limit: None,
        error: "unknown table",
    },
    SqlEscape {
        sql: "SELECT 1; SELECT 2",
        limit: None,
        error: "exactly one statement",
    },
    SqlEscape {
        sql: "SELECT a.event_id, b.event_id FROM usage_events a CROSS JOIN usage_events b ORDER BY 1, 2",
        limit: Some(("sql_memory", "\"1MiB\"")),
        error: "memory limit",
    },
    SqlEscape {
        sql: "SELECT count(*) FROM usage_events a, usage_events b, usage_events c, usage_events d, usage_events e",
        limit: Some(("sql_timeout", "\"1s\"")),
        error: "time limit",
    },
    SqlEscape {
        sql: "SELECT * FROM usage_events",
        limit: Some(("sql_max_rows", "5")),
        error: "more than 5 rows",
    },
];

/// Backfills `events` (a JSON Lines file) into `lake` with `allot ingest
/// --from-file`, asserting that it succeeds.
pub fn ingest_into(lake: &Path, events: &Path) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["ingest", "--no-progress", "--from-file"])
        .arg(events)
        .arg("--lake")
        .arg(lake)
        .output()
        .expect("run allot ingest");
    assert!(output.status.success(), "{output:?}");
}

/// Produces `payloads` to `topic` of the plain broker, spreading them over
/// partitions by key.
pub async fn produce(topic: &str, payloads: impl IntoIterator<Item = (String, String)>) {
    produce_with(Broker::plain().client(), topic, payloads).await;
}

/// Produces `payloads` to `topic` with the producer settings `client`,
/// spreading them over partitions by key.
pub async fn produce_with(
    mut client: ClientConfig,
    topic: &str,
    payloads: impl IntoIterator<Item = (String, String)>,
) {
    let producer: FutureProducer = client
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (key, payload) in payloads {
        let record = FutureRecord::to(topic).key(&key).payload(&payload);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if pending.len() >= 50_000 {
            for delivery in pending.drain(..) {
                delivery.await.expect("delivery").expect("delivered");
            }
        }
    }
    for delivery in pending {
        delivery.await.expect("delivery").expect("delivered");
    }
}

/// The `tenant_id,day,events,digest` of every row of `allot certificate`'s CSV.
pub fn certificate_digests(csv: &str) -> Vec<String> {
    csv.lines()
        .skip(1)
        .map(|line| line.split(',').take(4).collect::<Vec<_>>().join(","))
        .collect()
}

/// The same four fields recomputed from a JSON Lines file of events by
/// Runs the client `tests/<script>` with the test Python, `args` and the
/// further environment `env`, and reads what it printed as JSON; the test
/// fails, with the client's stderr, when the client does.
pub fn python_json<S: AsRef<std::ffi::OsStr>>(
    script: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> serde_json::Value {
    let output = std::process::Command::new(test_python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join(script),
        )
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {output:?}"))
}

/// `tests/certificate_check.py`, independently of allot, for `month`.
pub fn python_certificate_digests(events: &Path, month: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/certificate_check.py");
    let python = std::process::Command::new(test_python())
        .arg(script)
        .arg(events)
        .arg(month)
        .output()
        .expect("run certificate_check.py");
    assert!(
        python.status.success(),
        "certificate_check.py: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    String::from_utf8(python.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every Parquet file under the table directory `table` (removed ones too),
/// sorted.
pub fn data_files(table: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![table.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() && !path.ends_with("_delta_log") {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The rows of the Parquet file at `path`.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).expect("open parquet"),
    )
    .expect("parquet reader")
    .build()
    .expect("build reader")
    .map(|b| b.expect("batch"))
    .collect()
}

/// Writes `batches` (at least one) as the Parquet file at `path`.
pub fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).expect("create"),
        batches[0].schema(),
        None,
    )
    .expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.close().expect("close");
}

/// Turns the Delta table at `table` into one written before `columns` were
/// added to allot's schema: its files rewritten without them, and the columns
/// taken out of the schema in its log.
pub fn drop_columns(table: &Path, columns: &[&str]) {
    for file in data_files(table) {
        let batches: Vec<RecordBatch> = read_parquet(&file)
            .into_iter()
            .map(|batch| {
                let kept: Vec<usize> = (0..batch.num_columns())
                    .filter(|i| !columns.contains(&batch.schema().field(*i).name().as_str()))
                    .collect();
                batch.project(&kept).expect("project")
            })
            .collect();
        if !batches.is_empty() {
            write_parquet(&file, &batches);
        }
    }
    rewrite_log_actions(table, |action| {
        if let Some(schema) = action.pointer_mut("/metaData/schemaString") {
            let mut parsed: serde_json::Value =
                serde_json::from_str(schema.as_str().expect("schema text")).expect("schema");
            let fields = parsed["fields"].as_array_mut().expect("fields");
            let before = fields.len();
            fields.retain(|f| !columns.iter().any(|c| f["name"] == *c));
            assert_eq!(
                fields.len(),
                before - columns.len(),
                "the schema had {columns:?}"
            );
            *schema = serde_json::Value::String(parsed.to_string());
        }
        if let Some(add) = action.get_mut("add") {
            let file = table.join(add["path"].as_str().unwrap());
            add["size"] = std::fs::metadata(file).expect("file").len().into();
            add.as_object_mut().unwrap().remove("stats");
        }
    });
}

/// Rewrites every action of the JSON commits in the log of the Delta table at
/// `table` with `change`, as a writer of another version would have left it.
pub fn rewrite_log_actions(table: &Path, mut change: impl FnMut(&mut serde_json::Value)) {
    let log = table.join("_delta_log");
    for entry in std::fs::read_dir(&log).expect("read log") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read commit");
        let mut lines = Vec::new();
        for line in text.lines() {
            let mut action: serde_json::Value = serde_json::from_str(line).expect("action");
            change(&mut action);
            lines.push(action.to_string());
        }
        std::fs::write(&path, lines.join("\n") + "\n").expect("write commit");
    }
}
