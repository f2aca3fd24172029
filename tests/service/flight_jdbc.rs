//! Arrow Flight SQL through the Arrow Flight SQL JDBC driver, the path DBeaver
//! and Tableau take (docs/reference.md#sql-over-the-wire): the driver logs in
//! with a user name and the allot token as password (the Flight handshake),
//! lists the tables through `DatabaseMetaData` and runs a query, whose exact
//! decimals must equal `POST /v1/sql`'s. Needs Java and the driver's jar
//! (`scripts/flight-jdbc-driver`, which `scripts/test` runs).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{CliLake, Lcg, ServeProcess};

const SECRET: &str = "a test secret that is long enough for HS256";

/// The jar `scripts/test` fetched, named by `ALLOT_TEST_FLIGHT_JDBC`.
fn driver_jar() -> String {
    std::env::var("ALLOT_TEST_FLIGHT_JDBC").expect(
        "ALLOT_TEST_FLIGHT_JDBC must name the Flight SQL JDBC driver's jar: run scripts/test, \
         or export ALLOT_TEST_FLIGHT_JDBC=$(scripts/flight-jdbc-driver)",
    )
}

#[test]
fn the_jdbc_driver_logs_in_lists_and_queries_a_tenants_sandbox() {
    let jar = driver_jar();
    let flight = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let lake = CliLake::new("");
    let audit = lake.dir.path().join("audit.jsonl");
    std::fs::write(
        lake.config(),
        format!(
            "{}\n[api]\njwt_secret = \"{SECRET}\"\naudit_log = \"{}\"\n\
             flight_sql_listen = \"{flight}\"\n",
            common::FLAT_PRICE_BOOK,
            audit.display()
        ),
    )
    .unwrap();
    let mut rng = Lcg(31);
    let mut events = String::new();
    for tenant in ["t1", "t2", "t3"] {
        for i in 0..200 {
            let day = (rng.next() % 28 + 1) as u32;
            events.push_str(&common::synthetic_event(&mut rng, tenant, 5, day, i));
            events.push('\n');
        }
    }
    let input = lake.dir.path().join("events.jsonl");
    std::fs::write(&input, events).unwrap();
    common::ingest_into(&lake.root(), &input);

    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(Duration::from_secs(30));
    let token = server.token("tenant", Some("t2"));
    let body = serde_json::json!({
        "sql": "SELECT tenant_id, sum(value) AS total FROM usage_events \
                GROUP BY tenant_id ORDER BY tenant_id"
    })
    .to_string();
    let (status, answer) = server.request("POST /v1/sql", &token, &body);
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let over_http = format!(
        "row\t{}\t{}",
        answer["rows"][0][0].as_str().unwrap(),
        answer["rows"][0][1].as_str().unwrap()
    );

    let output = Command::new("java")
        .arg("--add-opens=java.base/java.nio=ALL-UNNAMED")
        .arg("-cp")
        .arg(&jar)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jdbc/FlightSqlCheck.java"))
        .arg(flight.to_string())
        .env("ALLOT_TENANT_TOKEN", &token)
        .output()
        .expect("run java");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "table\tallot.public.closings",
            "table\tallot.public.invoices",
            "table\tallot.public.usage_events",
            "table\tallot.public.usage_hourly",
            "table\tallot.public.usage_monthly",
            "product\tallot",
            over_http.as_str(),
            "forged\trefused"
        ],
        "a tenant sees its own table and rows only, with the HTTP API's exact sums"
    );
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audit
            .lines()
            .any(|line| line.contains("\"FLIGHT\"") && line.contains("unauthenticated")),
        "the forged login is audited: {audit}"
    );
}
