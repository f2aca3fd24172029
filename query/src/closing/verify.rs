//! `allot verify`: a closing recomputed at the version it read, compared
//! with what was stored, naming the first difference.

use std::collections::{BTreeMap, BTreeSet};

use allot_lake::snapshot::{LakeSnapshot, read_small_table};
use allot_schemas::layout::{LakeLocation, LakeTable};
use arrow::array::AsArray;
use arrow_schema::DataType;

use super::certificate::{CertificateDay, sha256_hex};
use super::ledger::drawn_before;
use super::plan::recompute;
use super::store::{Closing, PreviousClose, find_closing, stored_allocation, stored_invoices};
use crate::allocation::AllocationRow;
use crate::billed::BilledInvoice;
use crate::error::QueryError;

/// The outcome of `allot verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything recomputed equals what was stored, but for the tenants erased
    /// since the close (`allot tenant delete`), named here: their events are
    /// gone, so their figures and the allocation are not compared.
    Verified {
        /// Tenants erased after the close, in order.
        erased: Vec<String>,
    },
    /// The first difference found.
    Differs(String),
}

/// Recomputes `closing` from `snapshot` (which must be `usage_events` at the
/// recorded version) with the recorded configuration, and compares invoices,
/// allocation and certificate with what was stored.
pub async fn verify(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    closing: &Closing,
    all: &[Closing],
) -> Result<Verdict, QueryError> {
    let label = format!("{} revision {}", closing.month, closing.revision);
    if sha256_hex(&closing.config_text) != closing.config_sha256 {
        return Ok(Verdict::Differs(format!(
            "{label}: the recorded configuration text does not match its SHA-256"
        )));
    }
    let settings = closing.settings()?;
    let previous = match closing.adjusts_revision {
        Some(revision) => match find_closing(all, closing.month.prev(), Some(revision)) {
            Some(previous) => Some(PreviousClose::load(location, previous).await?),
            None => {
                return Ok(Verdict::Differs(format!(
                    "{label}: its adjustments were taken against {} revision {revision}, which is missing",
                    closing.month.prev()
                )));
            }
        },
        None => None,
    };
    let pools = match &closing.costs_text {
        Some(text) => Some(
            crate::allocation::parse_costs_csv(text, &settings.catalog, &settings.config.currency)
                .map_err(|e| QueryError::Stored(format!("{label}: recorded costs: {e}")))?,
        ),
        None => None,
    };
    // Tenants erased since the close: their files are gone from storage, so the
    // month is recomputed without them, from the raw events (rollup files held
    // their rows too), and the allocation, which shares costs over every
    // tenant, cannot be compared.
    let erased = erased_since(location, &closing.closed_at).await?;
    let mut kept = snapshot.clone();
    if !erased.is_empty() {
        kept.usage
            .files
            .retain(|f| !f.tenant_id.as_ref().is_some_and(|t| erased.contains(t)));
        kept.hourly.files.clear();
    }
    let credits_drawn = drawn_before(location, &kept, &settings, closing.month, None).await?;
    let (invoices, allocation, certificate) = recompute(
        &kept,
        &settings,
        closing.month,
        previous.as_ref(),
        &credits_drawn,
        pools.as_deref(),
    )
    .await?;
    let not_erased = |tenant: &str| !erased.contains(tenant);
    let mut stored = stored_invoices(location, closing, None).await?;
    stored.retain(|i| not_erased(&i.tenant_id));
    if let Some(difference) = first_invoice_difference(&stored, &invoices) {
        return Ok(Verdict::Differs(format!("{label}: {difference}")));
    }
    if let Some(rows) = allocation.filter(|_| erased.is_empty()) {
        let recomputed: Vec<Vec<String>> = rows.iter().map(AllocationRow::csv_record).collect();
        let frozen = stored_allocation(location, closing).await?;
        if recomputed != frozen {
            let at = recomputed
                .iter()
                .zip(&frozen)
                .position(|(a, b)| a != b)
                .unwrap_or(recomputed.len().min(frozen.len()));
            return Ok(Verdict::Differs(format!(
                "{label}: allocation row {} differs (stored {:?}, recomputed {:?})",
                at + 1,
                frozen.get(at).map(|r| r.join(",")),
                recomputed.get(at).map(|r| r.join(","))
            )));
        }
    }
    let certified: Vec<CertificateDay> = closing
        .certificate
        .iter()
        .filter(|d| not_erased(&d.tenant_id))
        .cloned()
        .collect();
    if let Some(difference) = first_certificate_difference(&certified, &certificate) {
        return Ok(Verdict::Differs(format!("{label}: {difference}")));
    }
    Ok(Verdict::Verified {
        erased: erased.into_iter().collect(),
    })
}

