//! Storage Commitment reports on their way out (PS3.4 J.3.3): the services say which reports
//! are due ([`Services::due_reports`]); this module sends each as an N-EVENT-REPORT, on the
//! association its request came on while the requestor still holds it (through the
//! [`Outbox`], where open associations register), otherwise on a new association to the
//! requestor's `[[dicom.peers]]` address in which we take the SCP role (role selection), over
//! TLS for peers with `tls = true`. The result goes back to the services, which retry later
//! or give up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::{Association, AsyncAssociation, AsyncClientAssociation};
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::{ClientAssociationOptions, Pdu};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::access::Admission;
use super::association::{message_pdus, with_sources};
use super::command::{CommandField, CommandSet};
use super::dimse::{DimseEvent, MessageAssembler};
use super::handler::{CommitmentReport, Services};
use super::{RetrieveSettings, Wire};
use crate::model::sop_class::{STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE};
use crate::model::transfer_syntax::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};

/// Reports waiting for one open association, at most (the deliverer waits for each).
const PER_ASSOCIATION: usize = 4;

/// Reports sent at once on new associations (one slow or unreachable peer must not hold up
/// the others).
const PARALLEL_DELIVERIES: usize = 4;

/// A report handed to an open association, and where it says how sending went.
pub(crate) struct Outgoing {
    pub report: CommitmentReport,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// The open associations that may carry a report, by association number.
#[derive(Debug, Default)]
pub struct Outbox {
    open: Mutex<HashMap<u64, mpsc::Sender<Outgoing>>>,
}

/// An association's place in the [`Outbox`]; leaving it (drop) closes its channel.
pub(crate) struct Registration {
    outbox: Arc<Outbox>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.outbox
            .open
            .lock()
            .expect("outbox lock")
            .remove(&self.id);
    }
}

