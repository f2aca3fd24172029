#!/usr/bin/env python3
"""Computes the figures of max, latest and unique_count metrics of a month from an allot
lake with DuckDB, independently of allot.

    meter_check.py LAKE_DIR YYYY-MM METRIC:KIND[:FIELD] ...

Run it with the python of scripts/py-env. KIND is max, latest or unique_count; FIELD (for
unique_count) is resource, region, service or labels.KEY. It lists the active files of the
Delta table LAKE_DIR/usage_events with the deltalake package, reads them with DuckDB, keeps
one row per (tenant_id, day, event_id) -- the first ingested copy, by (ingested_at,
source) -- and prints per tenant and metric with events in the month its figure: the
largest value, the value of the last event by (ts, event_id), or the number of distinct
non-null values of the field, each with 12 decimal places (every divisor is 1). One line
per figure:

    tenant_id,metric,figure
"""

import decimal
import sys

import duckdb
from deltalake import DeltaTable

TWELVE = decimal.Decimal("1e-12")


def field_expression(field: str) -> str:
    if field in ("resource", "region", "service"):
        return field
    label = field.removeprefix("labels.")
    if label == field or not label.isidentifier():
        raise SystemExit(f"unsupported field {field!r}")
    return f"labels['{label}']"


def main() -> int:
    lake, month, meters = sys.argv[1], sys.argv[2], sys.argv[3:]
    year, mon = (int(part) for part in month.split("-"))
    start = f"{year:04d}-{mon:02d}-01 00:00:00+00"
    end = f"{year + (mon == 12):04d}-{mon % 12 + 1:02d}-01 00:00:00+00"
    files = [uri.removeprefix("file://") for uri in DeltaTable(f"{lake}/usage_events").file_uris()]
    if not files:
        return 0
    con = duckdb.connect()
    con.execute(
        """
        CREATE TABLE events AS
        SELECT * FROM (
            SELECT *, row_number() OVER (PARTITION BY tenant_id, day, event_id
                                         ORDER BY ingested_at, source) AS copy
            FROM read_parquet(?, hive_partitioning = true,
                              hive_types = {'tenant_id': VARCHAR, 'day': DATE})
        )
        WHERE copy = 1 AND ts >= CAST(? AS TIMESTAMPTZ) AND ts < CAST(? AS TIMESTAMPTZ)
        """,
        [files, start, end],
    )
    figures = []
    for meter in meters:
        name, kind, *field = meter.split(":")
        figure = {
            "max": "CAST(max(value) AS VARCHAR)",
            "latest": "CAST(arg_max(value, (ts, event_id)) AS VARCHAR)",
            "unique_count": f"CAST(count(DISTINCT {field_expression(field[0])}) AS VARCHAR)"
            if field
            else None,
        }[kind]
        if figure is None:
            raise SystemExit(f"{name}: unique_count needs a field")
        rows = con.execute(
            f"SELECT tenant_id, {figure} FROM events WHERE metric = ? GROUP BY tenant_id",
            [name],
        ).fetchall()
        figures.extend((tenant, name, value) for tenant, value in rows)
    for tenant, name, value in sorted(figures):
        print(f"{tenant},{name},{decimal.Decimal(value).quantize(TWELVE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
