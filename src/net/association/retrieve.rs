//! C-MOVE and C-GET on an association. The services find the instances and read their bytes;
//! this module runs the C-STORE sub-operations (to the move destination over new associations,
//! or back over this one for C-GET), reports Pending counts after each, watches for C-CANCEL,
//! and sends the final status with the Failed SOP Instance UID List.

use std::sync::Arc;
use std::time::Duration;

use crate::net::Wire;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::{Association, AsyncClientAssociation, AsyncServerAssociation};
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::{ClientAssociationOptions, Pdu};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::store_scu::{self, StoreCommand, SubOpError};
use super::{Header, Session};
use crate::model::transfer_syntax::{
    EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use crate::net::command::{CommandField, SubOperations};
use crate::net::dimse::{DimseEvent, MessageAssembler};
use crate::net::handler::{RetrieveRequest, Services};
use crate::service::Status;
use crate::service::{Outcome, Piece, Retrieval, RetrieveItem};

/// Settings of the retrieve side of the network layer.
#[derive(Debug, Clone)]
pub struct RetrieveSettings {
    /// Associations opened in parallel to one C-MOVE destination.
    pub move_associations: usize,
    /// Largest PDU we accept on associations we open.
    pub max_pdu_length: u32,
    /// How long connecting and negotiating with a C-MOVE destination may take.
    pub connect_timeout: Duration,
    /// The TLS client side, for destinations with `tls = true` (None: not configured).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// C-MOVE and C-GET operations that may run at once over all associations
    /// (`[retrieve] max_concurrent`); one association runs one at a time.
    pub max_concurrent: usize,
    /// The `max_concurrent` slots, shared by every association.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// A C-MOVE sub-association, over plain TCP or TLS.
enum Sub {
    Plain(AsyncClientAssociation<tokio::net::TcpStream>),
    Tls(AsyncClientAssociation<dicom_ul::association::client::AsyncTlsStream>),
}

/// A C-MOVE destination: a `[[dicom.peers]]` entry.
#[derive(Debug, Clone)]
struct Destination {
    aet: String,
    host: String,
    /// `host:port`.
    address: String,
    tls: bool,
}

/// Most presentation contexts one association may propose (ids 1, 3, ... 255).
const MAX_CONTEXTS: usize = 128;

/// What happened to one instance.
#[derive(Debug, Clone)]
enum Done {
    Completed,
    Warning,
    Failed(String),
}

/// Running counts of one C-MOVE/C-GET.
#[derive(Debug, Default)]
struct Tally {
    total: u32,
    completed: u32,
    failed: u32,
    warning: u32,
    failed_uids: Vec<String>,
}

impl Tally {
    fn record(&mut self, item: &RetrieveItem, done: &Done) {
        match done {
            Done::Completed => self.completed += 1,
            Done::Warning => self.warning += 1,
            Done::Failed(_) => {
                self.failed += 1;
                self.failed_uids.push(item.sop_instance_uid.clone());
            }
        }
    }

    fn remaining(&self) -> u32 {
        self.total - self.completed - self.failed - self.warning
    }

    fn counts(&self, with_remaining: bool) -> SubOperations {
        SubOperations {
            remaining: with_remaining.then(|| self.remaining()),
            completed: self.completed,
            failed: self.failed,
            warning: self.warning,
        }
    }
}

/// One instance result reported by a C-MOVE worker.
struct WorkerReport {
    index: usize,
    done: Done,
}

impl<S: Services> Session<S> {
    /// Runs a C-MOVE (`is_move`) or C-GET whose identifier has fully arrived.
    pub(super) async fn run_retrieve<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        identifier: Vec<u8>,
        is_move: bool,
    ) -> Result<(), String> {
        let op = if is_move { "C-MOVE" } else { "C-GET" };
        // Held until the final response is sent.
        let Ok(_slot) = self.retrieve.slots.clone().try_acquire_owned() else {
            info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, operation = op, "retrieve refused: every retrieve slot is busy");
            let outcome = Outcome::failure(
                Status::SubOperationsRefused,
                format!(
                    "[retrieve] max_concurrent = {}: every retrieve slot is busy",
                    self.retrieve.max_concurrent
                ),
            );
            return self.respond(assoc, header, outcome).await;
        };
        let destination = if is_move {
            let aet = header.move_destination.clone().unwrap_or_default();
            match self.admission.destination(&aet) {
                Some((host, port, tls)) => Some(Destination {
                    address: format!("{host}:{port}"),
                    host: host.to_string(),
                    tls,
                    aet,
                }),
                None => {
                    info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, destination = %aet, "C-MOVE to an unknown destination");
                    let outcome = Outcome::failure(
                        Status::MoveDestinationUnknown,
                        format!("unknown move destination {aet:?}"),
                    );
                    return self.respond(assoc, header, outcome).await;
                }
            }
        } else {
            None
        };
        let request = RetrieveRequest {
            sop_class_uid: header.sop_class_uid.clone().unwrap_or_default(),
            transfer_syntax_uid: self.contexts[&header.context_id].transfer_syntax.clone(),
            identifier,
        };
        let retrieval = match self.services.begin_retrieve(&self.ctx, request).await {
            Ok(r) => Arc::new(r),
            Err(outcome) => {
                info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, status = %outcome.status, comment = outcome.comment.as_deref().unwrap_or(""), "{op} refused");
                return self.respond(assoc, header, outcome).await;
            }
        };
        let mut tally = Tally {
            total: retrieval.items().len() as u32,
            ..Tally::default()
        };
        info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, instances = tally.total, destination = destination.as_ref().map(|d| d.aet.as_str()).unwrap_or(""), "{op} started");
        let mut first_failure = None;
        let cancelled = match destination {
            Some(destination) => {
                self.move_to(
                    assoc,
                    header,
                    &retrieval,
                    &destination,
                    &mut tally,
                    &mut first_failure,
                )
                .await?
            }
            None => {
                self.get_back(assoc, header, &retrieval, &mut tally, &mut first_failure)
                    .await?
            }
        };

        let (status, comment) = if cancelled {
            (Status::Cancel, None)
        } else if tally.failed == 0 && tally.warning == 0 {
            (Status::Success, None)
        } else if tally.completed == 0 && tally.warning == 0 {
            (Status::SubOperationsRefused, first_failure)
        } else {
            (Status::SubOperationsWithFailures, first_failure)
        };
        info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, completed = tally.completed, failed = tally.failed, warning = tally.warning, status = %status, "{op} done");
        let failed_list = (!tally.failed_uids.is_empty())
            .then(|| {
                failed_uid_list(
                    &tally.failed_uids,
                    &self.contexts[&header.context_id].transfer_syntax,
                )
            })
            .flatten();
        let outcome = Outcome { status, comment };
        self.respond_counts(
            assoc,
            header,
            outcome,
            tally.counts(cancelled),
            failed_list.as_deref(),
        )
        .await
    }

    /// C-GET: sub-operations go back over this association, on the storage contexts the
    /// requestor accepted with the SCP role. Returns whether a C-CANCEL stopped it.
    async fn get_back<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        retrieval: &Arc<S::Retrieval>,
        tally: &mut Tally,
        first_failure: &mut Option<String>,
    ) -> Result<bool, String> {
        let items = retrieval.items();
        let plan = plan(items, 0..items.len(), &accepted_contexts(&*assoc, true));
        for &index in &plan.unsendable {
            let done = Done::Failed(format!(
                "no presentation context with the Storage SCP role for {}",
                items[index].sop_class_uid
            ));
            self.note_done(&items[index], &done, first_failure);
            tally.record(&items[index], &done);
        }
        let mut pieces = retrieval.read(plan.reads());
        let mut message_id: u16 = 1;
        for planned in &plan.entries {
            if self.cancel_requested(assoc, header.message_id).await? {
                return Ok(true);
            }
            let item = &items[planned.index];
            let (done, cancel_seen) = sub_operation(
                assoc,
                &mut self.assembler,
                self.send_timeout,
                &mut pieces,
                planned,
                item,
                &mut message_id,
                None,
                Some(header.message_id),
            )
            .await
            .map_err(|e| format!("C-GET sub-operation: {e}"))?;
            self.note_done(item, &done, first_failure);
            tally.record(item, &done);
            if cancel_seen {
                return Ok(true);
            }
            self.respond_counts(assoc, header, pending(), tally.counts(true), None)
                .await?;
        }
        Ok(false)
    }

    /// C-MOVE: workers open associations to the destination and run the sub-operations; this
    /// loop relays their results as Pending responses and watches the requestor for C-CANCEL.
    #[allow(clippy::too_many_arguments)]
    async fn move_to<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        retrieval: &Arc<S::Retrieval>,
        destination: &Destination,
        tally: &mut Tally,
        first_failure: &mut Option<String>,
    ) -> Result<bool, String> {
        let items = retrieval.items();
        if items.is_empty() {
            return Ok(false);
        }
        let workers = self.retrieve.move_associations.clamp(1, items.len());
        let per_worker = items.len().div_ceil(workers);
        let (report_tx, mut reports) = mpsc::channel::<WorkerReport>(64);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        for w in 0..workers {
            let share: Vec<usize> =
                (w * per_worker..((w + 1) * per_worker).min(items.len())).collect();
            let job = MoveJob {
                retrieval: retrieval.clone(),
                share,
                our_aet: self.admission.our_aet().to_string(),
                destination: destination.clone(),
                originator: (self.ctx.calling_ae.clone(), header.message_id),
                settings: self.retrieve.clone(),
                timeout: self.send_timeout,
                association: self.ctx.id,
            };
            tokio::spawn(job.run(report_tx.clone(), cancel_rx.clone()));
        }
        drop(report_tx);

        let mut cancelled = false;
        loop {
            enum Event {
                Report(Option<WorkerReport>),
                Pdu(Result<Pdu, dicom_ul::association::Error>),
            }
            // The receive is dropped when a report wins; bytes it read stay buffered.
            let event = tokio::select! {
                r = reports.recv() => Event::Report(r),
                p = assoc.receive(), if !cancelled => Event::Pdu(p),
            };
            match event {
                Event::Report(None) => break,
                Event::Report(Some(report)) => {
                    let item = &items[report.index];
                    self.note_done(item, &report.done, first_failure);
                    tally.record(item, &report.done);
                    self.respond_counts(assoc, header, pending(), tally.counts(true), None)
                        .await?;
                }
                Event::Pdu(Err(e)) => {
                    let _ = cancel_tx.send(true);
                    return Err(format!("while running C-MOVE: {e}"));
                }
                Event::Pdu(Ok(Pdu::PData { data })) => {
                    for pdv in data {
                        match self.assembler.push(pdv).map_err(|e| e.to_string())? {
                            Some(DimseEvent::Command { command, .. })
                                if command.command_field() == Ok(CommandField::CCancelRq)
                                    && command.message_id_being_responded_to()
                                        == Ok(header.message_id) =>
                            {
                                info!(association = self.ctx.id, "C-CANCEL: stopping the C-MOVE");
                                cancelled = true;
                                let _ = cancel_tx.send(true);
                            }
                            None => {}
                            Some(_) => {
                                let _ = cancel_tx.send(true);
                                return Err("new request while a C-MOVE is in progress".into());
                            }
                        }
                    }
                }
                Event::Pdu(Ok(_)) => {
                    let _ = cancel_tx.send(true);
                    return Err("A-RELEASE or A-ABORT while running C-MOVE".into());
                }
            }
        }
        Ok(cancelled)
    }

    fn note_done(&self, item: &RetrieveItem, done: &Done, first_failure: &mut Option<String>) {
        if let Done::Failed(reason) = done {
            warn!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, sop_instance_uid = %item.sop_instance_uid, %reason, "sub-operation failed");
            first_failure.get_or_insert_with(|| reason.clone());
        }
    }
}

