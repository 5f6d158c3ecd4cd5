//! Storage Commitment, the service (PS3.4 Annex J, Push Model): a requestor (a modality)
//! asks whether we have taken responsibility for a list of instances, so that it may delete
//! its own copies. A request is recorded in the locator before it is acknowledged; then each
//! referenced instance is checked where it lives now (online file, archive container record
//! on local disk or HDFS, or near-line copy when the primary is damaged) by reading its bytes
//! and comparing their CRC-32C with the one stored at receipt. Only the instance's own byte
//! range is read, never a whole container. The result waits in the locator until the network
//! layer has delivered it (retried every `[commitment] retry_secs`, given up after
//! `give_up_hours`), so a restart or another node resumes both checks and reports.
//!
//! Nothing in Strata deletes an instance's last copy: the archive move replaces an online
//! file by its container record in one locator transaction (after the container is durable
//! and verified), and backups only add copies, so a committed instance stays committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::dataset::decode_small;
use crate::locator::commitments::{Commitment, CommitmentItem, CommitmentState};
use crate::locator::Locator;
use crate::net::{AssociationContext, CommitmentReport, CommitmentRequest, ReferencedSop};
use crate::reader::Reader;
use crate::service::{Outcome, Status};

/// Failure Reason (0008,1197): processing failure (unreadable, damaged, no intact copy).
pub const PROCESSING_FAILURE: u16 = 0x0110;
/// Failure Reason: no such object instance (not stored here).
pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
/// Failure Reason: the referenced SOP Class is not the one the instance was stored with.
pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;

/// Decoded Action Information we look through (a deflated one may expand).
const MAX_ACTION_INFORMATION_BYTES: u64 = 16 * 1024 * 1024;

/// Instances checked at once within one commitment.
const PARALLEL_CHECKS: usize = 8;

/// Commitments checked, or reports handed out, per round.
const BATCH: i64 = 16;

/// How the service retries and gives up.
#[derive(Debug, Clone, Copy)]
pub struct CommitmentSettings {
    /// Between attempts to deliver a report.
    pub retry: Duration,
    /// After the request, when an undelivered report is given up.
    pub give_up: Duration,
    /// How often to look for work another process left (its lease expired).
    pub poll: Duration,
}

/// A decoded Storage Commitment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub transaction_uid: String,
    pub items: Vec<CommitmentItem>,
}

/// The Storage Commitment SCP.
#[derive(Debug)]
pub struct StorageCommitment {
    locator: Arc<Locator>,
    reader: Reader,
    settings: CommitmentSettings,
    to_check: Notify,
    to_report: Notify,
}

impl StorageCommitment {
    pub fn new(locator: Arc<Locator>, reader: Reader, settings: CommitmentSettings) -> Self {
        StorageCommitment {
            locator,
            reader,
            settings,
            to_check: Notify::new(),
            to_report: Notify::new(),
        }
    }

    /// Takes an N-ACTION: decodes it and records it durably; success only then.
    pub async fn request(
        &self,
        association: &AssociationContext,
        request: CommitmentRequest,
    ) -> Outcome {
        let action = match decode_action(&request.action_information, &request.transfer_syntax_uid)
        {
            Ok(action) => action,
            Err(outcome) => return outcome,
        };
        match self
            .locator
            .record_commitment(
                &action.transaction_uid,
                &association.calling_ae,
                association.id,
                &action.items,
            )
            .await
        {
            Ok(id) => {
                info!(association = association.id, commitment = id, transaction_uid = %action.transaction_uid, instances = action.items.len(), "storage commitment requested");
                self.to_check.notify_one();
                Outcome::success()
            }
            Err(e) => {
                warn!(association = association.id, error = %e, "cannot record a storage commitment request");
                Outcome::failure(Status::ProcessingFailure, "cannot record the request")
            }
        }
    }

