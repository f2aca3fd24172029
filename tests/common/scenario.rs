//! A collector scenario against a real broker: a fresh topic, its collectors'
//! group, an empty lake directory with the test price book beside it, `allot ingest`
//! collectors started on them, and the wait until the lake holds every offset
//! of the topic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use allot_schemas::layout::kafka_app_id;
use deltalake::DeltaTable;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{Broker, FLAT_PRICE_BOOK, LakeRow};

/// One test's topic, group and lake.
pub struct Scenario {
    /// The broker the topic is on.
    pub broker: Broker,
    /// The topic, created for this test.
    pub topic: String,
    /// The collectors' consumer group: `<topic>-collectors`.
    pub group: String,
    /// The topic's partitions.
    pub partitions: i32,
    /// The lake: an empty directory until a collector or backfill writes.
    pub lake: PathBuf,
    /// An `allot.toml` with the test price book, for reports on the lake.
    pub config: PathBuf,
    /// The directory holding the lake and the configuration.
    pub dir: tempfile::TempDir,
}

impl Scenario {
    /// A fresh topic named after `prefix` with `partitions` on the plaintext
    /// broker, and an empty lake.
    pub async fn new(prefix: &str, partitions: i32) -> Scenario {
        Scenario::on(Broker::plain(), prefix, partitions, &[]).await
    }

    /// A fresh topic named after `prefix` with `partitions` and the topic
    /// settings `configs` on `broker`, and an empty lake.
    pub async fn on(
        broker: Broker,
        prefix: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Scenario {
        let topic = broker.fresh_topic_with(prefix, partitions, configs).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("allot.toml");
        std::fs::write(&config, FLAT_PRICE_BOOK).expect("write config");
        let lake = dir.path().join("lake");
        std::fs::create_dir(&lake).expect("create the lake's directory");
        Scenario {
            group: format!("{topic}-collectors"),
            lake,
            broker,
            topic,
            partitions,
            config,
            dir,
        }
    }

    /// Produces `payloads` (key, payload) to the topic, spreading them over
    /// partitions by key.
    pub async fn produce(&self, payloads: impl IntoIterator<Item = (String, String)>) {
        super::produce_with(self.broker.client(), &self.topic, payloads).await;
    }

    /// Starts a collector of the topic into the lake, with the variables `env`
    /// set (`ALLOT__INGEST__…` settings, test hooks).
    pub fn collector(&self, env: &[(&str, &str)]) -> CollectorProcess {
        CollectorProcess(
            self.collector_command(env)
                .spawn()
                .expect("start collector"),
        )
    }

    /// The command line of a collector of the topic into the lake: JSON
    /// events, a flush every 20 000 rows or second, the broker's client
    /// settings as `--config` when it has any, its log on this process's stderr.
    pub fn collector_command(&self, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(allot_bin());
        command
            .args([
                "ingest",
                "--brokers",
                &self.broker.bootstrap,
                "--topic",
                &self.topic,
                "--group",
                &self.group,
                "--format",
                "json",
                "--lake",
            ])
            .arg(&self.lake)
            .env("ALLOT__INGEST__FLUSH_ROWS", "20000")
            .env("ALLOT__INGEST__FLUSH_INTERVAL", "\"1s\"")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(config) = &self.broker.config_file {
            command.arg("--config").arg(config);
        }
        command.envs(env.iter().copied());
        command
    }

    /// Waits up to `within` until the lake records, for every partition, the
    /// last offset of the topic.
    pub async fn wait_for_zero_lag(&self, within: Duration) {
        wait_for_zero_lag(
            &self.broker,
            &self.topic,
            &self.group,
            self.partitions,
            &self.lake,
            within,
        )
        .await;
    }

    /// Runs `allot ARGS --lake … --config …` (a report, `compact`, `close`)
    /// on the lake with the test price book; its standard output, which must be
    /// a success.
    pub fn allot(&self, args: &[&str]) -> String {
        let output = Command::new(allot_bin())
            .args(args)
            .arg("--lake")
            .arg(&self.lake)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run allot");
        assert!(
            output.status.success(),
            "allot {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Every active row of the lake's `table`.
    pub async fn rows(&self, table: &str) -> Vec<LakeRow> {
        super::read_lake_table(&self.lake, table).await
    }
}

/// Waits up to `within` until `lake` records, for every partition of `topic`
/// on `broker`, the topic's last offset as `group`'s.
pub async fn wait_for_zero_lag(
    broker: &Broker,
    topic: &str,
    group: &str,
    partitions: i32,
    lake: &Path,
    within: Duration,
) {
    let consumer: BaseConsumer = broker.client().create().expect("consumer");
    let mut high = HashMap::new();
    for p in 0..partitions {
        let (_, hw) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        high.insert(p, hw);
    }
    let url = url::Url::from_directory_path(lake.join("usage_events")).unwrap();
    let deadline = Instant::now() + within;
    loop {
        let mut lagging = Vec::new();
        if let Ok(mut table) = DeltaTable::try_from_url(url.clone()).await
            && table.load().await.is_ok()
        {
            let snapshot = table.snapshot().unwrap();
            for p in 0..partitions {
                let recorded = snapshot
                    .transaction_version(table.log_store().as_ref(), kafka_app_id(group, topic, p))
                    .await
                    .unwrap();
                if recorded.map_or(0, |o| o + 1) < high[&p] {
                    lagging.push((p, recorded, high[&p]));
                }
            }
            if lagging.is_empty() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "lag not 0 in time: {lagging:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The `allot` binary under test: `ALLOT_TEST_BIN` when set (a worktree sharing
/// its target directory with another one, whose builds replace
/// `target/debug/allot`), else the one Cargo built for these tests.
pub fn allot_bin() -> String {
    std::env::var("ALLOT_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_allot").to_string())
}

/// A collector process, killed when dropped so a failing test leaves none behind.
pub struct CollectorProcess(pub Child);

impl CollectorProcess {
    /// Stops the collector with SIGTERM and checks that it exits 0 within 30 s.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.try_wait().unwrap() {
                assert!(status.success(), "collector exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "collector did not stop within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl std::ops::Deref for CollectorProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for CollectorProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
