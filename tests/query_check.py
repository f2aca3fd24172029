#!/usr/bin/env python3
"""Computes counter quantities of a month from an allot lake with DuckDB, independently of allot.

    query_check.py LAKE_DIR YYYY-MM

Run it with the python of scripts/py-env. It lists the active files of the Delta table
LAKE_DIR/usage_events with the deltalake package, reads them with DuckDB (hive partitions
give tenant_id and day), keeps one row per (tenant_id, day, event_id) -- the first
ingested copy, by (ingested_at, source) -- and prints, per tenant and counter metric of
the built-in catalog, the billing quantity of the month: the exact raw sum divided by the
divisor, rounded half-to-even to 12 places. One line per figure:

    tenant_id,metric,quantity
"""

import decimal
import sys

import duckdb
from deltalake import DeltaTable

DIVISORS = {"compute_seconds": decimal.Decimal(3600), "egress_bytes": decimal.Decimal(1073741824)}
EXACT = decimal.Context(prec=80)
TWELVE = decimal.Decimal("1e-12")


def main() -> int:
    lake, month = sys.argv[1], sys.argv[2]
    year, mon = (int(part) for part in month.split("-"))
    start = f"{year:04d}-{mon:02d}-01"
    end = f"{year + (mon == 12):04d}-{mon % 12 + 1:02d}-01"
    files = [uri.removeprefix("file://") for uri in DeltaTable(f"{lake}/usage_events").file_uris()]
    if not files:
        return 0
    con = duckdb.connect()
    rows = con.execute(
        """
        WITH events AS (
            SELECT tenant_id, day, event_id, metric, value, ts,
                   row_number() OVER (PARTITION BY tenant_id, day, event_id
                                      ORDER BY ingested_at, source) AS copy
            FROM read_parquet(?, hive_partitioning = true, hive_types = {'tenant_id': VARCHAR, 'day': DATE})
        )
        SELECT tenant_id, metric, CAST(sum(value) AS VARCHAR)
        FROM events
        WHERE copy = 1 AND ts >= CAST(? AS TIMESTAMPTZ) AND ts < CAST(? AS TIMESTAMPTZ)
          AND metric IN ('compute_seconds', 'egress_bytes')
        GROUP BY tenant_id, metric
        ORDER BY tenant_id, metric
        """,
        [files, start + " 00:00:00+00", end + " 00:00:00+00"],
    ).fetchall()
    for tenant, metric, raw in rows:
        quantity = EXACT.divide(decimal.Decimal(raw), DIVISORS[metric])
        quantity = quantity.quantize(TWELVE, rounding=decimal.ROUND_HALF_EVEN, context=EXACT)
        print(f"{tenant},{metric},{quantity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
