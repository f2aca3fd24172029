//! `promtool`, Prometheus's own checker, from Debian's `prometheus` package
//! (`scripts/install-deps` installs it): the tests hold allot's metrics and the
//! shipped alerting rules to what Prometheus accepts. Without it these tests
//! fail, saying how to get it; they never pass by skipping.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `promtool ARGS` in `dir` with `stdin` as its input. The program is
/// `ALLOT_TEST_PROMTOOL` when set, else `promtool` on the `PATH`.
pub fn promtool(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let program = std::env::var("ALLOT_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {program} ({error}): install Debian's prometheus package, which \
                 has promtool (scripts/install-deps does), or set ALLOT_TEST_PROMTOOL to one"
            )
        });
    // promtool may exit before reading everything (a usage error): its status
    // and output say why, so a broken pipe here is not the failure to report.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait for promtool")
}

/// Panics, quoting promtool, unless `promtool check metrics` finds nothing to
/// say about the Prometheus text exposition `exposition` (a `/metrics` scrape).
pub fn assert_promtool_accepts_metrics(exposition: &str) {
    let output = promtool(Path::new("."), &["check", "metrics"], exposition);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics ({}) flags the scrape:\n{said}\nthe scrape:\n{exposition}",
        output.status
    );
}
