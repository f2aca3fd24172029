"""Talks to allot's Arrow Flight SQL endpoint as an analyst's notebook does, with
the ADBC Flight SQL driver (a client written apart from allot), and prints what
it saw as one JSON object for the Rust test to check.

    python flight_sql_check.py URI

The tokens come from the environment: ALLOT_TENANT_TOKEN (tenant t2),
ALLOT_WHALE_TOKEN (the tenant with huge quantities), ALLOT_ADMIN_TOKEN,
ALLOT_FINANCE_TOKEN, ALLOT_EXPIRED_TOKEN and ALLOT_FOREIGN_TOKEN (signed with
another issuer's key).
"""

import json
import os
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

uri = sys.argv[1]
QUERY = "SELECT tenant_id, sum(value) AS total FROM usage_events GROUP BY tenant_id ORDER BY tenant_id"
# Long enough to still be running at the time limit, in little memory: a
# five-way cross join of a few hundred events, counted.
ENDLESS = (
    "SELECT count(*) FROM usage_events a, usage_events b, usage_events c, "
    "usage_events d, usage_events e"
)
# The isolation corpus: each must be refused, with the rule it broke.
CORPUS = {
    "join_rejected": "SELECT * FROM usage_events u JOIN rejected_events r ON true",
    "subquery_rejected": "SELECT count(*) FROM usage_events "
    "WHERE tenant_id IN (SELECT tenant_id FROM rejected_events)",
    "qualified_other": "SELECT * FROM allot.public.rejected_events",
    "catalog_join": "SELECT * FROM information_schema.tables t JOIN rejected_events r ON true",
    "set_engine": "SET datafusion.execution.target_partitions = 64",
    "set_memory": "SET datafusion.runtime.memory_limit = '8G'",
    "multi_statement": "SELECT 1; SELECT * FROM rejected_events",
    "file_function": "SELECT * FROM read_parquet('/etc/passwd')",
    "file_path": "SELECT * FROM '/etc/passwd'",
    "table_function": "SELECT * FROM generate_series(1, 10)",
    "external": "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
    "copy": "COPY usage_events TO '/tmp/allot-copy.txt'",
    "explain_other": "EXPLAIN SELECT * FROM rejected_events",
}


def bearer(token):
    return flight_sql.connect(
        uri, db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    )


def rows_of(table):
    """Every value as text (decimals exactly), row by row."""
    columns = [column.to_pylist() for column in table.columns]
    return [[None if v is None else str(v) for v in row] for row in zip(*columns)]


def query(conn, sql):
    with conn.cursor() as cursor:
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
    return {
        "types": [str(field.type) for field in table.schema],
        "rows": rows_of(table),
    }


def error_of(action):
    try:
        action()
    except Exception as error:  # the driver's errors carry the server's message
        return str(error)
    return None


out = {}
tenant = os.environ["ALLOT_TENANT_TOKEN"]
with bearer(tenant) as conn:
    out["tenant_totals"] = query(conn, QUERY)
    out["tenant_qualified"] = query(conn, "SELECT count(*) FROM allot.public.usage_events")
    with conn.cursor() as cursor:
        cursor.adbc_prepare("SELECT count(*) AS n FROM usage_events")
        cursor.execute("SELECT count(*) AS n FROM usage_events")
        out["tenant_prepared"] = rows_of(cursor.fetch_arrow_table())
    # Parameters bound with DoPut: values, never SQL, and never wider than the
    # caller's scope.
    with conn.cursor() as cursor:
        counted = "SELECT count(*) AS n FROM usage_events WHERE tenant_id = $1"
        cursor.execute(counted, parameters=("t2",))
        out["tenant_parameters"] = rows_of(cursor.fetch_arrow_table())
        cursor.execute(counted, parameters=("t1",))
        out["tenant_parameters_other"] = rows_of(cursor.fetch_arrow_table())
        cursor.execute(counted, parameters=("t2' OR '1'='1",))
        out["tenant_parameters_injection"] = rows_of(cursor.fetch_arrow_table())
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    out["tenant_tables"] = sorted(
        table["table_name"]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
        for table in schema["db_schema_tables"] or []
    )
    out["tenant_rejected"] = error_of(lambda: query(conn, "SELECT * FROM rejected_events"))
    for key, sql in CORPUS.items():
        out[f"corpus_{key}"] = error_of(lambda: query(conn, sql))

        def prepare():
            with conn.cursor() as cursor:
                cursor.adbc_prepare(sql)

        out[f"corpus_prepared_{key}"] = error_of(prepare)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) AS n FROM usage_events WHERE tenant_id = $1",
            parameters=("x' UNION SELECT tenant_id FROM rejected_events --",),
        )
        out["corpus_parameter_union"] = rows_of(cursor.fetch_arrow_table())
    out["tenant_ddl"] = error_of(lambda: query(conn, "DROP TABLE usage_events"))
    # The sandbox's limits hold over the wire: a statement built to overflow
    # the planner's stack, and an answer past the row cap, which is streamed
    # and must end in the error, not look complete.
    out["tenant_deep"] = error_of(lambda: query(conn, "SELECT " + "1+" * 20000 + "1"))
    out["tenant_rows"] = error_of(
        lambda: query(conn, "SELECT n FROM (SELECT unnest(range(0, 250000)) AS n) t")
    )
    started = time.monotonic()
    out["tenant_time"] = error_of(lambda: query(conn, ENDLESS))
    out["tenant_time_seconds"] = time.monotonic() - started
    out["tenant_memory"] = error_of(
        lambda: query(
            conn,
            "SELECT a.event_id, b.event_id, c.event_id FROM usage_events a, "
            "usage_events b, usage_events c ORDER BY 1, 2, 3",
        )
    )
    out["tenant_after_limits"] = query(conn, "SELECT 1 AS one")["rows"]

with bearer(os.environ["ALLOT_WHALE_TOKEN"]) as conn:
    out["whale_totals"] = query(conn, QUERY)

# The handshake as JDBC and ODBC drivers do it: basic auth, the token as password.
with flight_sql.connect(
    uri,
    db_kwargs={"username": "analyst", "password": tenant},
) as conn:
    out["handshake_totals"] = query(conn, QUERY)

with bearer(os.environ["ALLOT_ADMIN_TOKEN"]) as conn:
    out["admin_totals"] = query(conn, QUERY)
    out["admin_tables"] = sorted(
        table["table_name"]
        for catalog in conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        for schema in catalog["catalog_db_schemas"] or []
        for table in schema["db_schema_tables"] or []
    )

out["finance"] = error_of(lambda: query(bearer(os.environ["ALLOT_FINANCE_TOKEN"]), QUERY))
# Refusals without a valid token are limited per address (five a second), so
# each pair below waits for its own second.
for key in ["expired", "foreign"]:
    time.sleep(1.1)
    token = os.environ[f"ALLOT_{key.upper()}_TOKEN"]
    out[key] = error_of(lambda: query(bearer(token), QUERY))
    out[f"{key}_handshake"] = error_of(
        lambda: query(
            flight_sql.connect(uri, db_kwargs={"username": "analyst", "password": token}),
            QUERY,
        )
    )
time.sleep(1.1)
out["forged"] = error_of(lambda: query(bearer(tenant[:-4] + "AAAA"), QUERY))
out["no_token"] = error_of(lambda: query(flight_sql.connect(uri), QUERY))

# A caller without a valid token, flooding: limited by its address before it
# is audited, so it cannot fill the audit log.
out["flood"] = [error_of(lambda: query(bearer("forged"), QUERY)) for _ in range(40)]

print(json.dumps(out))
