//! `allot preview` against `allot invoice` on random lakes
//! (docs/reference.md#what-if-pricing): a month previewed with its own price book
//! gives back its invoice totals to the cent, open or closed; after the
//! configuration's price book changes, a closed month's actual side is still its
//! final invoice and the proposed side is the live recomputation under the
//! proposal.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common;

/// The price book under test: tiers, a dimensional rate (which synthetic
/// events, having no region, never match), a discount, a commitment and
/// credit grants (t1's of `t1_credit`, t2's drawn after its true-up, t3's two
/// competing by expiry and priority).
fn price_book(compute_price: &str, egress_tiers: &str, t1_credit: &str) -> String {
    format!(
        r#"
[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "{compute_price}"

[[rates]]
metric = "compute_seconds"
effective_from = "2026-09-16"
unit_price = "0.0450"

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
tiers = {egress_tiers}

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.01"
match = {{ region = "eu-*" }}

[[rates]]
metric = "storage_bytes"
effective_from = "2026-01-01"
unit_price = "0.023"

[tenants.t1]
discount_percent = "12.5"

[[tenants.t1.credits]]
id = "t1-promo"
amount = "{t1_credit}"
effective_from = "2026-08-15"

[tenants.t2]
minimum_monthly = "25.00"

[[tenants.t2.credits]]
id = "budget"
amount = "10.00"
effective_from = "2026-01-01"

[[tenants.t3.credits]]
id = "later"
amount = "0.15"
effective_from = "2026-09-10"
priority = 3

[[tenants.t3.credits]]
id = "soon"
amount = "0.20"
effective_from = "2026-01-01"
expires = "2026-10-01"
"#
    )
}

const OWN_TIERS: &str = r#"[{ up_to = "20", unit_price = "0.09" }, { unit_price = "0.07" }]"#;

fn own_book() -> String {
    price_book("0.0400", OWN_TIERS, "0.30")
}

fn proposed_book() -> String {
    price_book(
        "0.0375",
        r#"[{ up_to = "50", unit_price = "0.08" }, { unit_price = "0.05" }]"#,
        "0.45",
    )
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "allot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Invoice totals per tenant, from `allot invoice` CSV.
fn invoice_totals(csv: &str) -> BTreeMap<String, String> {
    csv.lines()
        .skip(1)
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| fields[2] == "total")
        .map(|fields| (fields[0].to_string(), fields[10].to_string()))
        .collect()
}

/// `(actual, proposed)` per tenant, from `allot preview` CSV.
fn preview_totals(csv: &str) -> BTreeMap<String, (String, String)> {
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("tenant_id,period,actual_total,proposed_total,difference")
    );
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .map(|f| (f[0].to_string(), (f[2].to_string(), f[3].to_string())))
        .collect()
}

fn random_lake(seed: u64) -> common::CliLake {
    let lake = common::CliLake::new(&format!("currency = \"USD\"\n{}", own_book()));
    let mut rng = common::Lcg(seed);
    let mut events = Vec::new();
    for (t, tenant) in ["t1", "t2", "t3"].iter().enumerate() {
        for i in 0..(10 + (rng.next() % 30) as usize) {
            let day = 1 + (rng.next() % 30) as u32;
            events.push(common::synthetic_event(
                &mut rng,
                tenant,
                9,
                day,
                t * 100 + i,
            ));
        }
    }
    let path = lake.dir.path().join("events.jsonl");
    std::fs::write(&path, events.join("\n") + "\n").expect("write events");
    lake.ingest(&path);
    lake
}