fn pending() -> Outcome {
    Outcome {
        status: Status::Pending,
        comment: None,
    }
}

fn classify(status: Status) -> Done {
    match status {
        Status::Success => Done::Completed,
        Status::StoreWarning(_) => Done::Warning,
        other => Done::Failed(format!("destination answered {other}")),
    }
}

/// Waits for the start of plan entry `index`: its length and warning, or its failure reason
/// if the reader gave up.
async fn next_start(
    pieces: &mut mpsc::Receiver<Piece>,
    index: usize,
) -> Result<(u64, Option<String>), String> {
    match pieces.recv().await {
        Some(Piece::Start {
            index: i,
            length,
            warning,
        }) if i == index => Ok((length, warning)),
        Some(Piece::Failed { index: i, reason }) if i == index => Err(reason),
        Some(_) => Err("reader out of step".into()),
        None => Err("reader stopped".into()),
    }
}

/// An accepted presentation context: id, abstract syntax, transfer syntax.
type Accepted = (u8, String, String);

/// The contexts of an association we may send C-STOREs on: all accepted ones, or (C-GET)
/// those for which the requestor took the Storage SCP role.
fn accepted_contexts(assoc: &impl Association, scp_role_only: bool) -> Vec<Accepted> {
    assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .filter(|pc| !scp_role_only || assoc.requestor_roles_for(&pc.abstract_syntax).scp)
        .map(|pc| {
            (
                pc.id,
                pc.abstract_syntax.clone(),
                pc.transfer_syntax.clone(),
            )
        })
        .collect()
}

