#!/usr/bin/env python3
"""Generate allot's native event v1 sample corpus (schemas/testdata/corpus/).

Deterministic and re-runnable: it deletes every *.json in the corpus directory and
writes exactly the samples listed below, byte for byte.

File names:
  accept--<short-name>.json                  schema and decoder must both accept
  reject--<reason_code>--<short-name>.json   schema (or JSON parsing) and decoder must
                                             both reject; the decoder must report
                                             <reason_code>

Only samples on which the JSON Schema (schemas/event-v1.schema.json) and the decoder
agree belong here. Things a schema cannot see (duplicate keys, impossible calendar
dates such as month 13, future timestamps, well-formed but unknown metric names,
byte vs. code-point lengths of non-ASCII strings) are tested in the decoder's own unit
tests, not in this corpus. Length cases use ASCII only.

Usage: python3 schemas/testdata/gen_corpus.py
"""

import json
import os
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


class Raw:
    """A JSON value written verbatim (exact number spelling, explicit escapes)."""

    def __init__(self, text):
        self.text = text


DROP = object()  # marks a field to remove from the base event


def base(**overrides):
    ev = {
        "event_id": "evt-0001",
        "tenant_id": "acme",
        "ts": "2026-03-01T10:00:00Z",
        "metric": "compute_seconds",
        "value": Raw("12.5"),
    }
    for k, v in overrides.items():
        if v is DROP:
            ev.pop(k, None)
        else:
            ev[k] = v
    return ev