impl Outbox {
    /// Registers open association `id` as able to carry reports.
    pub(crate) fn register(self: &Arc<Self>, id: u64) -> (Registration, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(PER_ASSOCIATION);
        self.open.lock().expect("outbox lock").insert(id, tx);
        (
            Registration {
                outbox: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Sends `report` on open association `id`; an error if it is not open (any more), is
    /// busy, or the requestor did not answer in `timeout`.
    async fn offer(
        &self,
        id: u64,
        report: CommitmentReport,
        timeout: Duration,
    ) -> Result<(), String> {
        let sender = self.open.lock().expect("outbox lock").get(&id).cloned();
        let sender = sender.ok_or("the association it came on is closed")?;
        let (done, result) = oneshot::channel();
        sender
            .try_send(Outgoing { report, done })
            .map_err(|_| "the association it came on is closed or busy")?;
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the association it came on ended".into()),
            Err(_) => Err("no N-EVENT-REPORT-RSP in time".into()),
        }
    }
}

/// Where and how reports are sent on new associations.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub admission: Admission,
    /// Connect timeout, PDU size and TLS client, as for C-MOVE destinations.
    pub retrieve: RetrieveSettings,
    /// How long the requestor may take to answer.
    pub dimse_timeout: Duration,
}

/// Sends due reports until `shutdown`.
pub async fn deliver_reports<S: Services>(
    services: Arc<S>,
    outbox: Arc<Outbox>,
    settings: ReportSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let due = tokio::select! {
            due = services.due_reports() => due,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        futures_util::stream::iter(due)
            .for_each_concurrent(PARALLEL_DELIVERIES, |report| {
                let services = services.clone();
                let outbox = outbox.clone();
                let settings = &settings;
                async move {
                    let key = report.key;
                    let result = deliver(&outbox, settings, report).await;
                    services.report_delivered(key, result).await;
                }
            })
            .await;
    }
}

/// Delivers one report: on its own association if open, else on a new one.
async fn deliver(
    outbox: &Outbox,
    settings: &ReportSettings,
    report: CommitmentReport,
) -> Result<(), String> {
    if let Some(id) = report.association {
        match outbox
            .offer(id, report.clone(), settings.dimse_timeout * 2)
            .await
        {
            Ok(()) => {
                info!(transaction_uid = %report.transaction_uid, calling_ae = %report.calling_ae, association = id, failed = report.failed.len(), "commitment report sent on the request's association");
                return Ok(());
            }
            Err(reason) => {
                debug!(transaction_uid = %report.transaction_uid, association = id, %reason, "commitment report not sent on the request's association")
            }
        }
    }
    let result = on_new_association(settings, &report).await;
    match &result {
        Ok(()) => {
            info!(transaction_uid = %report.transaction_uid, calling_ae = %report.calling_ae, failed = report.failed.len(), "commitment report sent on a new association")
        }
        Err(reason) => {
            warn!(transaction_uid = %report.transaction_uid, calling_ae = %report.calling_ae, %reason, "commitment report not delivered")
        }
    }
    result
}

/// Opens an association to the requestor, proposing Storage Commitment with us in the SCP
/// role, and sends the report.
async fn on_new_association(
    settings: &ReportSettings,
    report: &CommitmentReport,
) -> Result<(), String> {
    let (host, port, tls) = settings
        .admission
        .destination(&report.calling_ae)
        .ok_or_else(|| format!("no [[dicom.peers]] address for {}", report.calling_ae))?;
    let address = format!("{host}:{port}");
    let options = ClientAssociationOptions::new()
        .calling_ae_title(settings.admission.our_aet().to_string())
        .called_ae_title(report.calling_ae.clone())
        .max_pdu_length(settings.retrieve.max_pdu_length)
        .with_presentation_context(
            STORAGE_COMMITMENT_PUSH,
            vec![EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN],
        )
        .with_role_selection(STORAGE_COMMITMENT_PUSH, false, true);
    let connect = settings.retrieve.connect_timeout;
    let refused = |e: String| format!("cannot associate with {}: {e}", report.calling_ae);
    let late = |_| format!("{} did not answer in time", report.calling_ae);
    match (tls, &settings.retrieve.tls) {
        (false, _) => {
            let assoc = tokio::time::timeout(connect, options.establish_async(address.as_str()))
                .await
                .map_err(late)?
                .map_err(|e| refused(with_sources(&e)))?;
            send_and_release(assoc, report, settings.dimse_timeout).await
        }
        (true, Some(client)) => {
            let options = options.tls_config(client.clone()).server_name(host);
            let assoc =
                tokio::time::timeout(connect, options.establish_tls_async(address.as_str()))
                    .await
                    .map_err(late)?
                    .map_err(|e| refused(with_sources(&e)))?;
            send_and_release(assoc, report, settings.dimse_timeout).await
        }
        (true, None) => Err(format!(
            "{}: tls = true but no TLS client configured",
            report.calling_ae
        )),
    }
}

async fn send_and_release<W: Wire>(
    mut assoc: AsyncClientAssociation<W>,
    report: &CommitmentReport,
    timeout: Duration,
) -> Result<(), String>
where
    AsyncClientAssociation<W>: AsyncAssociation<W>,
{
    let context = assoc
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax == STORAGE_COMMITMENT_PUSH
        })
        .map(|pc| (pc.id, pc.transfer_syntax.clone()));
    let roles = assoc.requestor_roles_for(STORAGE_COMMITMENT_PUSH);
    let result = match context {
        None => Err(format!(
            "{} did not accept Storage Commitment",
            report.calling_ae
        )),
        Some(_) if !roles.scp => Err(format!(
            "{} did not accept us in the Storage Commitment SCP role",
            report.calling_ae
        )),
        Some((id, ts)) => send_report(&mut assoc, id, &ts, report, 1, timeout).await,
    };
    if result.is_ok() {
        let _ = tokio::time::timeout(timeout, assoc.release()).await;
    } else {
        let _ = tokio::time::timeout(timeout, assoc.abort()).await;
    }
    result
}

