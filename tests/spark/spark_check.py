#!/usr/bin/env python3
"""Reads an allot lake with Apache Spark (local mode, Delta Lake's own reader) and
checks that it gets allot's figures.

    spark_check.py --lake DIR --config allot.toml --month YYYY-MM --jars JAR,JAR \\
                   --invoice invoice.json --allot-sums sums.json --allot-rows N

Run it with the python of `scripts/py-env spark`; scripts/spark-test prepares every
argument. Spark loads `DIR/usage_events` with `spark.read.format("delta")`, as any
outside engine would, and checks:

  1. the table is partitioned by tenant_id and day, has the columns of
     docs/reference.md#lake-tables with `value` as decimal(38,9), and every row lies in the partition of its tenant and
     of the UTC date of its ts;
  2. it holds as many rows as allot's (deduplicated) usage_events;
  3. no two rows are copies of one event (docs/reference.md#duplicates: the same
     tenant_id and event_id, ts less than ingest.dedup_window apart): after `allot compact` a reader that
     sums raw rows counts every event once;
  4. per tenant and counter metric, the month's sum of value, in exact decimals,
     equals allot's raw sum (`allot sql`);
  5. that sum over the metric's divisor, rounded half-to-even to 12 places
     (docs/reference.md#periods-and-precision), equals the quantity of the tenant's invoice lines of the metric.

Sums are Spark decimals collected as Python Decimals, never floats. It prints one line
per check and "spark-check: N passed, M failed"; it exits 1 when any check fails.
"""

import argparse
import datetime as dt
import decimal
import json
import re
import sys
import time
import tomllib
import traceback

from pyspark.sql import SparkSession
from pyspark.sql.types import DecimalType