/// One instance to send: on which context, in which transfer syntax.
struct Planned {
    index: usize,
    context: u8,
    transfer_syntax: String,
}

/// What can be sent over an association, and what cannot (no suitable context).
struct Plan {
    entries: Vec<Planned>,
    unsendable: Vec<usize>,
}

impl Plan {
    /// What the reader is asked for: item and transfer syntax, in sending order.
    fn reads(&self) -> Vec<(usize, String)> {
        self.entries
            .iter()
            .map(|p| (p.index, p.transfer_syntax.clone()))
            .collect()
    }
}

fn plan(
    items: &[RetrieveItem],
    indexes: impl IntoIterator<Item = usize>,
    accepted: &[Accepted],
) -> Plan {
    let mut plan = Plan {
        entries: Vec::new(),
        unsendable: Vec::new(),
    };
    for index in indexes {
        match choose_context(&items[index], accepted) {
            Some((context, transfer_syntax)) => plan.entries.push(Planned {
                index,
                context,
                transfer_syntax,
            }),
            None => plan.unsendable.push(index),
        }
    }
    plan
}

/// The context to send `item` on: its stored transfer syntax if accepted (bytes unchanged),
/// else Explicit, then Implicit VR Little Endian, then (for the rare old workstation that
/// takes nothing else) Explicit VR Big Endian, transcoded.
fn choose_context(item: &RetrieveItem, accepted: &[Accepted]) -> Option<(u8, String)> {
    let find = |ts: &str| {
        accepted
            .iter()
            .find(|(_, a, t)| *a == item.sop_class_uid && t == ts)
            .map(|(id, _, t)| (*id, t.clone()))
    };
    find(&item.transfer_syntax_uid)
        .or_else(|| find(EXPLICIT_VR_LITTLE_ENDIAN))
        .or_else(|| find(IMPLICIT_VR_LITTLE_ENDIAN))
        .or_else(|| find(EXPLICIT_VR_BIG_ENDIAN))
}

