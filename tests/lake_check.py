#!/usr/bin/env python3
"""Checks an allot lake against the JSON Lines file that was ingested into it.

    lake_check.py LAKE_DIR EVENTS_JSONL

Run it with the python of scripts/py-env. It lists the active files of the Delta table
LAKE_DIR/usage_events with the deltalake package, reads them with DuckDB, and checks:

  a. every file sits under usage_events/tenant_id=<id>/day=<YYYY-MM-DD>/, and <id> and
     <day> are the rows' tenant_id and the UTC date of their ts;
  b. the table holds one row per (tenant_id, event_id);
  c. every valid event of the file (the first one, for a repeated (tenant_id, event_id))
     is in the table with its exact value (Decimal(38, 9), rounded half-to-even) and
     its ts to the microsecond;
  d. the table has exactly as many rows as the file has distinct valid events.

It prints "lake_check: N rows ok", or the first problems and exits 1.
"""

import datetime as dt
import decimal
import json
import os
import re
import sys
import unicodedata
import urllib.parse

import duckdb
import pyarrow as pa
from deltalake import DeltaTable

METRICS = {"compute_seconds", "egress_bytes", "storage_bytes"}
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
PATH_RE = re.compile(r"tenant_id=([^/]+)/day=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet")
NANO = decimal.Decimal("1e-9")
EXACT = decimal.Context(prec=60)  # room for 20 integer and 9 fractional digits
VALUE_LIMIT = decimal.Decimal("1e20")
MAX_FUTURE_SKEW = dt.timedelta(days=1)  # default max_future_skew
MAX_EVENT_BYTES = 1 << 20  # default ingest.max_event_bytes
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# docs/reference.md#event-format: ts from 1970-01-01T00:00:00Z to 2261-12-31T23:59:59Z.
END_OF_TS_RANGE = dt.datetime(2262, 1, 1, tzinfo=dt.timezone.utc)
BATCH = 200_000  # expected events handed to DuckDB at a time
SHOW = 10  # problems printed before giving up

EXPECTED_SCHEMA = pa.schema([
    ("line", pa.int64()),
    ("tenant_id", pa.string()),
    ("event_id", pa.string()),
    ("ts_us", pa.int64()),
    ("value", pa.decimal128(38, 9)),
])


def valid_event(line, now):
    """(tenant_id, event_id, ts_us, value) of a valid event line, else None.

    Follows the product's rules closely enough for generated test input; it does not
    try to name the reason a line is rejected.
    """
    if len(line) > MAX_EVENT_BYTES:
        return None
    try:
        obj = json.loads(line.decode("utf-8"), parse_float=decimal.Decimal,
                         parse_int=decimal.Decimal)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    if obj.get("specversion") == "1.0":  # structured CloudEvents
        data = obj.get("data")
        if not isinstance(data, dict):
            return None
        obj = dict(data, event_id=obj.get("id"), tenant_id=obj.get("subject"), ts=obj.get("time"))

    event_id, tenant, ts, metric, value = (
        obj.get(k) for k in ("event_id", "tenant_id", "ts", "metric", "value"))
    if not (isinstance(event_id, str) and 1 <= len(event_id.encode()) <= 128
            and not any(unicodedata.category(c) == "Cc" for c in event_id)):
        return None
    if not (isinstance(tenant, str) and TENANT_RE.fullmatch(tenant)):
        return None
    if metric not in METRICS:
        return None
    if not (isinstance(value, decimal.Decimal) and value.is_finite()
            and 0 <= value < VALUE_LIMIT):
        return None
    if not (isinstance(ts, str) and TS_RE.fullmatch(ts)):
        return None
    try:
        when = parse_ts(ts)
    except ValueError:
        return None
    if when - now > MAX_FUTURE_SKEW or not EPOCH <= when < END_OF_TS_RANGE:
        return None
    if not optional_fields_ok(obj):
        return None
    delta = when - EPOCH
    ts_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    value = value.quantize(NANO, rounding=decimal.ROUND_HALF_EVEN, context=EXACT)
    return tenant, event_id, ts_us, value


def parse_ts(ts):
    """An RFC 3339 timestamp (already matched by TS_RE) as an aware datetime; digits
    past the microsecond are dropped."""
    date, clock = ts[:10], ts[11:]
    if clock[-1] in "Zz":
        clock, offset = clock[:-1], "+00:00"
    else:
        clock, offset = clock[:-6], clock[-6:]
    whole, _, fraction = clock.partition(".")
    return dt.datetime.fromisoformat(f"{date}T{whole}.{fraction[:6].ljust(6, '0')}{offset}")


def optional_fields_ok(obj):
    for key, limit in (("resource", 256), ("region", 64), ("service", 64)):
        v = obj.get(key)
        if v is not None and not (isinstance(v, str) and len(v.encode()) <= limit):
            return False
    version = obj.get("schema_version")
    if version is not None and not (isinstance(version, decimal.Decimal) and version == 1
                                    and version.as_tuple().exponent == 0):
        return False
    labels = obj.get("labels")
    if labels is None:
        return True
    return (isinstance(labels, dict) and len(labels) <= 32
            and all(isinstance(v, str) and len(k.encode()) <= 64 and len(v.encode()) <= 256
                    for k, v in labels.items()))