def dump(obj, indent=None):
    """Serialize obj to UTF-8 bytes, substituting Raw values verbatim."""
    raws = []

    def sub(o):
        if isinstance(o, Raw):
            raws.append(o.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        if isinstance(o, dict):
            return {k: sub(v) for k, v in o.items()}
        if isinstance(o, list):
            return [sub(v) for v in o]
        return o

    seps = (",", ":") if indent is None else (",", ": ")
    text = json.dumps(sub(obj), ensure_ascii=False, separators=seps, indent=indent)
    for i, r in enumerate(raws):
        text = text.replace(json.dumps(f"\x00RAW{i}\x00"), r)
    return text.encode("utf-8")


def labels(n, prefix="k"):
    return {f"{prefix}{i:02d}": f"v{i}" for i in range(n)}


SAMPLES = {}


def accept(name, data):
    add(f"accept--{name}.json", data)


def reject(code, name, data):
    add(f"reject--{code}--{name}.json", data)


def add(fname, data):
    if isinstance(data, (dict, list)):
        data = dump(data)
    elif isinstance(data, str):
        data = data.encode("utf-8")
    assert fname not in SAMPLES, fname
    SAMPLES[fname] = data


# ---------------------------------------------------------------- accept
accept("minimal", base())
accept(
    "all-optional-fields",
    base(
        resource="vm-7f3a",
        region="eu-west-1",
        service="batch",
        labels={"team": "data", "env": "prod"},
        schema_version=Raw("1"),
    ),
)
accept("schema-version-1", base(schema_version=Raw("1")))
accept("value-zero", base(value=Raw("0")))
accept("value-zero-decimal", base(value=Raw("0.000")))
accept("value-12-decimals", base(value=Raw("1.123456789512")))
accept("value-exponent", base(value=Raw("1.5e3")))
accept("value-exponent-upper-signed", base(value=Raw("2.5E+2")))
accept("value-negative-exponent", base(value=Raw("5e-7")))
accept("value-large-integer", base(value=Raw("12345678901234567")))
accept("ts-offset-plus-0530", base(ts="2026-03-01T15:30:00+05:30"))
accept("ts-offset-minus-0800", base(ts="2026-02-28T18:00:00-08:00"))
accept("ts-fractional-millis", base(ts="2026-03-01T10:00:00.123Z"))
accept("ts-fractional-micros-offset", base(ts="2026-03-01T11:00:00.123456+01:00"))
accept("ts-lowercase-t-z", base(ts="2026-03-01t10:00:00z"))
accept("ts-space-separator", base(ts="2026-03-01 10:00:00Z"))
accept(
    "unknown-top-level-fields",
    base(producer="billing-agent/2.1", trace={"span": [1, 2, 3]}, note=None, retry=Raw("true")),
)
accept("labels-32", base(labels=labels(32)))
accept("labels-empty", base(labels={}))
accept("label-value-empty", base(labels={"team": ""}))
accept("label-value-unicode", base(labels={"owner": "日本語 — café ✓"}))
accept("label-value-unicode-escaped", base(labels={"owner": Raw('"caf\\u00e9 \\ud83d\\ude00"')}))
accept("tenant-id-63-chars", base(tenant_id="t" + "x" * 62))
accept("tenant-id-one-char", base(tenant_id="a"))
accept("tenant-id-digits-dash-underscore", base(tenant_id="0team_a-b9"))
accept("event-id-128-chars", base(event_id="e" * 128))
accept("event-id-one-char", base(event_id="x"))
accept("event-id-punctuation-unicode", base(event_id="ordre/42:été #1 {x}"))
accept("metric-compute-seconds", base(metric="compute_seconds", value=Raw("3600")))
accept("metric-egress-bytes", base(metric="egress_bytes", value=Raw("1073741824")))
accept(
    "metric-storage-bytes",
    base(metric="storage_bytes", value=Raw("536870912"), resource="vol-0a1b2c"),
)
accept(
    "max-lengths",
    base(
        resource="r" * 256,
        region="g" * 64,
        service="s" * 64,
        labels={"k" * 64: "v" * 256},
    ),
)
accept("field-order-shuffled", dict(reversed(list(base().items()))))
accept(
    "pretty-printed",
    dump(
        base(
            event_id="evt-pretty",
            metric="egress_bytes",
            value=Raw("42.000000001"),
            region="us-east-1",
            labels={"team": "web"},
        ),
        indent=2,
    )
    + b"\n",
)
accept("surrounding-whitespace", b" \n\t" + dump(base()) + b"\r\n ")

# ---------------------------------------------------------------- invalid_json
reject("invalid_json", "not-json", "this is not json")
reject("invalid_json", "empty", "")
reject("invalid_json", "truncated", dump(base())[:-7])
reject("invalid_json", "trailing-garbage", dump(base()) + b" x")
reject("invalid_json", "two-objects", dump(base()) + b"\n" + dump(base(event_id="evt-0002")))
reject("invalid_json", "top-level-array", [base()])
reject("invalid_json", "top-level-string", '"evt-0001"')
reject("invalid_json", "top-level-number", "42")
reject("invalid_json", "top-level-null", "null")
reject("invalid_json", "value-nan", base(value=Raw("NaN")))
reject("invalid_json", "value-infinity", base(value=Raw("Infinity")))
reject("invalid_json", "trailing-comma", dump(base())[:-1] + b",}")
reject("invalid_json", "single-quotes", dump(base()).replace(b'"', b"'"))
reject("invalid_utf8", "invalid-utf8", dump(base(tenant_id="acme")).replace(b"acme", b"ac\xffme"))
reject("invalid_json", "utf8-bom", b"\xef\xbb\xbf" + dump(base()))

# ---------------------------------------------------------------- missing_field
for f in ("event_id", "tenant_id", "ts", "metric", "value"):
    reject("missing_field", f"no-{f.replace('_', '-')}", base(**{f: DROP}))
reject("missing_field", "value-null", base(value=None))
reject("missing_field", "tenant-id-null", base(tenant_id=None))
reject("missing_field", "empty-object", "{}")

# ---------------------------------------------------------------- invalid_type
reject("invalid_type", "value-string", base(value="12"))
reject("invalid_type", "value-bool", base(value=Raw("true")))
reject("invalid_type", "event-id-number", base(event_id=Raw("1001")))
reject("invalid_type", "tenant-id-number", base(tenant_id=Raw("42")))
reject("invalid_type", "ts-number", base(ts=Raw("1772359200")))
reject("invalid_type", "metric-number", base(metric=Raw("7")))
reject("invalid_type", "resource-object", base(resource={"id": "vm-1"}))
reject("invalid_type", "region-number", base(region=Raw("1")))
reject("invalid_type", "service-array", base(service=["batch"]))
reject("invalid_type", "labels-array", base(labels=["team", "data"]))
reject("invalid_type", "labels-string", base(labels="team=data"))
reject("invalid_type", "label-value-number", base(labels={"cores": Raw("8")}))
reject("invalid_type", "label-value-null", base(labels={"team": None}))

# ---------------------------------------------------------------- invalid_event_id
reject("invalid_event_id", "empty", base(event_id=""))
reject("invalid_event_id", "newline", base(event_id=Raw('"evt\\n0001"')))
reject("invalid_event_id", "bell", base(event_id=Raw('"evt\\u00070001"')))
reject("invalid_event_id", "tab", base(event_id=Raw('"evt\\t0001"')))
reject("invalid_event_id", "delete", base(event_id=Raw('"evt\\u007f0001"')))

# ---------------------------------------------------------------- invalid_tenant_id
for name, tid in [
    ("path-traversal", "../x"),
    ("uppercase-letter", "A"),
    ("mixed-case", "Acme"),
    ("slash", "a/b"),
    ("space", "a b"),
    ("empty", ""),
    ("64-chars", "t" + "x" * 63),
    ("leading-dash", "-abc"),
    ("leading-underscore", "_abc"),
    ("non-ascii", "é"),
    ("dot", "acme.corp"),
]:
    reject("invalid_tenant_id", name, base(tenant_id=tid))

# ---------------------------------------------------------------- invalid_timestamp
for name, ts in [
    ("no-offset", "2026-03-01T10:00:00"),
    ("date-only", "2026-03-01"),
    ("garbage", "yesterday at noon"),
    ("missing-seconds", "2026-03-01T10:00Z"),
    ("empty", ""),
]:
    reject("invalid_timestamp", name, base(ts=ts))

# ---------------------------------------------------------------- invalid_value
reject("invalid_value", "negative", base(value=Raw("-1")))
reject("invalid_value", "negative-small", base(value=Raw("-0.000000001")))
reject("invalid_value", "1e400", base(value=Raw("1e400")))
reject("invalid_value", "1e20", base(value=Raw("1e20")))
reject("invalid_value", "10-pow-20-integer", base(value=Raw("100000000000000000000")))
reject("invalid_value", "1e21", base(value=Raw("1e21")))

# ---------------------------------------------------------------- field_too_long
reject("field_too_long", "event-id-129-chars", base(event_id="e" * 129))
reject("field_too_long", "resource-257-chars", base(resource="r" * 257))
reject("field_too_long", "region-65-chars", base(region="g" * 65))
reject("field_too_long", "service-65-chars", base(service="s" * 65))
reject("field_too_long", "label-key-65-chars", base(labels={"k" * 65: "v"}))
reject("field_too_long", "label-value-257-chars", base(labels={"team": "v" * 257}))

# ---------------------------------------------------------------- other rules
reject("too_many_labels", "33-labels", base(labels=labels(33)))
reject("unsupported_schema_version", "version-2", base(schema_version=Raw("2")))
# Fails the schema's metric name pattern and is not in any catalog.
reject("unknown_metric", "uppercase-name", base(metric="Compute_Seconds"))


def main():
    CORPUS.mkdir(parents=True, exist_ok=True)
    for old in CORPUS.glob("*.json"):
        old.unlink()
    for fname, data in sorted(SAMPLES.items()):
        (CORPUS / fname).write_bytes(data)
    n_acc = sum(1 for f in SAMPLES if f.startswith("accept--"))
    print(f"wrote {len(SAMPLES)} samples ({n_acc} accept, {len(SAMPLES) - n_acc} reject) to {CORPUS}")


if __name__ == "__main__":
    main()