/// One C-STORE sub-operation for a planned instance: waits for the reader to start it, sends
/// it, and returns what happened and whether a watched C-CANCEL arrived meanwhile. An
/// instance the reader could not provide fails without being sent.
#[allow(clippy::too_many_arguments)]
async fn sub_operation<A, W>(
    assoc: &mut A,
    assembler: &mut MessageAssembler,
    timeout: Duration,
    pieces: &mut mpsc::Receiver<Piece>,
    planned: &Planned,
    item: &RetrieveItem,
    message_id: &mut u16,
    originator: Option<(&str, u16)>,
    watch_cancel: Option<u16>,
) -> Result<(Done, bool), SubOpError>
where
    A: dicom_ul::association::AsyncAssociation<W> + Send,
    W: Wire,
{
    let (length, warning) = match next_start(pieces, planned.index).await {
        Ok(start) => start,
        Err(reason) => return Ok((Done::Failed(reason), false)),
    };
    let command = StoreCommand {
        context_id: planned.context,
        message_id: *message_id,
        sop_class_uid: &item.sop_class_uid,
        sop_instance_uid: &item.sop_instance_uid,
        originator,
        length,
    };
    *message_id = message_id.wrapping_add(1).max(1);
    let answer = store_scu::store(assoc, assembler, timeout, command, pieces, watch_cancel).await?;
    let done = match (classify(answer.status), warning) {
        (Done::Completed, Some(warning)) => {
            warn!(sop_instance_uid = %item.sop_instance_uid, %warning, "sent a substitute for the stored data set");
            Done::Warning
        }
        (done, _) => done,
    };
    Ok((done, answer.cancel_seen))
}