#[test]
fn previewing_with_the_own_price_book_gives_back_the_invoice_open_or_closed() {
    for seed in [7, 1234, 99_991] {
        let lake = random_lake(seed);
        let own = lake.dir.path().join("own.toml");
        std::fs::write(&own, own_book()).expect("write own book");
        let own = own.to_str().unwrap();
        let preview = |book: &str| {
            preview_totals(&stdout(&lake.run(&[
                "preview",
                "--month",
                "2026-09",
                "--price-book",
                book,
            ])))
        };
        let same_on_both_sides = |previews: &BTreeMap<String, (String, String)>| {
            previews
                .iter()
                .map(|(t, (actual, proposed))| {
                    assert_eq!(actual, proposed, "seed {seed} tenant {t}");
                    (t.clone(), actual.clone())
                })
                .collect::<BTreeMap<_, _>>()
        };

        // Open: the draft's totals on both sides.
        let drafts = stdout(&lake.run(&["invoice", "--month", "2026-09"]));
        for draw in [",credit,t1-promo,", ",credit,budget,", ",credit,soon,"] {
            assert!(drafts.contains(draw), "seed {seed}: no {draw} in {drafts}");
        }
        let invoiced = invoice_totals(&drafts);
        assert_eq!(invoiced.len(), 3, "seed {seed}");
        assert_eq!(same_on_both_sides(&preview(own)), invoiced, "seed {seed}");

        // Closed, with the configuration's prices changed since: the final
        // invoice on both sides still.
        stdout(&lake.run(&["close", "--month", "2026-09"]));
        let changed = format!("currency = \"USD\"\n{}", proposed_book());
        std::fs::write(lake.config(), changed).expect("change the config");
        let finals = invoice_totals(&stdout(&lake.run(&["invoice", "--month", "2026-09"])));
        assert_eq!(finals, invoiced, "seed {seed}: final means final");
        assert_eq!(same_on_both_sides(&preview(own)), finals, "seed {seed}");

        // Closed, previewed under the new book: actual is the final invoice,
        // proposed the live recomputation under that book.
        let proposed = lake.dir.path().join("proposed.toml");
        std::fs::write(&proposed, proposed_book()).expect("write proposed book");
        let live = invoice_totals(&stdout(
            &lake.run(&["invoice", "--month", "2026-09", "--live"]),
        ));
        let previews = preview(proposed.to_str().unwrap());
        let actual: BTreeMap<_, _> = previews
            .iter()
            .map(|(t, (a, _))| (t.clone(), a.clone()))
            .collect();
        let proposed: BTreeMap<_, _> = previews
            .iter()
            .map(|(t, (_, p))| (t.clone(), p.clone()))
            .collect();
        assert_eq!(actual, finals, "seed {seed}");
        assert_eq!(proposed, live, "seed {seed}");
        assert_ne!(finals, live, "seed {seed}: the books must differ somewhere");

        // Late events after the close: October's invoice bills September's
        // adjustments, its credit redrawn; previewed with the own book, both
        // months still give back their invoices.
        std::fs::write(lake.config(), format!("currency = \"USD\"\n{}", own_book()))
            .expect("restore the config");
        let mut rng = common::Lcg(seed ^ 0x5eed);
        let late: Vec<String> = ["t1", "t2", "t3"]
            .iter()
            .enumerate()
            .map(|(t, tenant)| common::synthetic_event(&mut rng, tenant, 9, 20, 9_000 + t))
            .collect();
        let path = lake.dir.path().join("late.jsonl");
        std::fs::write(&path, late.join("\n") + "\n").expect("write late events");
        lake.ingest(&path);
        let october = stdout(&lake.run(&["invoice", "--month", "2026-10"]));
        assert!(
            october.contains(",adjustment,2026-09,"),
            "seed {seed}: {october}"
        );
        let range = stdout(&lake.run(&[
            "preview",
            "--months",
            "2026-09..2026-10",
            "--price-book",
            own,
        ]));
        let mut months: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for line in range.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f[2], f[3], "seed {seed}: {line}");
            months
                .entry(f[1].to_string())
                .or_default()
                .insert(f[0].to_string(), f[2].to_string());
        }
        assert_eq!(months["2026-09"], finals, "seed {seed}");
        assert_eq!(months["2026-10"], invoice_totals(&october), "seed {seed}");
    }
}

#[test]
fn preview_writes_nothing_to_the_lake() {
    let lake = random_lake(42);
    let book = lake.dir.path().join("own.toml");
    std::fs::write(&book, own_book()).expect("write own book");
    let before = common::paths_under(&lake.root());
    stdout(&lake.run(&[
        "preview",
        "--months",
        "2026-08..2026-10",
        "--price-book",
        book.to_str().unwrap(),
        "--lines",
    ]));
    assert_eq!(common::paths_under(&lake.root()), before);
}

