"""Drives allot's PostgreSQL wire with psycopg (the PostgreSQL client Python
notebooks and many BI tools use) and prints what it saw as JSON, for
tests/fast/pg_wire.rs to hold against `POST /v1/sql` and `allot sql`.

Usage: pg_wire_check.py HOST PORT SSLMODE (libpq's PGSSLROOTCERT names the CA), with the tokens in the environment
(ALLOT_TENANT_TOKEN for tenant t2, ALLOT_WHALE_TOKEN for the tenant with huge
quantities, ALLOT_ADMIN_TOKEN, ALLOT_FINANCE_TOKEN, ALLOT_EXPIRED_TOKEN,
ALLOT_FOREIGN_TOKEN signed by another issuer's key) and the server's
pg_max_connections in ALLOT_PG_MAX_CONNECTIONS.

Each refusal is recorded as "SQLSTATE: message", so the test can tell which
rule refused it.
"""

import json
import os
import sys
import threading
import time
from decimal import Decimal
from urllib.parse import quote

import adbc_driver_postgresql.dbapi
import psycopg

HOST, PORT, SSLMODE = sys.argv[1], sys.argv[2], sys.argv[3]
TOTALS = (
    "SELECT tenant_id, sum(value) AS total FROM usage_events "
    "GROUP BY tenant_id ORDER BY tenant_id"
)
# Long enough to still be running when it is cancelled or timed out, in
# little memory: a five-way cross join of a few hundred events, counted.
ENDLESS = (
    "SELECT count(*) FROM usage_events a, usage_events b, usage_events c, "
    "usage_events d, usage_events e"
)
seen = {}


def connect(token, sslmode=SSLMODE, **options):
    return psycopg.connect(
        host=HOST,
        port=PORT,
        user="analyst",
        dbname="allot",
        password=token,
        sslmode=sslmode,
        connect_timeout=20,
        autocommit=True,
        **options,
    )


def refusal(error):
    diag = getattr(error, "diag", None)
    state = getattr(error, "sqlstate", None) or (diag.sqlstate if diag else None)
    return f"{state}: {str(error).strip()}"


def rows(cursor):
    return [[None if v is None else str(v) for v in row] for row in cursor.fetchall()]


def attempt(key, token, sql, params=None, **options):
    """Runs `sql` on a fresh connection; records its rows or its refusal."""
    try:
        with connect(token, **options) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            seen[key] = rows(cur)
    except psycopg.Error as error:
        seen[key] = refusal(error)


tenant = os.environ["ALLOT_TENANT_TOKEN"]
whale = os.environ["ALLOT_WHALE_TOKEN"]
admin = os.environ["ALLOT_ADMIN_TOKEN"]

# Answers, in text and in binary format, with server-side parameters.
with connect(tenant) as conn:
    with conn.cursor() as cur:
        cur.execute(TOTALS)
        seen["tenant_totals"] = rows(cur)
        seen["tenant_types"] = [d.type_code for d in cur.description]
    with conn.cursor(binary=True) as cur:
        cur.execute(TOTALS)
        seen["tenant_totals_binary"] = rows(cur)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM usage_events WHERE tenant_id = %s AND value >= %s",
            ("t2", Decimal("0")),
        )
        seen["tenant_params"] = rows(cur)
        cur.execute("SELECT count(*) FROM usage_events WHERE tenant_id = %s", ("t1",))
        seen["tenant_params_other"] = rows(cur)
        cur.execute(
            "SELECT count(*) FROM usage_events WHERE tenant_id = %s",
            ("t2' OR '1'='1",),
        )
        seen["tenant_params_injection"] = rows(cur)
        cur.execute("SELECT %s::text AS echoed", ("'; SELECT * FROM rejected_events; --",))
        seen["tenant_params_echo"] = rows(cur)
        cur.execute("SELECT count(*) FROM usage_events WHERE value > %b", (Decimal("-1"),))
        seen["tenant_params_binary"] = rows(cur)
        # The session functions and settings clients read on connect.
        cur.execute("SELECT version(), current_schema(), current_database()")
        seen["session_functions"] = rows(cur)
        cur.execute("SHOW DateStyle")
        seen["show_datestyle"] = rows(cur)
        cur.execute("SET application_name = 'notebook'")
        cur.execute("SHOW application_name")
        seen["show_application_name"] = rows(cur)
        # The catalogs list what the caller may read, nothing else.
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables")
        seen["tenant_information_schema"] = rows(cur)
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'usage_events' ORDER BY ordinal_position"
        )
        seen["tenant_columns"] = rows(cur)
        cur.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' ORDER BY 1"
        )
        seen["tenant_pg_class"] = rows(cur)
        cur.execute(
            "SELECT count(*) FROM pg_catalog.pg_class WHERE relname = %s",
            ("rejected_events",),
        )
        seen["tenant_pg_class_rejected"] = rows(cur)

