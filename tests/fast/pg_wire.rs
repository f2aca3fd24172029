//! The PostgreSQL wire (docs/reference.md#sql-over-the-wire) driven by clients
//! written apart from allot: psql and psycopg over TLS, each answer held to
//! `POST /v1/sql` and `allot sql`, the isolation corpus and the limits.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::ServeProcess;
use common::wire::{SQL_MAX_BYTES, SQL_MEMORY, WHALE_TOTAL, cli_sql, own_count_of};

/// The server's `api.pg_max_connections`, small so the test can fill it.
const MAX_CONNECTIONS: usize = 4;

/// The `[api]` keys of `pg_listen` on `pg` under TLS, and a row cap of 1,000.
fn listeners(pg: &str, certificate: &common::TestCertificate) -> String {
    format!(
        "sql_max_rows = 1000\npg_listen = \"{pg}\"\npg_max_connections = {MAX_CONNECTIONS}\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certificate.cert.display(),
        certificate.key.display(),
    )
}

/// `psql` with `token` as the password over verified TLS, running `command`
/// (`-c`): its stdout, or its stderr when it failed.
fn psql(pg: &str, ca: &Path, token: &str, command: &str) -> Result<String, String> {
    let (host, port) = pg.rsplit_once(':').unwrap();
    let output = Command::new("psql")
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            &format!(
                "host={host} port={port} user=analyst dbname=allot sslmode=verify-full \
                 sslrootcert={} connect_timeout=20",
                ca.display()
            ),
            "-c",
            command,
        ])
        .env("PGPASSWORD", token)
        .output()
        .expect("run psql (scripts/install-deps installs postgresql-client)");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn pg_wire_serves_each_caller_its_sandbox() {
    let pg = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let certificates = tempfile::tempdir().unwrap();
    let certificate = common::test_certificate(certificates.path());
    let lake = common::wire::lake(&listeners(&pg, &certificate));

    // Tokens the server must refuse: one of another issuer's key, one expired.
    let foreign_token = common::wire::foreign_token();
    let expired_token = common::wire::mint(&lake.config(), &["--ttl", "1s"]);

    let server = ServeProcess::start_tls(&lake.config(), Some(&lake.root()), &certificate.ca);
    server.wait_ready(Duration::from_secs(30));
    let (status, ready) = server.request("GET /readyz", "", "");
    assert_eq!(status, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["listeners"]["postgres"], pg.as_str(), "{ready}");
    let tenant = server.token("tenant", Some("t2"));
    let whale = server.token("tenant", Some("whale"));
    let admin = server.token("admin", None);
    let finance = server.token("finance", None);
    std::thread::sleep(Duration::from_millis(1100));

    // psql: the tables a tenant may read, described; the others invisible.
    let tables = psql(&pg, &certificate.ca, &tenant, "\\dt").unwrap();
    assert!(tables.contains("usage_events"), "{tables}");
    assert!(!tables.contains("rejected_events"), "{tables}");
    let described = psql(&pg, &certificate.ca, &tenant, "\\d usage_events").unwrap();
    for column in ["event_id", "tenant_id", "ts", "metric", "value", "labels"] {
        assert!(described.contains(column), "{column}: {described}");
    }
    assert!(described.contains("numeric(38,9)"), "{described}");
    let refused = psql(&pg, &certificate.ca, "not-a-token", "SELECT 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed") || refused.contains("token"),
        "{refused}"
    );
    let whale_sum = psql(
        &pg,
        &certificate.ca,
        &whale,
        "SELECT sum(value) FROM usage_events",
    )
    .unwrap();
    assert!(whale_sum.contains(WHALE_TOTAL), "{whale_sum}");

    let (host, port) = pg.rsplit_once(':').unwrap();
    let ca = certificate.ca.display().to_string();
    let max_connections = MAX_CONNECTIONS.to_string();
    let before = server.peak_rss();
    let seen = common::python_json(
        "pg_wire_check.py",
        &[host, port, "verify-full"],
        &[
            ("PGSSLROOTCERT", ca.as_str()),
            ("ALLOT_TENANT_TOKEN", &tenant),
            ("ALLOT_WHALE_TOKEN", &whale),
            ("ALLOT_ADMIN_TOKEN", &admin),
            ("ALLOT_FINANCE_TOKEN", &finance),
            ("ALLOT_EXPIRED_TOKEN", &expired_token),
            ("ALLOT_FOREIGN_TOKEN", &foreign_token),
            ("ALLOT_PG_MAX_CONNECTIONS", &max_connections),
        ],
    );
    let rows = |key: &str| -> Vec<Vec<String>> {
        serde_json::from_value(seen[key].clone())
            .unwrap_or_else(|e| panic!("{key}: {e}: {}", seen[key]))
    };
    let refused = |key: &str, needles: &[&str]| common::wire::assert_refused(&seen, key, needles);
    let totals = "SELECT tenant_id, sum(value) AS total FROM usage_events \
                  GROUP BY tenant_id ORDER BY tenant_id";

    // The tenant's own rows, exactly as `allot sql --tenant` has them, in
    // text and in binary format; numeric (OID 1700) for the decimals.
    let tenant_totals = rows("tenant_totals");
    assert_eq!(tenant_totals, cli_sql(&lake, Some("t2"), totals));
    assert_eq!(rows("tenant_totals_binary"), tenant_totals);
    assert_eq!(seen["tenant_types"][1], 1700);
    let whale_totals = rows("whale_totals");
    assert_eq!(
        whale_totals,
        vec![vec!["whale".to_string(), WHALE_TOTAL.to_string()]]
    );
    assert_eq!(whale_totals, cli_sql(&lake, Some("whale"), totals));
    assert_eq!(rows("whale_totals_binary"), whale_totals);
    assert_eq!(rows("admin_totals"), cli_sql(&lake, None, totals));
    // The ADBC PostgreSQL driver reads the same values into Arrow.
    assert_eq!(rows("adbc_totals"), tenant_totals);
    assert_eq!(rows("adbc_whale_totals"), whale_totals);

    // COPY TO STDOUT answers the same rows as the query.
    let copied = rows("copy_table");
    assert_eq!(copied.len(), own_count_of(&lake, "t2"));
    assert!(copied.iter().all(|row| row[0] == "t2"), "{copied:?}");
    assert_eq!(rows("copy_query"), tenant_totals);
    assert_eq!(
        seen["copy_csv"],
        format!("tenant_id,total\n{}\n", tenant_totals[0].join(","))
    );

    // Parameters are values, never SQL, and never widen the scope.
    let own_count = cli_sql(&lake, Some("t2"), "SELECT count(*) FROM usage_events");
    assert_eq!(rows("tenant_params"), own_count);
    assert_eq!(rows("tenant_params_other"), vec![vec!["0".to_string()]]);
    assert_eq!(rows("tenant_params_injection"), vec![vec!["0".to_string()]]);
    assert_eq!(
        rows("tenant_params_echo"),
        vec![vec!["'; SELECT * FROM rejected_events; --".to_string()]]
    );
    assert_eq!(rows("tenant_params_binary"), own_count);
    assert_eq!(rows("corpus_param_table"), Vec::<Vec<String>>::new());
    assert_eq!(rows("in_transaction"), own_count);

    // What tools call on connect.
    let session = rows("session_functions");
    assert!(session[0][0].contains("allot"), "{session:?}");
    assert_eq!(session[0][1..], ["public".to_string(), "allot".to_string()]);
    assert_eq!(rows("show_datestyle"), vec![vec!["ISO, MDY".to_string()]]);
    assert_eq!(
        rows("show_application_name"),
        vec![vec!["notebook".to_string()]]
    );

    // The catalogs list only what the caller may read.
    let listed: Vec<String> = rows("tenant_information_schema")
        .into_iter()
        .filter(|row| row[0] == "public")
        .map(|row| row[1].clone())
        .collect();
    assert!(listed.contains(&"usage_events".to_string()), "{listed:?}");
    assert!(
        !listed.contains(&"rejected_events".to_string()),
        "{listed:?}"
    );
    let columns: Vec<String> = rows("tenant_columns")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    for column in ["event_id", "tenant_id", "ts", "metric", "value"] {
        assert!(
            columns.contains(&column.to_string()),
            "{column}: {columns:?}"
        );
    }
    assert!(
        !rows("tenant_pg_class")
            .iter()
            .any(|row| row[0] == "rejected_events")
    );
    assert_eq!(
        rows("tenant_pg_class_rejected"),
        vec![vec!["0".to_string()]]
    );
    let admin_tables: Vec<String> = rows("admin_information_schema")
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert!(
        admin_tables.contains(&"rejected_events".to_string()),
        "{admin_tables:?}"
    );

    // The isolation corpus: each refused, with the rule it broke.
    refused(
        "corpus_join_rejected",
        &["unknown table", "rejected_events"],
    );
    refused("corpus_catalog_join", &["unknown table", "rejected_events"]);
    refused(
        "corpus_qualified_other",
        &["unknown table", "rejected_events"],
    );
    for key in [
        "copy_to_file",
        "copy_query_to_file",
        "copy_from",
        "copy_program",
    ] {
        refused(&format!("corpus_{key}"), &["COPY"]);
    }
    refused("copy_rejected", &["unknown table", "rejected_events"]);
    refused("copy_join_rejected", &["unknown table", "rejected_events"]);
    refused("copy_option", &["0A000"]);
    refused("corpus_set_search_path", &["search_path"]);
    refused("corpus_set_work_mem", &["work_mem"]);
    refused(
        "corpus_set_engine",
        &["datafusion.execution.target_partitions"],
    );
    refused("corpus_set_role", &["ROLE", "role"]);
    refused("corpus_set_timeout_up", &["statement_timeout"]);
    refused("corpus_multi_statement", &["one statement"]);
    refused("corpus_multi_set", &["one statement"]);
    refused("corpus_file_function", &["read_parquet", "function"]);
    refused("corpus_file_path", &["unknown table", "/etc/passwd"]);
    refused("corpus_table_function", &["generate_series", "function"]);
    refused("corpus_ddl", &["only"]);
    refused("corpus_external", &["only"]);

    // Logins: wrong, empty, expired, another issuer's: 28P01; finance may
    // not run SQL.
    for key in ["login_wrong", "login_expired", "login_foreign"] {
        refused(key, &["28P01", "password authentication failed"]);
    }
    // libpq sends no empty password at all.
    refused("login_empty", &["password"]);
    refused("login_expired", &["expired"]);
    refused("login_finance", &["42501", "finance"]);
    refused("login_plaintext", &["TLS"]);

    // A cancel and statement_timeout stop a statement; the connection goes on.
    refused("cancel", &["57014"]);
    assert!(seen["cancel_seconds"].as_f64().unwrap() < 4.0, "{seen}");
    assert_eq!(rows("after_cancel"), vec![vec!["1".to_string()]]);
    refused("statement_timeout", &["57014"]);
    assert!(
        seen["statement_timeout_seconds"].as_f64().unwrap() < 3.5,
        "{seen}"
    );

    // The limits end statements with a clear error; the server stays up.
    refused("limit_time", &["57014", "time limit"]);
    refused("limit_memory", &["53200", "memory"]);
    refused("limit_rows", &["54000", "rows"]);
    assert_eq!(rows("after_limits"), vec![vec!["1".to_string()]]);
    server.assert_within_sql_memory_bound(before, SQL_MEMORY, SQL_MAX_BYTES);

    // Past pg_max_connections every connection is refused with 53300.
    let beyond: Vec<String> =
        serde_json::from_value(seen["beyond_max_connections"].clone()).unwrap();
    assert_eq!(beyond.len(), 100);
    assert!(
        beyond
            .iter()
            .all(|e| e.contains("too many clients already")),
        "{beyond:?}"
    );
    assert_eq!(rows("after_max_connections"), vec![vec!["1".to_string()]]);

    // Every refused login is audited, and /metrics counts the wire.
    common::wire::audited_refusals(&lake, "PG");
    let (status, metrics) = server.request("GET /metrics", &finance, "");
    assert_eq!(status, 200, "{metrics}");
    let series = |name: &str| common::wire::counter(&metrics, name);
    assert!(
        series("allot_pg_statements_total{outcome=\"ok\"}") >= 20,
        "{metrics}"
    );
    assert!(
        series("allot_pg_statements_total{outcome=\"error\"}") >= 10,
        "{metrics}"
    );
    assert!(
        series("allot_pg_refused_total{status=\"401\"}") >= 4,
        "{metrics}"
    );
    assert!(
        series("allot_pg_refused_total{status=\"403\"}") >= 1,
        "{metrics}"
    );
    assert!(
        series("allot_pg_refused_total{status=\"503\"}") >= 100,
        "{metrics}"
    );
    assert!(series("allot_pg_bytes_sent_total") > 0, "{metrics}");
    common::promtool::assert_promtool_accepts_metrics(&metrics);
}