#[test]
fn bad_credit_grants_are_refused_with_exit_2_naming_the_key() {
    let grant = |body: &str| format!("[[tenants.t1.credits]]\n{body}\n");
    let from = "effective_from = \"2026-01-01\"";
    let cases = [
        (
            grant(&format!("id = \"p\"\namount = \"0\"\n{from}")),
            "tenants.t1.credits[0].amount",
        ),
        (
            grant(&format!("id = \"p\"\namount = \"1.005\"\n{from}")),
            "tenants.t1.credits[0].amount",
        ),
        (
            grant(&format!("id = \"p\"\namount = 2.5\n{from}")),
            "tenants.t1.credits[0].amount",
        ),
        (
            grant(&format!("id = \"p q\"\namount = \"1\"\n{from}")),
            "tenants.t1.credits[0].id",
        ),
        (
            grant(&format!(
                "id = \"p\"\namount = \"1\"\n{from}\nexpires = \"2025-12-31\""
            )),
            "tenants.t1.credits[0].expires",
        ),
        (
            grant(&format!(
                "id = \"p\"\namount = \"1\"\n{from}\npriority = 1.5"
            )),
            "tenants.t1.credits[0].priority",
        ),
        (
            grant(&format!(
                "id = \"p\"\namount = \"1\"\n{from}\nrollover = true"
            )),
            "tenants.t1.credits[0].rollover",
        ),
        (grant("id = \"p\"\namount = \"1\""), "tenants.t1.credits[0]"),
        (
            grant(&format!("id = \"p\"\namount = \"1\"\n{from}"))
                + &grant(&format!("id = \"p\"\namount = \"2\"\n{from}")),
            "tenants.t1.credits[1].id",
        ),
    ];
    let lake = random_lake(3);
    let proposal = lake.dir.path().join("proposal.toml");
    for (text, key) in &cases {
        // In allot.toml, at start, whatever the command.
        std::fs::write(lake.config(), format!("currency = \"USD\"\n{text}")).unwrap();
        let out = lake.run(&["invoice", "--month", "2026-09"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(key) && err.trim_end().lines().count() == 1,
            "{text}: {err}"
        );
        // In a proposed price book.
        std::fs::write(lake.config(), format!("currency = \"USD\"\n{}", own_book())).unwrap();
        std::fs::write(&proposal, text).unwrap();
        let out = lake.run(&[
            "preview",
            "--month",
            "2026-09",
            "--price-book",
            proposal.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "preview {text}: {err}");
        assert!(
            err.contains(key) && err.trim_end().lines().count() == 1,
            "preview {text}: {err}"
        );
    }
}

/// A price book that matches on every dimension the events below carry:
/// globs and exact values competing, a label, a tenant's own dimensional
/// rate and a rate change mid-month.
const DIMENSIONAL_BOOK: &str = r#"
[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.0400"

[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
tiers = [{ up_to = "3", unit_price = "0.0300" }, { unit_price = "0.0200" }]
match = { region = "eu-*" }

[[rates]]
metric = "compute_seconds"
effective_from = "2026-09-16"
unit_price = "0.0250"
match = { region = "eu-*" }

[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.1000"
match = { region = "eu-west-1", service = "gpu" }

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
tiers = [{ up_to = "20", unit_price = "0.09" }, { unit_price = "0.07" }]

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.02"
match = { "labels.class" = "m7g.*" }

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
unit_price = "0.03"
match = { "labels.class" = "c7*", service = "api" }

[[rates]]
metric = "storage_bytes"
effective_from = "2026-01-01"
unit_price = "0.023"

[[tenants.t2.rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.0100"
match = { service = "batch" }
"#;

/// September events of three tenants with random regions, services and
/// `class` labels (each sometimes missing), several a day; and how many
/// tenant-days they fall on.
fn dimensional_events(seed: u64) -> (String, usize) {
    let mut rng = common::Lcg(seed);
    let mut partitions = std::collections::BTreeSet::new();
    let regions = ["eu-west-1", "eu-central-1", "eu-north-1", "us-east-1", ""];
    let services = ["gpu", "api", "batch", ""];
    let classes = ["m7g.large", "m7g.xlarge", "c7i.large", "c6.large", ""];
    let mut lines = String::new();
    for tenant in ["t1", "t2", "t3"] {
        for i in 0..300 {
            // September and October: a preview of both reads them at once.
            let day = 1 + rng.next() % 61;
            partitions.insert((tenant, day));
            let (month, day) = if day > 30 { (10, day - 30) } else { (9, day) };
            let hour = rng.next() % 24;
            let (metric, value) = if rng.next().is_multiple_of(2) {
                (
                    "compute_seconds",
                    format!("{}.{:03}", rng.next() % 7200, rng.next() % 1000),
                )
            } else {
                ("egress_bytes", format!("{}", rng.next() % 3_000_000_000))
            };
            let mut fields = String::new();
            let region = regions[(rng.next() % 5) as usize];
            if !region.is_empty() {
                fields += &format!(r#","region":"{region}""#);
            }
            let service = services[(rng.next() % 4) as usize];
            if !service.is_empty() {
                fields += &format!(r#","service":"{service}""#);
            }
            let class = classes[(rng.next() % 5) as usize];
            if !class.is_empty() {
                fields += &format!(r#","labels":{{"class":"{class}"}}"#);
            }
            lines += &format!(
                r#"{{"event_id":"{tenant}-{i}","tenant_id":"{tenant}","ts":"2026-{month:02}-{day:02}T{hour:02}:{minute:02}:00Z","metric":"{metric}","value":{value}{fields}}}"#,
                minute = i % 60
            );
            lines.push('\n');
        }
    }
    (lines, partitions.len())
}

/// The active files of the Delta table at `table` (paths relative to it), with
/// their `allot.rows` tag.
fn rollup_files_by_tag(table: &Path) -> BTreeMap<String, Option<String>> {
    let mut active = BTreeMap::new();
    for commit in common::files_under(&table.join("_delta_log")) {
        if commit.extension().is_none_or(|e| e != "json") {
            continue;
        }
        for line in std::fs::read_to_string(&commit)
            .expect("read commit")
            .lines()
        {
            let action: serde_json::Value = serde_json::from_str(line).expect("json");
            if let Some(add) = action.get("add") {
                let tag = add["tags"]["allot.rows"].as_str().map(str::to_string);
                active.insert(add["path"].as_str().expect("path").to_string(), tag);
            } else if let Some(remove) = action.get("remove") {
                active.remove(remove["path"].as_str().expect("path"));
            }
        }
    }
    active
}

/// The rollups keep dimensional counters per day and match class: after
/// `allot compact` the invoices, and previews under books whose matches are
/// among the rollups' (rolled up) or not (read raw), are those of the raw
/// events to the byte, and `allot verify --rollups` finds the class rows equal
/// to their recomputation.
#[test]
fn dimensional_rollups_price_as_the_raw_events() {
    for seed in [3, 2026] {
        let lake = common::CliLake::new(&format!("currency = \"USD\"\n{DIMENSIONAL_BOOK}"));
        let path = lake.dir.path().join("events.jsonl");
        let (events, partitions) = dimensional_events(seed);
        std::fs::write(&path, events).expect("write events");
        lake.ingest(&path);
        // Fewer: the compute rates drop the tenant's batch rate and the gpu
        // rate; more: egress gains a region no rollup was summed by.
        let fewer = lake.dir.path().join("fewer.toml");
        let gpu_rate = r#"[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.1000"
match = { region = "eu-west-1", service = "gpu" }"#;
        let without_tenant = DIMENSIONAL_BOOK
            .split("[[tenants.t2.rates]]")
            .next()
            .expect("a book");
        assert!(without_tenant.contains(gpu_rate));
        std::fs::write(&fewer, without_tenant.replace(gpu_rate, "")).expect("write book");
        let more = lake.dir.path().join("more.toml");
        std::fs::write(
            &more,
            format!(
                "{DIMENSIONAL_BOOK}\n[[rates]]\nmetric = \"egress_bytes\"\neffective_from = \"2026-09-10\"\nunit_price = \"0.01\"\nmatch = {{ region = \"us-*\", \"labels.class\" = \"c6*\" }}\n"
            ),
        )
        .expect("write book");
        let own = lake.dir.path().join("own.toml");
        std::fs::write(&own, DIMENSIONAL_BOOK).expect("write book");
        // Both months previewed at once under their own book give back each
        // month's invoice on both sides.
        let months_at_once = || {
            let previews = stdout(&lake.run(&[
                "preview",
                "--months",
                "2026-09..2026-10",
                "--price-book",
                own.to_str().unwrap(),
            ]));
            for month in ["2026-09", "2026-10"] {
                let invoiced = invoice_totals(&stdout(&lake.run(&["invoice", "--month", month])));
                let previewed: BTreeMap<String, (String, String)> = previews
                    .lines()
                    .skip(1)
                    .map(|line| line.split(',').collect::<Vec<_>>())
                    .filter(|f| f[1] == month)
                    .map(|f| (f[0].to_string(), (f[2].to_string(), f[3].to_string())))
                    .collect();
                assert_eq!(previewed.len(), 3, "seed {seed} {month}: {previews}");
                for (tenant, (actual, proposed)) in previewed {
                    assert_eq!(actual, invoiced[&tenant], "seed {seed} {month} {tenant}");
                    assert_eq!(proposed, actual, "seed {seed} {month} {tenant}");
                }
            }
        };
        let figures = || {
            months_at_once();
            let mut out = stdout(&lake.run(&["invoice", "--month", "2026-09"]));
            out += &stdout(&lake.run(&["invoice", "--month", "2026-10"]));
            for book in [&fewer, &more] {
                out += &stdout(&lake.run(&[
                    "preview",
                    "--month",
                    "2026-09",
                    "--lines",
                    "--price-book",
                    book.to_str().unwrap(),
                ]));
            }
            out
        };
        let raw = figures();
        assert!(raw.contains("region=eu-*"), "seed {seed}: {raw}");
        assert!(raw.contains("labels.class=m7g.*"), "seed {seed}: {raw}");
        assert!(raw.contains("service=batch"), "seed {seed}: {raw}");
        let compacted = stdout(&lake.run(&["compact"]));
        assert!(
            compacted.contains(&format!("rollups of {partitions} tenant-days")),
            "seed {seed}: {compacted}"
        );
        assert_eq!(figures(), raw, "seed {seed}");
        // The class rows sit in files of their own, each file tagged with its rows.
        let hourly = lake.root().join("usage_hourly");
        let tagged = rollup_files_by_tag(&hourly);
        for (file, tag) in &tagged {
            let classes = common::read_parquet(&hourly.join(file))
                .iter()
                .map(|b| b.column_by_name("dimension_values").expect("column"))
                .map(|values| values.len() - values.null_count())
                .sum::<usize>();
            match tag.as_deref() {
                Some("classes") => assert!(classes > 0, "seed {seed}: {file}"),
                Some("hourly") => assert_eq!(classes, 0, "seed {seed}: {file}"),
                other => panic!("seed {seed}: {file} tagged {other:?}"),
            }
        }
        for tag in ["classes", "hourly"] {
            assert!(
                tagged.values().any(|t| t.as_deref() == Some(tag)),
                "seed {seed}"
            );
        }
        // Rollups written before the tag, both kinds of rows in untagged
        // files, give the same figures.
        common::rewrite_log_actions(&hourly, |action| {
            if let Some(tags) = action
                .pointer_mut("/add/tags")
                .and_then(|t| t.as_object_mut())
            {
                tags.remove("allot.rows");
            }
        });
        assert!(rollup_files_by_tag(&hourly).values().all(Option::is_none));
        assert_eq!(figures(), raw, "seed {seed}");
        let verified = stdout(&lake.run(&["verify", "--rollups", "--sample", "0"]));
        assert!(
            verified.starts_with(&format!(
                "verified: {partitions} of {partitions} partitions"
            )),
            "seed {seed}: {verified}"
        );
    }
}