    /// Checks recorded commitments until `shutdown`: this process's new ones at once, and
    /// those another process left (lease expired) every poll.
    pub async fn run_checks(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let batch = match self
                .locator
                .claim_commitments(CommitmentState::Checking, BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    warn!(error = %e, "cannot read storage commitments to check");
                    Vec::new()
                }
            };
            let idle = batch.is_empty();
            for commitment in batch {
                if *shutdown.borrow() {
                    return;
                }
                self.check(&commitment).await;
            }
            if idle {
                tokio::select! {
                    _ = self.to_check.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }

    /// Checks every instance of one commitment and records the result.
    async fn check(&self, commitment: &Commitment) {
        let started = Instant::now();
        // Owned items: a closure over borrowed ones is not general enough for a spawned task.
        let failures: Vec<Option<u16>> = futures_util::stream::iter(commitment.items.clone())
            .map(|item| async move { self.check_instance(&item).await })
            .buffered(PARALLEL_CHECKS)
            .collect()
            .await;
        let failed = failures.iter().filter(|f| f.is_some()).count();
        match self
            .locator
            .record_commitment_check(commitment.id, &failures)
            .await
        {
            Ok(()) => {
                info!(commitment = commitment.id, transaction_uid = %commitment.transaction_uid, instances = failures.len(), failed, elapsed_ms = started.elapsed().as_millis() as u64, "storage commitment checked");
                self.to_report.notify_one();
            }
            Err(e) => {
                warn!(commitment = commitment.id, error = %e, "cannot record a storage commitment check")
            }
        }
    }

    /// Why one referenced instance is not committed, or `None` if it is.
    async fn check_instance(&self, item: &CommitmentItem) -> Option<u16> {
        let uid = &item.sop_instance_uid;
        let stored = match self.locator.committed_instance(uid).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Some(NO_SUCH_OBJECT_INSTANCE),
            Err(e) => {
                warn!(sop_instance_uid = %uid, error = %e, "commitment: cannot look up an instance");
                return Some(PROCESSING_FAILURE);
            }
        };
        if stored.sop_class_uid != item.sop_class_uid {
            return Some(CLASS_INSTANCE_CONFLICT);
        }
        // The primary's range only; a damaged or missing primary is answered by an intact
        // near-line copy (and queued for repair), as any read is.
        match self.reader.read_instance(uid, &stored.object).await {
            Ok(_) => None,
            Err(e) => {
                warn!(sop_instance_uid = %uid, error = %e, "commitment: instance not intact");
                Some(PROCESSING_FAILURE)
            }
        }
    }

    /// Reports due now, claimed for this process; waits for one to become due or a poll
    /// interval when there are none.
    pub async fn due_reports(&self) -> Vec<CommitmentReport> {
        match self
            .locator
            .claim_commitments(CommitmentState::Ready, BATCH)
            .await
        {
            Ok(due) if !due.is_empty() => return due.into_iter().map(report_of).collect(),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot read storage commitment reports"),
        }
        tokio::select! {
            _ = self.to_report.notified() => {}
            _ = tokio::time::sleep(self.settings.poll) => {}
        }
        Vec::new()
    }

