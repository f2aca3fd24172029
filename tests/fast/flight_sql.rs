//! Arrow Flight SQL (docs/reference.md#sql-over-the-wire) driven by the ADBC
//! Flight SQL driver, a client written apart from allot: each answer held to
//! `POST /v1/sql` and `allot sql`, the isolation corpus, the logins it must
//! refuse and the limits.

use crate::common;

use std::time::Duration;

use common::ServeProcess;
use common::wire::{SQL_MAX_BYTES, SQL_MEMORY, TENANTS, WHALE_TOTAL, cli_sql};

/// A tenant token sees its own rows only (bearer header or handshake),
/// decimals arrive as exact `Decimal128(38, 9)` equal to `POST /v1/sql`'s and
/// `allot sql`'s (a sum past 7.9·10¹⁹ included), the catalog lists what the
/// caller may read, parameters are values, and every statement of the
/// isolation corpus is refused with the rule it broke. Finance, expired,
/// foreign, forged and missing tokens are refused, the refusals audited; the
/// time limit, the memory cap and the row cap each end a statement with a
/// clear error while the server stays up within its memory bound.
#[test]
fn flight_sql_serves_each_caller_its_sandbox() {
    let flight = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let lake = common::wire::lake(&format!("flight_sql_listen = \"{flight}\"\n"));
    let foreign_token = common::wire::foreign_token();
    let expired_token = common::wire::mint(&lake.config(), &["--ttl", "1s"]);

    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(Duration::from_secs(30));
    let tenant = server.token("tenant", Some("t2"));
    let whale = server.token("tenant", Some("whale"));
    let admin = server.token("admin", None);
    let finance = server.token("finance", None);
    let sql = "SELECT tenant_id, sum(value) AS total FROM usage_events GROUP BY tenant_id \
               ORDER BY tenant_id";
    let over_http = |token: &str, sql: &str| -> Vec<Vec<String>> {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let (status, body) = server.request("POST /v1/sql", token, &body);
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        serde_json::from_value(answer["rows"].clone()).unwrap()
    };
    // Warm the engine up, then take the memory baseline; the token minted
    // with a second to live has expired by now.
    over_http(&tenant, sql);
    std::thread::sleep(Duration::from_millis(1100));
    let before = server.peak_rss();

    let seen = common::python_json(
        "flight_sql_check.py",
        &[format!("grpc://{flight}")],
        &[
            ("ALLOT_TENANT_TOKEN", &tenant),
            ("ALLOT_WHALE_TOKEN", &whale),
            ("ALLOT_ADMIN_TOKEN", &admin),
            ("ALLOT_FINANCE_TOKEN", &finance),
            ("ALLOT_EXPIRED_TOKEN", &expired_token),
            ("ALLOT_FOREIGN_TOKEN", &foreign_token),
        ],
    );
    let rows = |key: &str| -> Vec<Vec<String>> {
        serde_json::from_value(seen[key]["rows"].clone())
            .unwrap_or_else(|e| panic!("{key}: {e}: {}", seen[key]))
    };
    let refused = |key: &str, needles: &[&str]| common::wire::assert_refused(&seen, key, needles);

    // The tenant's own rows only, exactly as the HTTP API and the CLI answer
    // them, and the whale's sum to the last digit.
    let tenant_rows = rows("tenant_totals");
    assert_eq!(tenant_rows.len(), 1, "{seen}");
    assert_eq!(tenant_rows[0][0], "t2");
    assert_eq!(tenant_rows, over_http(&tenant, sql));
    assert_eq!(tenant_rows, cli_sql(&lake, Some("t2"), sql));
    assert_eq!(seen["tenant_totals"]["types"][1], "decimal128(38, 9)");
    assert_eq!(rows("handshake_totals"), tenant_rows);
    assert_eq!(
        rows("whale_totals"),
        vec![vec!["whale".to_string(), WHALE_TOTAL.to_string()]]
    );
    let count = over_http(&tenant, "SELECT count(*) FROM usage_events")[0][0].clone();
    assert_eq!(seen["tenant_qualified"]["rows"][0][0], count.as_str());
    assert_eq!(seen["tenant_prepared"][0][0], count.as_str());
    assert_eq!(seen["tenant_parameters"][0][0], count.as_str());
    assert_eq!(seen["tenant_parameters_other"][0][0], "0");
    assert_eq!(seen["tenant_parameters_injection"][0][0], "0");
    assert_eq!(seen["corpus_parameter_union"][0][0], "0");
    assert_eq!(
        seen["tenant_tables"],
        serde_json::json!([
            "closings",
            "invoices",
            "usage_events",
            "usage_hourly",
            "usage_monthly"
        ])
    );

    // The isolation corpus, planned directly and prepared: each refused with
    // the rule it broke, naming only what the caller may read.
    let readable = "queries may read: closings, invoices, usage_events, usage_hourly, \
                    usage_monthly (";
    refused("tenant_rejected", &[&format!("unknown table; {readable}")]);
    refused("tenant_ddl", &["DROP is not allowed"]);
    for prefix in ["corpus", "corpus_prepared"] {
        let corpus = |key: &str, needle: &str| refused(&format!("{prefix}_{key}"), &[needle]);
        for key in [
            "join_rejected",
            "subquery_rejected",
            "qualified_other",
            "explain_other",
            "file_path",
        ] {
            corpus(key, &format!("unknown table; {readable}"));
        }
        corpus("catalog_join", "information_schema is not available");
        corpus("set_engine", "SET is not allowed");
        corpus("set_memory", "SET is not allowed");
        corpus("multi_statement", "exactly one statement is allowed");
        corpus(
            "file_function",
            &format!("table functions are not allowed; {readable}"),
        );
        corpus(
            "table_function",
            &format!("table functions are not allowed; {readable}"),
        );
        corpus("external", "CREATE EXTERNAL TABLE is not allowed");
        corpus("copy", "COPY is not allowed");
    }

    // The limits, each a clear error; the server stays up within its bound.
    refused("tenant_deep", &["nests more than 256 levels"]);
    refused("tenant_rows", &["more than 100000 rows"]);
    refused("tenant_time", &["DeadlineExceeded"]);
    refused("tenant_time", &["past the time limit of 4 s"]);
    assert!(
        seen["tenant_time_seconds"].as_f64().unwrap() < 15.0,
        "{seen}"
    );
    refused("tenant_memory", &["more than the memory limit of 64 MiB"]);
    assert_eq!(seen["tenant_after_limits"], serde_json::json!([["1"]]));
    server.assert_within_sql_memory_bound(before, SQL_MEMORY, SQL_MAX_BYTES);

    // Admin sees every tenant, and every table.
    let admin_rows = rows("admin_totals");
    assert_eq!(admin_rows.len(), TENANTS.len() + 1);
    assert_eq!(admin_rows, over_http(&admin, sql));
    assert_eq!(
        seen["admin_tables"],
        serde_json::json!([
            "closings",
            "invoices",
            "rejected_events",
            "usage_events",
            "usage_hourly",
            "usage_monthly"
        ])
    );

    // Logins: finance may not run SQL; expired, foreign, forged and missing
    // tokens are refused, by header and by handshake alike.
    refused("finance", &["PermissionDenied"]);
    for key in ["expired", "expired_handshake"] {
        refused(key, &["Unauthenticated"]);
        refused(key, &["the token has expired"]);
    }
    for key in ["foreign", "foreign_handshake", "forged"] {
        refused(key, &["Unauthenticated"]);
        refused(key, &["the token is not valid for this server"]);
    }
    refused("no_token", &["Unauthenticated"]);
    let flood: Vec<String> = serde_json::from_value(seen["flood"].clone()).unwrap();
    assert!(
        flood.iter().any(|e| e.contains("ResourceExhausted")),
        "a flood without a token is rate limited: {flood:?}"
    );

    let (_, metrics) = server.request("GET /metrics", &finance, "");
    let series = |name: &str| common::wire::counter(&metrics, name);
    assert!(series("allot_flight_sql_statements_total{outcome=\"ok\"}") >= 6);
    // The answer past the row cap ended after it had started.
    assert!(series("allot_flight_sql_statements_total{outcome=\"failed\"}") >= 1);
    assert!(series("allot_flight_sql_statements_total{outcome=\"error\"}") >= 20);
    assert!(series("allot_flight_sql_refused_total{status=\"401\"}") >= 6);
    assert!(series("allot_flight_sql_refused_total{status=\"403\"}") >= 1);
    assert!(series("allot_flight_sql_bytes_sent_total") > 0);
    // Flight SQL's series are as Prometheus expects them, help texts included.
    common::promtool::assert_promtool_accepts_metrics(&metrics);

    let flight_denials = common::wire::audited_refusals(&lake, "FLIGHT");
    let unauthenticated = flight_denials
        .iter()
        .filter(|e| e["outcome"] == "unauthenticated")
        .count();
    assert!(
        unauthenticated < 25,
        "{unauthenticated} unauthenticated calls audited: the flood was not limited before the audit log"
    );
}