EXACT = decimal.Context(prec=80)  # room for a 38-digit sum over any divisor, to 12 places
# Quantities are rounded to 12 places: docs/reference.md#periods-and-precision.
QUANTITY_PLACES = decimal.Decimal("1e-12")
COLUMNS = ["event_id", "ts", "metric", "value", "resource", "region", "service", "labels",
           "schema_version", "source", "ingested_at", "tenant_id", "day"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", required=True)
    p.add_argument("--config", required=True, help="the allot.toml the lake was written with")
    p.add_argument("--month", required=True, help="the billing period, YYYY-MM")
    p.add_argument("--jars", required=True, help="comma-separated Delta jars for spark.jars")
    p.add_argument("--invoice", required=True, help="`allot invoice --format json` output")
    p.add_argument("--allot-sums", required=True,
                   help="`allot sql --format json` output: tenant_id, metric, total")
    p.add_argument("--allot-rows", required=True, type=int,
                   help="rows of allot's deduplicated usage_events")
    p.add_argument("--driver-memory", default="512m")
    return p.parse_args(argv)


def duration_seconds(text):
    """An allot duration (`35d`, `12h`, `30m`, `45s`) in seconds."""
    m = re.fullmatch(r"(\d+)(d|h|m|s)", text)
    if not m:
        raise ValueError(f"cannot read the duration {text!r}")
    return int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[m.group(2)]


def catalog(config):
    """Counter metrics and their divisors, and the dedup window, from allot.toml. The
    test's config names every metric it uses, so no built-in default is assumed."""
    counters = {
        name: decimal.Decimal(m["divisor"])
        for name, m in config.get("metrics", {}).items()
        if m.get("kind") == "counter"
    }
    window = duration_seconds(config.get("ingest", {}).get("dedup_window", "35d"))
    return counters, window


def session(jars, memory):
    # Local mode on two threads, bound to the loopback interface with no UI: the check
    # talks to nothing outside this machine. No Hive metastore, no Ivy: the Delta jars
    # are files on disk.
    return (
        SparkSession.builder.master("local[2]")
        .appName("allot-spark-check")
        .config("spark.jars", jars)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.driver.memory", memory)
        # A short run on a few rows: the JVM's quick compiler and no generated code
        # start faster than the settings made for long jobs.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.ansi.enabled", "true")
        .getOrCreate()
    )


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.started = time.monotonic()

    def report(self, name, problems, ok_text):
        name = f"{name} ({time.monotonic() - self.started:.1f} s)"
        if problems:
            self.failed += 1
            print(f"spark-check: FAIL {name}", flush=True)
            for line in problems[:20]:
                print(f"  {line}", flush=True)
            if len(problems) > 20:
                print(f"  … and {len(problems) - 20} more", flush=True)
        else:
            self.passed += 1
            print(f"spark-check: ok   {name}: {ok_text}", flush=True)


def main(argv):
    a = parse_args(argv)
    with open(a.config, "rb") as f:
        counters, window_s = catalog(tomllib.load(f))
    with open(a.invoice) as f:
        invoices = json.load(f)
    with open(a.allot_sums) as f:
        allot_sums = json.load(f)
    start = dt.datetime.strptime(a.month + "-01", "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    table_path = a.lake.rstrip("/") + "/usage_events"

    checks = Checks()
    spark = session(a.jars, a.driver_memory)
    spark.sparkContext.setLogLevel("ERROR")
    print(f"spark-check: Spark {spark.version} started in "
          f"{time.monotonic() - checks.started:.1f} s", flush=True)
    from delta.tables import DeltaTable  # needs the running session's Delta jars

    # 1. Layout: partition columns, columns and types, rows in their own partition.
    problems = []
    detail = DeltaTable.forPath(spark, table_path).detail().first()
    if list(detail["partitionColumns"]) != ["tenant_id", "day"]:
        problems.append(f"partition columns {list(detail['partitionColumns'])}, "
                        "expected ['tenant_id', 'day']")
    events = spark.read.format("delta").load(table_path)
    if sorted(events.columns) != sorted(COLUMNS):
        problems.append(f"columns {sorted(events.columns)}, expected {sorted(COLUMNS)}")
    value_type = events.schema["value"].dataType if "value" in events.columns else None
    if value_type != DecimalType(38, 9):
        problems.append(f"value is {value_type}, expected decimal(38,9)")
    events.createOrReplaceTempView("usage_events")
    misplaced = spark.sql("""
        SELECT tenant_id, day, event_id, ts, input_file_name() AS file
        FROM usage_events
        WHERE CAST(day AS STRING) <> CAST(to_date(ts) AS STRING)
           OR NOT contains(input_file_name(),
                           concat('/tenant_id=', tenant_id, '/day=', CAST(day AS STRING), '/'))
    """).collect()
    problems += [f"row {r.tenant_id}/{r.event_id} (ts {r.ts}) lies in {r.file}" for r in misplaced]
    checks.report("layout", problems,
                  f"partitioned by {list(detail['partitionColumns'])}, {detail['numFiles']} files, "
                  f"value {value_type.simpleString()}")

    # 2. Row count.
    rows = events.count()
    checks.report("rows", [] if rows == a.allot_rows else
                  [f"Spark reads {rows} rows, allot's usage_events has {a.allot_rows}"],
                  f"{rows} rows, as allot's usage_events")

    # 3. No copies of one event within the dedup window.
    # Sorted by ts, any two copies within the window include two neighbours within it.
    copies = spark.sql(f"""
        SELECT tenant_id, event_id, ts_before, ts FROM (
          SELECT tenant_id, event_id, ts,
                 lag(ts) OVER (PARTITION BY tenant_id, event_id ORDER BY ts) AS ts_before
          FROM usage_events)
        WHERE ts_before IS NOT NULL
          AND unix_micros(ts) - unix_micros(ts_before) < {window_s * 1_000_000}
    """).collect()
    repeated = spark.sql("""
        SELECT count(*) AS ids FROM (
          SELECT tenant_id, event_id FROM usage_events
          GROUP BY tenant_id, event_id HAVING count(*) > 1)
    """).first()["ids"]
    checks.report("distinct events",
                  [f"{r.tenant_id}/{r.event_id}: copies at {r.ts_before} and {r.ts}" for r in copies],
                  f"no copies within {window_s // 86400}d ({repeated} ids repeat further apart,"
                  " as distinct events)")

    # 4 and 5. Per tenant and counter metric, the month's exact sum.
    metric_list = ", ".join(f"'{m}'" for m in sorted(counters))
    spark_sums = {
        (r.tenant_id, r.metric): r.total
        for r in spark.sql(f"""
            SELECT tenant_id, metric, sum(value) AS total
            FROM usage_events
            WHERE ts >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'
              AND ts < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'
              AND metric IN ({metric_list})
            GROUP BY tenant_id, metric
        """).collect()
    }
    spark.stop()
    for key, total in spark_sums.items():
        if not isinstance(total, decimal.Decimal):
            sys.exit(f"spark-check: the sum of {key} came back as {type(total).__name__}, "
                     "not an exact decimal")

    problems = []
    cols = allot_sums["columns"]
    allot_raw = {
        (row[cols.index("tenant_id")], row[cols.index("metric")]):
            decimal.Decimal(row[cols.index("total")])
        for row in allot_sums["rows"]
        if row[cols.index("metric")] in counters
    }
    for key in sorted(set(spark_sums) | set(allot_raw)):
        s, w = spark_sums.get(key), allot_raw.get(key)
        if s != w:
            problems.append(f"{key[0]} {key[1]}: Spark sums {s}, allot sums {w}")
    checks.report("raw sums", problems,
                  f"{len(spark_sums)} tenant-metric sums of {a.month} equal allot's, exactly")

    problems = []
    invoiced = {}
    for invoice in invoices:
        for line in invoice["lines"]:
            if line.get("kind", "usage") == "usage" and line["metric"] in counters:
                key = (line["tenant_id"], line["metric"])
                invoiced[key] = invoiced.get(key, decimal.Decimal(0)) + decimal.Decimal(line["quantity"])
    expected = {}
    for key, total in spark_sums.items():
        quantity = EXACT.divide(total, counters[key[1]]).quantize(
            QUANTITY_PLACES, rounding=decimal.ROUND_HALF_EVEN, context=EXACT)
        # An invoice has lines with quantity > 0 only: docs/reference.md#invoice-lines.
        if quantity > 0:
            expected[key] = quantity
    for key in sorted(set(expected) | set(invoiced)):
        e, i = expected.get(key), invoiced.get(key)
        if e != i:
            problems.append(f"{key[0]} {key[1]}: Spark's sum {spark_sums.get(key)} / "
                            f"{counters[key[1]]} = {e}, the invoice says {i}")
    checks.report("invoice quantities", problems,
                  f"{len(expected)} tenant-metric quantities equal the invoice's, exactly")

    print(f"spark-check: {checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # Spark, Delta or a bad input file: one line, details on stderr
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"spark-check: error: {type(e).__name__}: {first}", flush=True)
        sys.exit(2)
