//! `allot serve` as a child process, for the tests that need a real socket: it
//! listens on a free port (`127.0.0.1:0`, the address read back from its log),
//! answers `/healthz` before a test gets it, and is killed when dropped, so a
//! failing test leaves no server behind.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to answer `/healthz` after it logged its address.
const STARTUP: Duration = Duration::from_secs(30);

/// A running `allot serve`.
pub struct ServeProcess {
    child: Child,
    address: String,
    config: PathBuf,
    /// How requests reach a server with `api.tls_cert` set: TLS trusting the
    /// test's certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The rest of the server's log, read as it comes so that a full pipe never
    /// holds the server.
    log: Option<JoinHandle<String>>,
}

impl ServeProcess {
    /// Starts `allot serve` with the configuration `config` (and on the lake
    /// `lake`, when the configuration does not name it) and waits until it
    /// answers `/healthz`. The lake may still be loading: see
    /// [`ServeProcess::wait_ready`].
    pub fn start(config: &Path, lake: Option<&Path>) -> ServeProcess {
        ServeProcess::start_with(config, lake, &[], None)
    }

    /// [`ServeProcess::start`] with the further environment variables `env`.
    pub fn start_with_env(
        config: &Path,
        lake: Option<&Path>,
        env: &[(&str, &str)],
    ) -> ServeProcess {
        ServeProcess::start_with(config, lake, env, None)
    }

    /// [`ServeProcess::start`] for a server whose listeners speak TLS, with
    /// requests trusting the CA certificate `certificate` (PEM).
    pub fn start_tls(config: &Path, lake: Option<&Path>, certificate: &Path) -> ServeProcess {
        ServeProcess::start_with(config, lake, &[], Some(client_tls(certificate)))
    }

    fn start_with(
        config: &Path,
        lake: Option<&Path>,
        env: &[(&str, &str)],
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> ServeProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_allot"));
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(lake) = lake {
            command.arg("--lake").arg(lake);
        }
        let mut child = command
            .arg("--config")
            .arg(config)
            .env("ALLOT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn allot serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let address = super::served_address(&mut stderr);
        let log = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            rest
        });
        let server = ServeProcess {
            child,
            address,
            config: config.to_path_buf(),
            tls,
            log: Some(log),
        };
        server.wait_for("/healthz", STARTUP);
        server
    }

    /// `host:port` the server listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// `http://host:port` (`https` over TLS), without a trailing slash.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A token of `role` (and `tenant`) signed with the server's configured key,
    /// minted by `allot token`.
    pub fn token(&self, role: &str, tenant: Option<&str>) -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_allot"));
        command.args(["token", "--role", role]);
        if let Some(tenant) = tenant {
            command.args(["--tenant", tenant]);
        }
        let minted = command
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run allot token");
        assert!(minted.status.success(), "{minted:?}");
        String::from_utf8(minted.stdout).unwrap().trim().to_string()
    }

    /// Waits up to `within` until `/readyz` answers 200: the lake is loaded.
    pub fn wait_ready(&self, within: Duration) {
        self.wait_for("/readyz", within);
    }

    fn wait_for(&self, path: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.request(&format!("GET {path}"), "", "").0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "allot serve did not answer GET {path} with 200 within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `method_and_path` (`"GET /healthz"`) with `token` (none when empty) and
    /// `body`, on a connection of its own: the status and the body. Without a
    /// body the answer is asked for as CSV, with one as JSON.
    pub fn request(&self, method_and_path: &str, token: &str, body: &str) -> (u16, String) {
        let accept = if body.is_empty() {
            "text/csv"
        } else {
            "application/json"
        };
        let authorization = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let request = format!(
            "{method_and_path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n{authorization}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let tcp = TcpStream::connect(&self.address).expect("connect");
        let response = match &self.tls {
            None => exchange(tcp, &request),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let session = rustls::ClientConnection::new(Arc::clone(tls), name).unwrap();
                exchange(rustls::StreamOwned::new(session, tcp), &request)
            }
        };
        let status = response
            .get(9..12)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// The process's peak resident memory so far, in bytes (Linux's `VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .and_then(|value| value.trim().parse().ok())
            .expect("VmHWM in /proc status");
        kib << 10
    }

    /// Asserts that the peak resident memory has stayed within what the SQL
    /// limits `sql_memory` and `sql_max_bytes` allow past `baseline` (a peak
    /// taken before the statements ran): for each query the SQL pool runs at
    /// once (a thread per core, 2 to 8), four times `sql_memory` (an
    /// aggregate's final value, such as `string_agg`'s, is copied up to three
    /// times outside the engine's memory pool as it is emitted) and twice
    /// `sql_max_bytes` (the answer and its encoding), plus 64 MiB for the
    /// engine's own state.
    pub fn assert_within_sql_memory_bound(
        &self,
        baseline: u64,
        sql_memory: u64,
        sql_max_bytes: u64,
    ) {
        let pool_threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8) as u64;
        let bound = baseline + pool_threads * (4 * sql_memory + 2 * sql_max_bytes) + (64 << 20);
        let peak = self.peak_rss();
        assert!(
            peak <= bound,
            "peak RSS {} MiB past the bound {} MiB (before the statements: {} MiB)",
            peak >> 20,
            bound >> 20,
            baseline >> 20
        );
    }

    /// Waits up to `within` for the server to exit by itself; its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "allot serve did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits up to `within` for the server to exit (killing
    /// it and failing the test past that); its exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", self.pid());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("allot serve did not stop within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log after the line with its address, once it has exited
    /// (it is killed if it still runs).
    pub fn log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log
            .take()
            .map(|log| log.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Sends `request` on `stream` and reads the answer to its end.
fn exchange(mut stream: impl Read + Write, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    if let Err(error) = stream.read_to_end(&mut response) {
        // A TLS peer may close without a close_notify once it has answered.
        assert!(
            error.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty(),
            "reading the answer: {error}"
        );
    }
    String::from_utf8(response).expect("a UTF-8 answer")
}

/// A TLS client configuration that trusts the certificate in `certificate`.
pub fn client_tls(certificate: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certificate).expect("the test certificate") {
        roots.add(cert.expect("a PEM certificate")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