def load_expected(con, events_path):
    """Creates table `expected`: one row per valid line of the file."""
    con.execute("CREATE TABLE expected (line BIGINT, tenant_id VARCHAR, event_id VARCHAR, "
                "ts_us BIGINT, value DECIMAL(38, 9))")
    now = dt.datetime.now(dt.timezone.utc)
    cols = ([], [], [], [], [])

    def flush():
        batch = pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(cols, EXPECTED_SCHEMA)],
                                     schema=EXPECTED_SCHEMA)
        con.register("batch", batch)
        con.execute("INSERT INTO expected SELECT * FROM batch")
        con.unregister("batch")
        for c in cols:
            c.clear()

    lines = 0
    with open(events_path, "rb") as f:
        for lines, raw in enumerate(f, start=1):
            event = valid_event(raw.rstrip(b"\r\n"), now)
            if event is None:
                continue
            cols[0].append(lines)
            for col, x in zip(cols[1:], event):
                col.append(x)
            if len(cols[0]) >= BATCH:
                flush()
    flush()
    return lines


def active_files(lake):
    """Local paths of the table's active files, with the problems found in their layout."""
    table_dir = os.path.realpath(os.path.join(lake, "usage_events"))
    if not DeltaTable.is_deltatable(table_dir):
        return [], [f"{table_dir} is not a Delta table"]
    table = DeltaTable(table_dir)
    problems = []
    partitions = table.metadata().partition_columns
    if list(partitions) != ["tenant_id", "day"]:
        problems.append(f"table is partitioned by {partitions}, not ['tenant_id', 'day']")
    paths = []
    for uri in table.file_uris():
        path = urllib.parse.unquote(urllib.parse.urlparse(uri).path) if "://" in uri else uri
        path = os.path.realpath(path)
        rel = os.path.relpath(path, table_dir)
        m = PATH_RE.fullmatch(rel)
        if not m or not TENANT_RE.fullmatch(m.group(1)):
            problems.append(f"file outside tenant_id=<id>/day=<YYYY-MM-DD>/: {path}")
        paths.append(path)
    return paths, problems


def check(lake, events_path):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lines = load_expected(con, events_path)
    paths, problems = active_files(lake)

    if paths:
        files = "[" + ", ".join(sql_string(p) for p in paths) + "]"
        con.execute(f"""
            CREATE TABLE lake AS
            SELECT tenant_id, event_id, epoch_us(ts) AS ts_us, value,
                   CAST(make_timestamp(epoch_us(ts)) AS DATE) AS ts_day,
                   regexp_extract(filename, 'tenant_id=([^/]+)/day=', 1) AS path_tenant,
                   regexp_extract(filename, '/day=([0-9-]+)/', 1) AS path_day
            FROM read_parquet({files}, hive_partitioning = true, filename = true,
                              hive_types = {{'tenant_id': VARCHAR, 'day': DATE}})
        """)
        value_type = con.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'lake' AND column_name = 'value'").fetchone()[0]
        if value_type != "DECIMAL(38,9)":
            problems.append(f"value column is {value_type}, not DECIMAL(38,9)")
    else:
        con.execute("CREATE TABLE lake AS SELECT * FROM expected WHERE false")

    def report(sql, fmt):
        for row in con.execute(sql + f" LIMIT {SHOW}").fetchall():
            problems.append(fmt(*row))

    if paths:
        report("""SELECT tenant_id, event_id, path_tenant, path_day, ts_day FROM lake
                  WHERE path_tenant IS DISTINCT FROM tenant_id
                     OR path_day IS DISTINCT FROM CAST(ts_day AS VARCHAR)""",
               lambda t, e, pt, pd, d: f"({t}, {e}) on {d} is in tenant_id={pt}/day={pd}")
    report("""SELECT tenant_id, event_id, count(*) FROM lake
              GROUP BY tenant_id, event_id HAVING count(*) > 1""",
           lambda t, e, n: f"({t}, {e}) has {n} rows")

    con.execute("""
        CREATE TABLE wanted AS SELECT * FROM expected
        QUALIFY row_number() OVER (PARTITION BY tenant_id, event_id ORDER BY line) = 1
    """)
    report("""SELECT w.line, w.tenant_id, w.event_id FROM wanted w
              ANTI JOIN lake l USING (tenant_id, event_id) ORDER BY w.line""",
           lambda n, t, e: f"line {n}: ({t}, {e}) is missing from the lake")
    report("""SELECT l.tenant_id, l.event_id FROM lake l
              ANTI JOIN wanted w USING (tenant_id, event_id) ORDER BY ALL""",
           lambda t, e: f"({t}, {e}) is in the lake but is no valid event of the file")
    report("""SELECT w.line, w.tenant_id, w.event_id, w.value, l.value, w.ts_us, l.ts_us
              FROM wanted w JOIN lake l USING (tenant_id, event_id)
              WHERE w.value IS DISTINCT FROM l.value OR w.ts_us IS DISTINCT FROM l.ts_us
              ORDER BY w.line""",
           lambda n, t, e, wv, lv, wt, lt: f"line {n}: ({t}, {e}) sent value {wv} at {us(wt)}, "
                                           f"lake has {lv} at {us(lt)}")

    rows = con.execute("SELECT count(*) FROM lake").fetchone()[0]
    wanted = con.execute("SELECT count(*) FROM wanted").fetchone()[0]
    if rows != wanted:
        problems.append(f"lake has {rows} rows, the file has {wanted} distinct valid events "
                        f"(of {lines} lines)")
    return rows, problems


def sql_string(text):
    return "'" + text.replace("'", "''") + "'"


def us(micros):
    if micros is None:
        return None
    return (EPOCH + dt.timedelta(microseconds=micros)).isoformat(timespec="microseconds")


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    rows, problems = check(argv[0], argv[1])
    if problems:
        print(f"lake_check: {len(problems)} problem(s), first ones:", file=sys.stderr)
        for p in problems[:SHOW * 2]:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"lake_check: {rows} rows ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
