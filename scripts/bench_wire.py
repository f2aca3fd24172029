"""The clients of scripts/bench-wire: one tenant's month fetched over each wire and
read by DuckDB from the lake's files, then small queries from many clients at once.
Prints a table of rows/s, time to first row and latency percentiles."""

import argparse
import glob
import json
import threading
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
from adbc_driver_flightsql import DatabaseOptions

MONTH = (
    "SELECT * FROM usage_events WHERE ts >= TIMESTAMP '2026-01-01 00:00:00' "
    "AND ts < TIMESTAMP '2026-02-01 00:00:00'"
)
SMALL = (
    "SELECT count(*) AS n FROM usage_events WHERE ts >= TIMESTAMP '2026-01-15 00:00:00' "
    "AND ts < TIMESTAMP '2026-01-16 00:00:00'"
)


def flight_connect(uri, token):
    return flight_sql.connect(
        uri,
        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
        autocommit=True,
    )


def read_batches(reader, start):
    """(rows, seconds to the first row, seconds in all) of an Arrow batch
    reader whose statement started at `start`."""
    rows, first = 0, None
    for batch in reader:
        if first is None and batch.num_rows:
            first = time.perf_counter() - start
        rows += batch.num_rows
    return rows, first, time.perf_counter() - start


def fetch_flight(uri, token, sql):
    """(rows, seconds to the first row, seconds in all) of `sql` over Flight SQL."""
    with flight_connect(uri, token) as conn, conn.cursor() as cursor:
        start = time.perf_counter()
        cursor.execute(sql)
        return read_batches(cursor.fetch_record_batch(), start)


def fetch_pg(address, token, sql):
    """The same over the PostgreSQL wire, rows streamed as they come."""
    import psycopg

    host, port = address.rsplit(":", 1)
    with psycopg.connect(
        host=host, port=port, user="bench", password=token, dbname="allot", sslmode="disable"
    ) as conn:
        cursor = conn.cursor()
        start = time.perf_counter()
        rows, first = 0, None
        for _ in cursor.stream(sql):
            if first is None:
                first = time.perf_counter() - start
            rows += 1
        return rows, first, time.perf_counter() - start


def fetch_http(base, token, sql):
    """The same as CSV from POST /v1/sql."""
    request = urllib.request.Request(
        f"{base}/v1/sql",
        data=json.dumps({"sql": sql}).encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "text/csv",
        },
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as answer:
        header = answer.readline()
        first_line = answer.readline()
        first = time.perf_counter() - start
        rest = answer.read()
    assert header, "an answer"
    rows = (1 if first_line else 0) + rest.count(b"\n")
    return rows, first, time.perf_counter() - start


def fetch_duckdb(lake, tenant, sql):
    """The same statement by DuckDB over the tenant's Parquet files."""
    files = sorted(glob.glob(f"{lake}/usage_events/tenant_id={tenant}/*/*.parquet"))
    conn = duckdb.connect()
    start = time.perf_counter()
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    conn.execute(f"CREATE VIEW usage_events AS SELECT * FROM read_parquet([{listed}])")
    return read_batches(conn.sql(sql).to_arrow_reader(8192), start)


def load(name, connect, run, tokens, duration):
    """Each token's client runs SMALL on its own connection for `duration` s."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.perf_counter() + duration

    def client(token):
        mine = []
        try:
            conn = connect(token)
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                run(conn)
                mine.append(time.perf_counter() - start)
        except Exception as error:  # reported with the figures, not hidden
            with lock:
                errors.append(str(error)[:200])
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000
    return {
        "wire": name,
        "queries_per_s": len(latencies) / duration,
        "p50_ms": pick(0.50) if latencies else float("nan"),
        "p99_ms": pick(0.99) if latencies else float("nan"),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--flight", required=True)
    parser.add_argument("--pg", default="")
    parser.add_argument("--lake", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--duration", type=float, default=20)
    args = parser.parse_args()
    tokens = open(args.tokens).read().split()
    token, tenant = tokens[0], "t0001"

    fetches = [
        ("DuckDB, local Parquet", lambda: fetch_duckdb(args.lake, tenant, MONTH)),
        ("Flight SQL (ADBC, Arrow)", lambda: fetch_flight(args.flight, token, MONTH)),
        ("POST /v1/sql (CSV)", lambda: fetch_http(args.http, token, MONTH)),
    ]
    if args.pg:
        fetches.append(("PostgreSQL wire (psycopg)", lambda: fetch_pg(args.pg, token, MONTH)))
    print(f"one tenant's month ({tenant}), best of 3:")
    print(f"{'client':<28} {'rows':>9} {'rows/s':>12} {'first row s':>12} {'total s':>9} {'vs DuckDB':>9}")
    duck_rate = None
    for name, fetch in fetches:
        best = min((fetch() for _ in range(3)), key=lambda r: r[2])
        rows, first, total = best
        rate = rows / total if total else float("nan")
        duck_rate = duck_rate or rate
        print(f"{name:<28} {rows:>9,} {rate:>12,.0f} {first or float('nan'):>12.3f} {total:>9.3f} {rate / duck_rate:>9.2f}")

    def flight_run(conn):
        with conn.cursor() as cursor:
            cursor.execute(SMALL)
            cursor.fetch_arrow_table()

    loads = [
        load("Flight SQL", lambda t: flight_connect(args.flight, t), flight_run, tokens, args.duration),
    ]
    if args.pg:
        import psycopg

        host, port = args.pg.rsplit(":", 1)

        def pg_connect(t):
            return psycopg.connect(
                host=host, port=port, user="bench", password=t, dbname="allot", sslmode="disable"
            )

        def pg_run(conn):
            with conn.cursor() as cursor:
                cursor.execute(SMALL)
                cursor.fetchall()

        loads.append(load("PostgreSQL wire", pg_connect, pg_run, tokens, args.duration))
    loads.append(
        load("POST /v1/sql", lambda t: t, lambda t: fetch_http(args.http, t, SMALL), tokens, args.duration)
    )
    print(f"\n{len(tokens)} clients at once, one tenant each, {args.duration:.0f} s each:")
    print(f"{'wire':<20} {'queries/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for row in loads:
        print(
            f"{row['wire']:<20} {row['queries_per_s']:>10.1f} {row['p50_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['errors']:>7}  {row['first_error']}"
        )


if __name__ == "__main__":
    main()
