//! Planning a close: the invoices, allocation and certificate a closing of a
//! month freezes, computed before anything is written.

use std::collections::BTreeMap;

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::config::Config;

use super::certificate::{CertificateDay, certificate, sha256_hex};
use super::drafts::billed_invoices;
use super::store::{Closing, PreviousClose};
use crate::allocation::{AllocationRow, CostPool};
use crate::billed::BilledInvoice;
use crate::credits::TenantDrawn;
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::{self, ReportSettings};

/// Everything a close writes, before it is written.
pub struct ClosePlan {
    /// The closings row.
    pub closing: Closing,
    /// The final invoices.
    pub invoices: Vec<BilledInvoice>,
    /// The frozen allocation (costs given).
    pub allocation: Option<Vec<AllocationRow>>,
}

/// What a close is asked to do.
pub struct CloseRequest<'a> {
    /// The month.
    pub month: Period,
    /// The revision to write (0 for a first close).
    pub revision: i32,
    /// Unique id of this close.
    pub close_id: String,
    /// When, RFC 3339.
    pub closed_at: String,
    /// Who.
    pub who: String,
    /// Restatement reason.
    pub reason: Option<String>,
    /// The current configuration.
    pub config: &'a Config,
    /// The costs file text and its pools, when an allocation is frozen.
    pub costs: Option<(String, Vec<CostPool>)>,
    /// The closing of the month before, for adjustments.
    pub previous: Option<&'a PreviousClose>,
    /// App ids of `usage_events` whose `txn` offsets the certificate records.
    pub txn_offsets: BTreeMap<String, i64>,
    /// The credit the invoices of earlier months drew, per tenant and grant.
    pub credits_drawn: &'a TenantDrawn,
}

/// Computes a closing of `request.month` over `snapshot` (whose `usage_events`
/// version is recorded).
pub async fn plan_close(
    snapshot: &LakeSnapshot,
    request: CloseRequest<'_>,
) -> Result<ClosePlan, QueryError> {
    let config_text = request.config.billing_toml();
    let recorded = Closing {
        close_id: request.close_id,
        month: request.month,
        revision: request.revision,
        closed_at: request.closed_at,
        who: request.who,
        reason: request.reason,
        usage_version: snapshot.usage.version.unwrap_or(0),
        config_sha256: sha256_hex(&config_text),
        config_text,
        costs_text: request.costs.as_ref().map(|(text, _)| text.clone()),
        adjusts_revision: request.previous.map(|p| p.closing.revision),
        txn_offsets: request.txn_offsets,
        certificate: Vec::new(),
    };
    let settings = recorded.settings()?;
    let (invoices, allocation, certificate) = recompute(
        snapshot,
        &settings,
        request.month,
        request.previous,
        request.credits_drawn,
        request.costs.as_ref().map(|(_, p)| p.as_slice()),
    )
    .await?;
    let status = recorded.status();
    let closing = Closing {
        certificate,
        ..recorded
    };
    Ok(ClosePlan {
        invoices: invoices
            .into_iter()
            .map(|i| BilledInvoice {
                status: status.clone(),
                ..i
            })
            .collect(),
        allocation,
        closing,
    })
}

type Recomputed = (
    Vec<BilledInvoice>,
    Option<Vec<AllocationRow>>,
    Vec<CertificateDay>,
);

/// Invoices, allocation and certificate of `month`: what a close stores and
/// what verify compares.
pub(super) async fn recompute(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    month: Period,
    previous: Option<&PreviousClose>,
    credits_drawn: &TenantDrawn,
    pools: Option<&[CostPool]>,
) -> Result<Recomputed, QueryError> {
    let invoices =
        billed_invoices(snapshot, settings, month, None, previous, credits_drawn).await?;
    let allocation = match pools {
        Some(pools) => Some(reports::allocation(snapshot, settings, pools, month).await?),
        None => None,
    };
    let certificate = certificate(snapshot, month).await?;
    Ok((invoices, allocation, certificate))
}