/// The identifier of a final response with failures: Failed SOP Instance UID List.
fn failed_uid_list(uids: &[String], transfer_syntax_uid: &str) -> Option<Vec<u8>> {
    // Explicit VR gives UI a 16-bit length: keep the list under it.
    let mut kept = Vec::new();
    let mut len = 0;
    for uid in uids {
        if len + uid.len() + 1 > 65_000 {
            break;
        }
        len += uid.len() + 1;
        kept.push(uid.clone());
    }
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        tags::FAILED_SOP_INSTANCE_UID_LIST,
        VR::UI,
        PrimitiveValue::Strs(kept.into_iter().collect()),
    ));
    let ts = TransferSyntaxRegistry.get(transfer_syntax_uid)?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).ok()?;
    Some(out)
}

/// One C-MOVE worker: its share of the instances over its own association.
struct MoveJob<R> {
    retrieval: Arc<R>,
    share: Vec<usize>,
    our_aet: String,
    destination: Destination,
    originator: (String, u16),
    settings: RetrieveSettings,
    timeout: Duration,
    association: u64,
}

impl<R: Retrieval> MoveJob<R> {
    async fn run(self, reports: mpsc::Sender<WorkerReport>, cancel: watch::Receiver<bool>) {
        let items = self.retrieval.items();
        let fail_all = |reason: String, from: usize| {
            let reports = reports.clone();
            let share = self.share[from..].to_vec();
            async move {
                for index in share {
                    let done = Done::Failed(reason.clone());
                    if reports.send(WorkerReport { index, done }).await.is_err() {
                        return;
                    }
                }
            }
        };

        // Propose, per SOP class, each stored transfer syntax on its own context (so the
        // destination cannot pick another), plus one uncompressed fallback context.
        let mut proposals: Vec<(String, Vec<String>)> = Vec::new();
        for &i in &self.share {
            let item = &items[i];
            let exact = (
                item.sop_class_uid.clone(),
                vec![item.transfer_syntax_uid.clone()],
            );
            let fallback = (
                item.sop_class_uid.clone(),
                vec![
                    EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                    IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
                ],
            );
            for p in [exact, fallback] {
                if !proposals.contains(&p) && proposals.len() < MAX_CONTEXTS {
                    proposals.push(p);
                }
            }
        }
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(self.our_aet.clone())
            .called_ae_title(self.destination.aet.clone())
            .max_pdu_length(self.settings.max_pdu_length);
        for (abstract_syntax, ts) in &proposals {
            options = options.with_presentation_context(abstract_syntax.clone(), ts.clone());
        }
        let connect = self.settings.connect_timeout;
        let address = self.destination.address.as_str();
        let established = match (&self.settings.tls, self.destination.tls) {
            (_, false) => tokio::time::timeout(connect, options.establish_async(address))
                .await
                .map(|r| r.map(Sub::Plain)),
            (Some(tls), true) => {
                let options = options
                    .tls_config(tls.clone())
                    .server_name(&self.destination.host);
                tokio::time::timeout(connect, options.establish_tls_async(address))
                    .await
                    .map(|r| r.map(Sub::Tls))
            }
            // Refused when the config is loaded, so not expected here.
            (None, true) => {
                let reason = format!(
                    "{}: tls = true but no TLS client configured",
                    self.destination.aet
                );
                fail_all(reason, 0).await;
                return;
            }
        };
        match established {
            Ok(Ok(Sub::Plain(mut sub))) => {
                let _ = sub.inner_stream().set_nodelay(true);
                self.send_share(sub, &reports, &cancel).await;
            }
            Ok(Ok(Sub::Tls(mut sub))) => {
                let _ = sub.inner_stream().get_ref().0.set_nodelay(true);
                self.send_share(sub, &reports, &cancel).await;
            }
            Ok(Err(e)) => {
                warn!(association = self.association, destination = %self.destination.aet, error = %e, "cannot associate with the move destination");
                fail_all(
                    format!("cannot associate with {}: {e}", self.destination.aet),
                    0,
                )
                .await;
            }
            Err(_) => {
                warn!(association = self.association, destination = %self.destination.aet, "move destination did not answer in time");
                fail_all(
                    format!("{} did not answer in time", self.destination.aet),
                    0,
                )
                .await;
            }
        }
    }