    /// Records how delivering report `key` went.
    pub async fn delivered(&self, key: i64, result: Result<(), String>) {
        let recorded = match result {
            Ok(()) => self.locator.commitment_reported(key).await,
            Err(reason) => match self
                .locator
                .commitment_report_failed(
                    key,
                    &reason,
                    self.settings.retry.as_millis() as i64,
                    self.settings.give_up.as_millis() as i64,
                )
                .await
            {
                Ok(true) => {
                    warn!(commitment = key, %reason, "storage commitment report given up");
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = recorded {
            warn!(commitment = key, error = %e, "cannot record a storage commitment delivery");
        }
    }
}

fn report_of(commitment: Commitment) -> CommitmentReport {
    let mut committed = Vec::new();
    let mut failed = Vec::new();
    for item in commitment.items {
        let sop = ReferencedSop {
            sop_class_uid: item.sop_class_uid,
            sop_instance_uid: item.sop_instance_uid,
        };
        match item.failure_reason {
            None => committed.push(sop),
            Some(reason) => failed.push((sop, reason)),
        }
    }
    CommitmentReport {
        key: commitment.id,
        transaction_uid: commitment.transaction_uid,
        calling_ae: commitment.calling_ae,
        association: commitment.association,
        committed,
        failed,
    }
}

/// Decodes Action Information (PS3.4 J.3.2.1): the Transaction UID and the Referenced SOP
/// Sequence, each item with its class and instance. Checked for nesting and size before
/// parsing (untrusted input).
pub fn decode_action(bytes: &[u8], transfer_syntax_uid: &str) -> Result<Action, Outcome> {
    let object =
        decode_small(bytes, transfer_syntax_uid, MAX_ACTION_INFORMATION_BYTES).map_err(|e| {
            if e.is_too_large() {
                Outcome::failure(Status::OutOfResources, e.to_string())
            } else {
                Outcome::failure(
                    Status::ProcessingFailure,
                    format!("bad Action Information: {e}"),
                )
            }
        })?;
    let text = |obj: &InMemDicomObject, tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
            .filter(|v| !v.is_empty())
    };
    let missing =
        |what: &str| Outcome::failure(Status::MissingAttribute, format!("{what} missing"));
    let transaction_uid =
        text(&object, tags::TRANSACTION_UID).ok_or_else(|| missing("Transaction UID"))?;
    let sequence = object
        .element_opt(tags::REFERENCED_SOP_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| missing("Referenced SOP Sequence"))?;
    if sequence.is_empty() {
        return Err(Outcome::failure(
            Status::InvalidArgumentValue,
            "Referenced SOP Sequence is empty",
        ));
    }
    let items = sequence
        .iter()
        .map(|item| {
            Ok(CommitmentItem {
                sop_class_uid: text(item, tags::REFERENCED_SOP_CLASS_UID)
                    .ok_or_else(|| missing("Referenced SOP Class UID"))?,
                sop_instance_uid: text(item, tags::REFERENCED_SOP_INSTANCE_UID)
                    .ok_or_else(|| missing("Referenced SOP Instance UID"))?,
                failure_reason: None,
            })
        })
        .collect::<Result<Vec<_>, Outcome>>()?;
    Ok(Action {
        transaction_uid,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    fn uid(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
    }

    fn encode(obj: &InMemDicomObject) -> Vec<u8> {
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, &TransferSyntaxRegistry.get(EXPLICIT).unwrap())
            .unwrap();
        out
    }

    fn action(items: Vec<InMemDicomObject>) -> InMemDicomObject {
        let mut obj = InMemDicomObject::from_element_iter([uid(tags::TRANSACTION_UID, "1.2.3.9")]);
        obj.put(DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(items),
        ));
        obj
    }

    #[test]
    fn action_information_is_decoded_in_order() {
        let items = (1..=3)
            .map(|i| {
                InMemDicomObject::from_element_iter([
                    uid(tags::REFERENCED_SOP_CLASS_UID, "1.2.840.10008.5.1.4.1.1.2"),
                    uid(tags::REFERENCED_SOP_INSTANCE_UID, &format!("1.2.3.{i}")),
                ])
            })
            .collect();
        let decoded = decode_action(&encode(&action(items)), EXPLICIT).unwrap();
        assert_eq!(decoded.transaction_uid, "1.2.3.9");
        let uids: Vec<_> = decoded
            .items
            .iter()
            .map(|i| i.sop_instance_uid.as_str())
            .collect();
        assert_eq!(uids, ["1.2.3.1", "1.2.3.2", "1.2.3.3"]);
    }

    #[test]
    fn incomplete_action_information_is_refused_with_a_status() {
        let empty = decode_action(&encode(&action(Vec::new())), EXPLICIT).unwrap_err();
        assert_eq!(empty.status, Status::InvalidArgumentValue);
        let no_class = action(vec![InMemDicomObject::from_element_iter([uid(
            tags::REFERENCED_SOP_INSTANCE_UID,
            "1.2.3.1",
        )])]);
        let missing = decode_action(&encode(&no_class), EXPLICIT).unwrap_err();
        assert_eq!(missing.status, Status::MissingAttribute);
        let garbage = decode_action(b"\x08\x00\x95\x11UI\xff\xff", EXPLICIT).unwrap_err();
        assert_eq!(garbage.status, Status::ProcessingFailure);
    }
}
