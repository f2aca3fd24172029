"""Talks to allot's Arrow Flight SQL endpoint as an analyst's notebook does, with
the ADBC Flight SQL driver (a client written apart from allot), and prints what
it saw as one JSON object for the Rust test to check.

    python flight_sql_check.py URI

The tokens come from the environment: ALLOT_TENANT_TOKEN, ALLOT_ADMIN_TOKEN,
ALLOT_FINANCE_TOKEN.
"""

import json
import os
import sys

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions

uri = sys.argv[1]
QUERY = "SELECT tenant_id, sum(value) AS total FROM usage_events GROUP BY tenant_id ORDER BY tenant_id"


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
    out["tenant_ddl"] = error_of(lambda: query(conn, "DROP TABLE usage_events"))
    # The sandbox's limits hold over the wire: a statement built to overflow
    # the planner's stack, and an answer past the row cap, which is streamed
    # and must end in the error, not look complete.
    out["tenant_deep"] = error_of(lambda: query(conn, "SELECT " + "1+" * 20000 + "1"))
    out["tenant_rows"] = error_of(
        lambda: query(conn, "SELECT n FROM (SELECT unnest(range(0, 250000)) AS n) t")
    )
    out["tenant_after_limits"] = query(conn, "SELECT 1 AS one")["rows"]

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
out["forged"] = error_of(lambda: query(bearer(tenant[:-4] + "AAAA"), QUERY))
out["no_token"] = error_of(lambda: query(flight_sql.connect(uri), QUERY))

# A caller without a valid token, flooding: limited by its address before it
# is audited, so it cannot fill the audit log.
out["flood"] = [error_of(lambda: query(bearer("forged"), QUERY)) for _ in range(40)]

print(json.dumps(out))