    /// Runs this job's share of the sub-operations on the established association `sub`.
    async fn send_share<W: Wire>(
        &self,
        mut sub: AsyncClientAssociation<W>,
        reports: &mpsc::Sender<WorkerReport>,
        cancel: &watch::Receiver<bool>,
    ) {
        let items = self.retrieval.items();
        let plan = plan(
            items,
            self.share.iter().copied(),
            &accepted_contexts(&sub, false),
        );
        for &index in &plan.unsendable {
            let done = Done::Failed(format!(
                "{} accepted no context for SOP class {}",
                self.destination.aet, items[index].sop_class_uid
            ));
            if reports.send(WorkerReport { index, done }).await.is_err() {
                let _ = sub.abort().await;
                return;
            }
        }
        let mut pieces = self.retrieval.read(plan.reads());
        let mut assembler = MessageAssembler::default();
        let mut message_id: u16 = 1;
        let originator = Some((self.originator.0.as_str(), self.originator.1));
        for (n, planned) in plan.entries.iter().enumerate() {
            if *cancel.borrow() {
                break;
            }
            let item = &items[planned.index];
            let done = match sub_operation(
                &mut sub,
                &mut assembler,
                self.timeout,
                &mut pieces,
                planned,
                item,
                &mut message_id,
                originator,
                None,
            )
            .await
            {
                Ok((done, _)) => done,
                Err(e) => {
                    // This and every later instance of the share fail with the association.
                    let reason = e.to_string();
                    warn!(association = self.association, destination = %self.destination.aet, %reason, "move sub-association lost");
                    for p in &plan.entries[n..] {
                        let done = Done::Failed(reason.clone());
                        let _ = reports
                            .send(WorkerReport {
                                index: p.index,
                                done,
                            })
                            .await;
                    }
                    if matches!(e, SubOpError::ReaderMidway(_)) {
                        let _ = sub.abort().await;
                    }
                    return;
                }
            };
            let report = WorkerReport {
                index: planned.index,
                done,
            };
            if reports.send(report).await.is_err() {
                let _ = sub.abort().await;
                return;
            }
        }
        let _ = tokio::time::timeout(self.timeout, sub.release()).await;
    }
}