/// The tenants erased (`audit` rows of `tenant_delete`) after `closed_at`.
async fn erased_since(
    location: &LakeLocation,
    closed_at: &str,
) -> Result<BTreeSet<String>, QueryError> {
    let instant = |text: &str| chrono::DateTime::parse_from_rfc3339(text).ok();
    let closed = instant(closed_at);
    let mut erased = BTreeSet::new();
    for batch in read_small_table(location, LakeTable::Audit).await? {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
                .ok_or_else(|| {
                    QueryError::from(allot_lake::LakeError::Unreadable {
                        table: LakeTable::Audit.dir_name(),
                        message: format!("no {name} column"),
                    })
                })
        };
        let (at, action, tenant) = (column("at")?, column("action")?, column("tenant_id")?);
        let (at, action, tenant) = (
            at.as_string::<i32>(),
            action.as_string::<i32>(),
            tenant.as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            // An erasure whose time cannot be read counts as after the close.
            let after = match (instant(at.value(row)), closed) {
                (Some(at), Some(closed)) => at > closed,
                _ => true,
            };
            if action.value(row) == "tenant_delete" && after {
                erased.insert(tenant.value(row).to_string());
            }
        }
    }
    Ok(erased)
}

fn first_invoice_difference(
    stored: &[BilledInvoice],
    recomputed: &[BilledInvoice],
) -> Option<String> {
    let stored_map: BTreeMap<&str, &BilledInvoice> =
        stored.iter().map(|i| (i.tenant_id.as_str(), i)).collect();
    let new_map: BTreeMap<&str, &BilledInvoice> = recomputed
        .iter()
        .map(|i| (i.tenant_id.as_str(), i))
        .collect();
    let tenants: std::collections::BTreeSet<&str> =
        stored_map.keys().chain(new_map.keys()).copied().collect();
    for tenant in tenants {
        match (stored_map.get(tenant), new_map.get(tenant)) {
            (Some(_), None) => {
                return Some(format!(
                    "invoice of tenant {tenant} is stored but recomputes to nothing"
                ));
            }
            (None, Some(_)) => {
                return Some(format!(
                    "tenant {tenant} has an invoice now but none was stored"
                ));
            }
            (Some(a), Some(b)) => {
                if a.currency != b.currency || a.discount_percent != b.discount_percent {
                    return Some(format!(
                        "invoice of tenant {tenant}: currency or discount differs"
                    ));
                }
                for (i, (x, y)) in a.rows.iter().zip(&b.rows).enumerate() {
                    if x != y {
                        return Some(format!(
                            "invoice of tenant {tenant}, row {}: stored {:?}, recomputed {:?}",
                            i + 1,
                            x.join(","),
                            y.join(",")
                        ));
                    }
                }
                if a.rows.len() != b.rows.len() {
                    return Some(format!(
                        "invoice of tenant {tenant}: {} rows stored, {} recomputed",
                        a.rows.len(),
                        b.rows.len()
                    ));
                }
            }
            (None, None) => {}
        }
    }
    None
}

fn first_certificate_difference(
    stored: &[CertificateDay],
    recomputed: &[CertificateDay],
) -> Option<String> {
    let key = |d: &CertificateDay| (d.tenant_id.clone(), d.day.clone());
    let stored_map: BTreeMap<_, _> = stored.iter().map(|d| (key(d), d)).collect();
    let new_map: BTreeMap<_, _> = recomputed.iter().map(|d| (key(d), d)).collect();
    let keys: std::collections::BTreeSet<_> =
        stored_map.keys().chain(new_map.keys()).cloned().collect();
    for (tenant, day) in keys {
        let k = (tenant.clone(), day.clone());
        match (stored_map.get(&k), new_map.get(&k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let what = if a.events != b.events {
                    format!("{} events certified, {} found", a.events, b.events)
                } else if a.sums != b.sums {
                    "raw sums differ".to_string()
                } else if a.digest != b.digest {
                    format!("digest {} certified, {} recomputed", a.digest, b.digest)
                } else {
                    "sources differ".to_string()
                };
                return Some(format!("certificate of tenant {tenant} on {day}: {what}"));
            }
            (Some(_), None) => {
                return Some(format!(
                    "certificate of tenant {tenant} on {day}: no events found"
                ));
            }
            (None, Some(_)) => {
                return Some(format!(
                    "tenant {tenant} has events on {day} that the certificate lacks"
                ));
            }
            (None, None) => {}
        }
    }
    None
}
