#!/usr/bin/env python3
"""Recomputes the completeness-certificate digests of a month from a JSON Lines file
of native events, independently of allot (the recipe of docs/reports-and-close.md,
"Completeness certificate").

    certificate_check.py EVENTS.jsonl YYYY-MM

Per tenant-day of the month: each distinct event (the first line with a given
(tenant_id, UTC day, event_id)) becomes the line

    event_id|ts_micros|metric|value

with ts_micros the microseconds since 1970-01-01T00:00:00Z and value with exactly 9
decimals (half-to-even). The digest is the SHA-256 (hex) of the lines sorted by their
UTF-8 bytes, each followed by a line feed. Prints `tenant_id,day,events,digest`, one
line per tenant-day, ordered by tenant and day. Standard library only.
"""

import datetime
import decimal
import hashlib
import json
import sys

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
NINE = decimal.Decimal("1e-9")


def main() -> int:
    path, month = sys.argv[1], sys.argv[2]
    days: dict[tuple[str, str], dict[str, str]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
            ts = datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
            ts = ts.astimezone(datetime.timezone.utc)
            delta = ts - EPOCH
            micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            day = ts.date().isoformat()
            if not day.startswith(month + "-"):
                continue
            value = decimal.Decimal(event["value"]).quantize(NINE, rounding=decimal.ROUND_HALF_EVEN)
            key = (event["tenant_id"], day)
            seen = days.setdefault(key, {})
            if event["event_id"] not in seen:
                seen[event["event_id"]] = f'{event["event_id"]}|{micros}|{event["metric"]}|{value:.9f}'
    for (tenant, day), events in sorted(days.items()):
        text = "".join(line + "\n" for line in sorted(events.values(), key=lambda s: s.encode()))
        digest = hashlib.sha256(text.encode()).hexdigest()
        print(f"{tenant},{day},{len(events)},{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