# The ADBC PostgreSQL driver (Arrow from the wire, as pandas and Polars
# read it), which fetches each answer with COPY … TO STDOUT (FORMAT binary).
for key, token in [("adbc", tenant), ("adbc_whale", whale)]:
    uri = f"postgresql://analyst:{quote(token, safe='')}@{HOST}:{PORT}/allot?sslmode={SSLMODE}"
    with adbc_driver_postgresql.dbapi.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(TOTALS)
        table = cur.fetch_arrow_table()
        seen[f"{key}_totals"] = [[str(v) for v in row.values()] for row in table.to_pylist()]
        seen[f"{key}_types"] = [str(t) for t in table.schema.types]

# A transaction, as psycopg opens one by default: accepted, read only.
with psycopg.connect(
    host=HOST, port=PORT, user="analyst", dbname="allot", password=tenant, sslmode=SSLMODE
) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM usage_events")
        seen["in_transaction"] = rows(cur)
    conn.commit()

with connect(whale) as conn, conn.cursor() as cur:
    cur.execute(TOTALS)
    seen["whale_totals"] = rows(cur)
with connect(whale) as conn, conn.cursor(binary=True) as cur:
    cur.execute(TOTALS)
    seen["whale_totals_binary"] = rows(cur)

with connect(admin) as conn, conn.cursor() as cur:
    cur.execute(TOTALS)
    seen["admin_totals"] = rows(cur)
    cur.execute("SELECT table_name FROM information_schema.tables ORDER BY 1")
    seen["admin_information_schema"] = rows(cur)

# The isolation corpus: each refused with the rule it broke.
corpus = {
    "join_rejected": "SELECT * FROM usage_events u JOIN rejected_events r ON true",
    "catalog_join": "SELECT * FROM pg_catalog.pg_class c JOIN rejected_events r ON true",
    "qualified_other": "SELECT * FROM allot.public.rejected_events",
    "copy_to_file": "COPY usage_events TO '/tmp/allot-copy.txt'",
    "copy_query_to_file": "COPY (SELECT * FROM usage_events) TO '/tmp/allot-copy.txt'",
    "copy_from": "COPY usage_events FROM STDIN",
    "copy_program": "COPY usage_events TO PROGRAM 'cat /etc/passwd'",
    "set_search_path": "SET search_path = other",
    "set_work_mem": "SET work_mem = '1GB'",
    "set_engine": "SET datafusion.execution.target_partitions = 64",
    "set_role": "SET ROLE admin",
    "set_timeout_up": "SET statement_timeout = '1h'",
    "multi_statement": "SELECT 1; SELECT * FROM rejected_events",
    "multi_set": "SET statement_timeout = 0; SELECT 1",
    "file_function": "SELECT * FROM read_parquet('/etc/passwd')",
    "file_path": "SELECT * FROM '/etc/passwd'",
    "table_function": "SELECT * FROM generate_series(1, 10)",
    "ddl": "CREATE TABLE x AS SELECT * FROM usage_events",
    "external": "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
}
for key, sql in corpus.items():
    attempt(f"corpus_{key}", tenant, sql)
attempt(
    "corpus_param_table",
    tenant,
    "SELECT * FROM usage_events WHERE tenant_id = %s",
    ("x' UNION SELECT * FROM rejected_events --",),
)