/// Sends one N-EVENT-REPORT-RQ on a client association and waits for its response.
async fn send_report<A: AsyncAssociation<W> + Send, W: Wire>(
    assoc: &mut A,
    context_id: u8,
    transfer_syntax_uid: &str,
    report: &CommitmentReport,
    message_id: u16,
    timeout: Duration,
) -> Result<(), String> {
    let (command, data) = event_report(report, message_id, transfer_syntax_uid)?;
    for pdu in message_pdus(
        context_id,
        &command,
        Some(&data),
        assoc.peer_max_pdu_length(),
    ) {
        tokio::time::timeout(timeout, AsyncAssociation::send(assoc, &pdu))
            .await
            .map_err(|_| "sending N-EVENT-REPORT-RQ timed out".to_string())?
            .map_err(|e| format!("sending N-EVENT-REPORT-RQ: {e}"))?;
    }
    let mut assembler = MessageAssembler::default();
    loop {
        let pdu = tokio::time::timeout(timeout, AsyncAssociation::receive(assoc))
            .await
            .map_err(|_| "no N-EVENT-REPORT-RSP in time".to_string())?
            .map_err(|e| format!("waiting for N-EVENT-REPORT-RSP: {e}"))?;
        let Pdu::PData { data } = pdu else {
            return Err("the requestor ended the association instead of answering".into());
        };
        for pdv in data {
            if let Some(DimseEvent::Command { command, .. }) =
                assembler.push(pdv).map_err(|e| e.to_string())?
            {
                return answer_of(&command, message_id);
            }
        }
    }
}

/// Whether an N-EVENT-REPORT-RSP acknowledges report `message_id`.
pub(crate) fn answer_of(rsp: &CommandSet, message_id: u16) -> Result<(), String> {
    if rsp.command_field() != Ok(CommandField::NEventReportRsp)
        || rsp.message_id_being_responded_to() != Ok(message_id)
    {
        return Err("the requestor answered something other than N-EVENT-REPORT-RSP".into());
    }
    match rsp.status_code() {
        Some(0x0000) => Ok(()),
        code => Err(format!(
            "the requestor answered N-EVENT-REPORT with status {:04X}",
            code.unwrap_or(0xFFFF)
        )),
    }
}

/// The N-EVENT-REPORT-RQ command and its Event Information for `report` (PS3.4 J.3.3.1):
/// Event Type 1 when every instance is committed, 2 when some failed.
pub(crate) fn event_report(
    report: &CommitmentReport,
    message_id: u16,
    transfer_syntax_uid: &str,
) -> Result<(CommandSet, Vec<u8>), String> {
    let event_type = if report.failed.is_empty() { 1 } else { 2 };
    let command = CommandSet::event_report(
        message_id,
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_PUSH_INSTANCE,
        event_type,
    );
    let uid = |tag, value: &str| DataElement::new(tag, VR::UI, PrimitiveValue::from(value));
    let mut info = InMemDicomObject::new_empty();
    info.put(uid(tags::TRANSACTION_UID, &report.transaction_uid));
    let referenced = |sop: &super::handler::ReferencedSop| {
        InMemDicomObject::from_element_iter([
            uid(tags::REFERENCED_SOP_CLASS_UID, &sop.sop_class_uid),
            uid(tags::REFERENCED_SOP_INSTANCE_UID, &sop.sop_instance_uid),
        ])
    };
    if !report.committed.is_empty() {
        let items: Vec<InMemDicomObject> = report.committed.iter().map(referenced).collect();
        info.put(DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(items),
        ));
    }
    if !report.failed.is_empty() {
        let items: Vec<InMemDicomObject> = report
            .failed
            .iter()
            .map(|(sop, reason)| {
                let mut item = referenced(sop);
                item.put(DataElement::new(
                    tags::FAILURE_REASON,
                    VR::US,
                    PrimitiveValue::from(*reason),
                ));
                item
            })
            .collect();
        info.put(DataElement::new(
            tags::FAILED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(items),
        ));
    }
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax_uid}"))?;
    let mut out = Vec::new();
    info.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| format!("encoding the Event Information: {e}"))?;
    Ok((command, out))
}