def copied(key, token, sql):
    """Runs `COPY … TO STDOUT` on a fresh connection; records its rows (text
    format) or its refusal."""
    try:
        with connect(token) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
            seen[key] = [list(row) for row in copy.rows()]
    except psycopg.Error as error:
        seen[key] = refusal(error)


# COPY TO STDOUT is the query's answer, in the caller's scope.
copied(
    "copy_table",
    tenant,
    "COPY usage_events (tenant_id, value) TO STDOUT",
)
copied(
    "copy_query",
    tenant,
    "COPY (SELECT tenant_id, sum(value) AS total FROM usage_events GROUP BY tenant_id) "
    "TO STDOUT",
)
with connect(tenant) as conn, conn.cursor() as cur:
    with cur.copy(
        "COPY (SELECT tenant_id, sum(value) AS total FROM usage_events GROUP BY tenant_id) "
        "TO STDOUT (FORMAT csv, HEADER)"
    ) as copy:
        seen["copy_csv"] = b"".join(bytes(data) for data in copy).decode()
copied("copy_rejected", tenant, "COPY rejected_events TO STDOUT")
copied(
    "copy_join_rejected",
    tenant,
    "COPY (SELECT * FROM usage_events u JOIN rejected_events r ON true) TO STDOUT",
)
copied("copy_option", tenant, "COPY usage_events TO STDOUT (FORMAT csv, DELIMITER ';')")

# Logins that must fail.
for key, token in [
    ("login_wrong", "not-a-token"),
    ("login_empty", ""),
    ("login_expired", os.environ["ALLOT_EXPIRED_TOKEN"]),
    ("login_foreign", os.environ["ALLOT_FOREIGN_TOKEN"]),
    ("login_finance", os.environ["ALLOT_FINANCE_TOKEN"]),
]:
    attempt(key, token, "SELECT 1")
# The password is a token: never taken over a connection without TLS.
attempt("login_plaintext", tenant, "SELECT 1", sslmode="disable")

# A cancel stops a running statement, and the connection goes on.
with connect(tenant) as conn:
    timer = threading.Timer(1.0, conn.cancel_safe)
    started = time.monotonic()
    timer.start()
    try:
        with conn.cursor() as cur:
            cur.execute(ENDLESS)
            seen["cancel"] = rows(cur)
    except psycopg.Error as error:
        seen["cancel"] = refusal(error)
    seen["cancel_seconds"] = time.monotonic() - started
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        seen["after_cancel"] = rows(cur)

# statement_timeout, never above the server's limit, ends a statement.
with connect(tenant) as conn, conn.cursor() as cur:
    cur.execute("SET statement_timeout = '1s'")
    started = time.monotonic()
    try:
        cur.execute(ENDLESS)
        seen["statement_timeout"] = rows(cur)
    except psycopg.Error as error:
        seen["statement_timeout"] = refusal(error)
    seen["statement_timeout_seconds"] = time.monotonic() - started

# The limits, each a clear error; the server stays up.
attempt("limit_time", tenant, ENDLESS)
attempt(
    "limit_memory",
    tenant,
    "SELECT a.event_id, b.event_id, c.event_id FROM usage_events a, usage_events b, "
    "usage_events c ORDER BY 1, 2, 3",
)
attempt("limit_rows", tenant, "SELECT a.value FROM usage_events a, usage_events b")
attempt("after_limits", tenant, "SELECT 1 AS one")

# Connections past pg_max_connections are refused with 53300, cleanly.
most = int(os.environ["ALLOT_PG_MAX_CONNECTIONS"])
held = [connect(tenant) for _ in range(most)]
beyond = []
for _ in range(100):
    try:
        connect(tenant).close()
        beyond.append("accepted")
    except psycopg.Error as error:
        beyond.append(refusal(error))
seen["beyond_max_connections"] = beyond
for conn in held:
    conn.close()
time.sleep(0.5)
attempt("after_max_connections", tenant, "SELECT 1 AS one")

print(json.dumps(seen))
