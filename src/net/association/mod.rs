//! One established association: receive PDUs, assemble DIMSE messages, dispatch them to the
//! services, send responses. Reading, dispatching and storing are separate concerns: this
//! module only moves messages between the wire and [`Services`].

mod commitment;
mod find;
mod retrieve;
mod store_scu;

pub use retrieve::RetrieveSettings;

use commitment::check_action;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::net::Wire;
use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::access::Admission;
use super::command::{CommandField, CommandSet, Response, SubOperations};
use super::commitment::{Outbox, Outgoing, Registration};
use super::dimse::{DimseEvent, MessageAssembler};
use super::handler::{AssociationContext, Services};
use crate::config::Service;
use crate::metrics;
use crate::model::sop_class::STORAGE_COMMITMENT_PUSH;
use crate::model::transfer_syntax::VERIFICATION_SOP_CLASS;
use crate::service::Status;
use crate::service::{Outcome, StoreRequest, StoreSink, StoreStart};

/// Timeouts that apply inside an association.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Wait for the next PDU while a message is in progress.
    pub dimse: Duration,
    /// Wait for the next message.
    pub idle: Duration,
}

/// Why an association ended; for the closing log line.
#[derive(Debug)]
enum End {
    Released,
    AbortedByPeer,
    Closed(String),
    Aborted(String),
    Shutdown,
}

/// A message whose data set is still arriving.
struct InFlight<K> {
    header: Header,
    state: Receiving<K>,
}

enum Receiving<K> {
    /// Fragments go to the sink.
    Writing(K),
    /// A C-FIND/C-MOVE/C-GET identifier: small, gathered whole (up to
    /// [`MAX_IDENTIFIER_LEN`]).
    Collecting(Vec<u8>),
    /// The answer is already known; fragments are discarded.
    Draining(Outcome),
    /// A data set nothing answers (after an N-EVENT-REPORT-RSP): discarded.
    Ignoring,
}

/// Identifiers larger than this are refused; real ones are a few kilobytes.
const MAX_IDENTIFIER_LEN: usize = 1024 * 1024;

/// Action Information (N-ACTION) larger than this is refused: about 60 000 referenced
/// instances.
const MAX_ACTION_INFORMATION_LEN: usize = 8 * 1024 * 1024;

/// A commitment report sent on this association, waiting for its N-EVENT-REPORT-RSP.
struct AwaitingReport {
    message_id: u16,
    deadline: tokio::time::Instant,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// A negotiated presentation context.
struct Context {
    abstract_syntax: String,
    transfer_syntax: String,
}

/// Serves one association until it is released, aborted, times out or the server shuts down.
/// In-flight operations finish before a shutdown aborts the association.
pub(crate) async fn serve<S: Services, W: Wire>(
    mut assoc: AsyncServerAssociation<W>,
    ctx: AssociationContext,
    services: Arc<S>,
    admission: Arc<Admission>,
    timeouts: Timeouts,
    retrieve: RetrieveSettings,
    outbox: Arc<Outbox>,
    mut shutdown: watch::Receiver<bool>,
) {
    let contexts: HashMap<u8, Context> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                Context {
                    abstract_syntax: pc.abstract_syntax.clone(),
                    transfer_syntax: pc.transfer_syntax.clone(),
                },
            )
        })
        .collect();
    info!(
        association = ctx.id,
        calling_ae = %ctx.calling_ae,
        peer = %ctx.peer,
        accepted_contexts = contexts.len(),
        max_pdu = assoc.requestor_max_pdu_length(),
        "association established"
    );
    // Commitment reports may come back on this association if it can carry them.
    let (_registration, mut reports): (Option<Registration>, Option<mpsc::Receiver<Outgoing>>) =
        match contexts
            .values()
            .any(|c| c.abstract_syntax == STORAGE_COMMITMENT_PUSH)
        {
            true => {
                let (registration, reports) = outbox.register(ctx.id);
                (Some(registration), Some(reports))
            }
            false => (None, None),
        };
    let mut session = Session {
        ctx,
        send_timeout: timeouts.dimse,
        services,
        admission,
        retrieve,
        contexts,
        assembler: MessageAssembler::default(),
        in_flight: None,
        awaiting: None,
        next_message_id: 1,
        stored: 0,
        failed: 0,
    };

    let end = loop {
        let in_message = session.assembler.in_message();
        let received = if in_message {
            tokio::time::timeout(timeouts.dimse, assoc.receive()).await
        } else {
            if *shutdown.borrow() {
                break End::Shutdown;
            }
            let wait = match &session.awaiting {
                Some(a) => timeouts.idle.min(
                    a.deadline
                        .saturating_duration_since(tokio::time::Instant::now()),
                ),
                None => timeouts.idle,
            };
            let can_send = session.awaiting.is_none();
            let outgoing = tokio::select! {
                received = tokio::time::timeout(wait, assoc.receive()) => Err(received),
                _ = shutdown.wait_for(|stop| *stop) => break End::Shutdown,
                Some(outgoing) = next_report(&mut reports), if can_send => Ok(outgoing),
            };
            match outgoing {
                Ok(outgoing) => {
                    if let Err(reason) = session.send_report(&mut assoc, outgoing).await {
                        break End::Aborted(reason);
                    }
                    continue;
                }
                Err(received) => received,
            }
        };
        if received.is_err() && !in_message {
            let now = tokio::time::Instant::now();
            if let Some(awaiting) = session.awaiting.take_if(|a| a.deadline <= now) {
                let _ = awaiting
                    .done
                    .send(Err("no N-EVENT-REPORT-RSP in time".into()));
                continue;
            }
        }
        let pdu = match received {
            Err(_) if in_message => break End::Aborted("DIMSE timeout".into()),
            Err(_) => break End::Aborted("idle timeout".into()),
            Ok(Err(e)) => break classify_receive_error(e),
            Ok(Ok(pdu)) => pdu,
        };
        match pdu {
            Pdu::PData { data } => {
                if let Err(reason) = session.on_pdata(&mut assoc, data).await {
                    break End::Aborted(reason);
                }
            }
            Pdu::ReleaseRQ => {
                match tokio::time::timeout(timeouts.dimse, assoc.send(&Pdu::ReleaseRP)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break End::Closed(format!("sending A-RELEASE-RP: {e}")),
                    Err(_) => break End::Closed("sending A-RELEASE-RP timed out".into()),
                }
                break End::Released;
            }
            Pdu::AbortRQ { .. } => break End::AbortedByPeer,
            other => break End::Aborted(format!("unexpected PDU {}", pdu_name(&other))),
        }
    };

    if let Some(in_flight) = session.in_flight.take() {
        if let Receiving::Writing(sink) = in_flight.state {
            sink.abandon().await;
        }
    }
    if let Some(awaiting) = session.awaiting.take() {
        let _ = awaiting
            .done
            .send(Err("the association ended before N-EVENT-REPORT-RSP".into()));
    }
    let Session {
        ctx,
        stored,
        failed,
        ..
    } = session;
    match end {
        End::Released | End::AbortedByPeer => {
            info!(association = ctx.id, calling_ae = %ctx.calling_ae, stored, failed, how = ?end, "association ended");
        }
        End::Closed(reason) => {
            info!(association = ctx.id, calling_ae = %ctx.calling_ae, stored, failed, %reason, "connection closed");
        }
        End::Aborted(reason) => {
            warn!(association = ctx.id, calling_ae = %ctx.calling_ae, stored, failed, %reason, "aborting association");
            // A peer that stopped reading must not keep the permit.
            let _ = tokio::time::timeout(timeouts.dimse, assoc.abort()).await;
        }
        End::Shutdown => {
            info!(association = ctx.id, calling_ae = %ctx.calling_ae, stored, failed, "server shutting down: aborting idle association");
            // A peer that stopped reading must not keep the permit.
            let _ = tokio::time::timeout(timeouts.dimse, assoc.abort()).await;
        }
    }
}

/// The next report for this association; never, if it cannot carry reports.
async fn next_report(reports: &mut Option<mpsc::Receiver<Outgoing>>) -> Option<Outgoing> {
    match reports {
        Some(reports) => reports.recv().await,
        None => std::future::pending().await,
    }
}

/// An error with its chain of sources, for logs and peers ("could not connect" alone does not
/// say that a certificate was refused).
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
}

fn classify_receive_error(e: dicom_ul::association::Error) -> End {
    let detail = with_sources(&e);
    if matches!(e, dicom_ul::association::Error::ConnectionClosed { .. }) {
        End::Closed("peer closed the connection".into())
    } else {
        End::Aborted(detail)
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        _ => "unknown",
    }
}

struct Session<S: Services> {
    ctx: AssociationContext,
    /// A peer that stops reading must not hold the association forever.
    send_timeout: Duration,
    services: Arc<S>,
    admission: Arc<Admission>,
    retrieve: RetrieveSettings,
    contexts: HashMap<u8, Context>,
    assembler: MessageAssembler,
    in_flight: Option<InFlight<S::Sink>>,
    /// The commitment report sent last, until its response arrives.
    awaiting: Option<AwaitingReport>,
    /// Message ID of the next request we send on this association (reports).
    next_message_id: u16,
    stored: u64,
    failed: u64,
}

impl<S: Services> Session<S> {
    /// Handles one P-DATA-TF PDU. An error is a protocol violation: abort.
    async fn on_pdata<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        values: Vec<PDataValue>,
    ) -> Result<(), String> {
        for pdv in values {
            if !self.contexts.contains_key(&pdv.presentation_context_id) {
                return Err(format!(
                    "P-DATA on presentation context {} which was not accepted",
                    pdv.presentation_context_id
                ));
            }
            match self.assembler.push(pdv).map_err(|e| e.to_string())? {
                None => {}
                Some(DimseEvent::Command {
                    context_id,
                    command,
                }) => self.on_command(assoc, context_id, command).await?,
                Some(DimseEvent::Data { bytes, last, .. }) => {
                    self.on_data(assoc, bytes, last).await?
                }
            }
        }
        Ok(())
    }

    async fn on_command<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        context_id: u8,
        command: CommandSet,
    ) -> Result<(), String> {
        let received = std::time::Instant::now();
        let field = command.command_field().map_err(|e| e.to_string())?;
        let has_data_set = command.has_data_set().map_err(|e| e.to_string())?;
        if field == CommandField::CCancelRq {
            // Nothing we run yet can be cancelled; C-FIND/C-MOVE/C-GET will watch for this.
            debug!(
                association = self.ctx.id,
                "C-CANCEL-RQ with nothing to cancel"
            );
            return Ok(());
        }
        if field == CommandField::NEventReportRsp {
            self.on_report_answer(&command)?;
            if has_data_set {
                self.in_flight = Some(InFlight {
                    header: Header {
                        context_id,
                        response: field,
                        message_id: 0,
                        sop_class_uid: None,
                        sop_instance_uid: None,
                        move_destination: None,
                        received: std::time::Instant::now(),
                    },
                    state: Receiving::Ignoring,
                });
            }
            return Ok(());
        }
        let Some(response) = field.response() else {
            return Err(format!("unexpected command {field:?} from the requestor"));
        };
        let message_id = command.message_id().map_err(|e| e.to_string())?;
        let abstract_syntax = &self.contexts[&context_id].abstract_syntax;
        // DIMSE-N requests name their instance as Requested, responses as Affected.
        let (sop_class_uid, sop_instance_uid) = if field == CommandField::NActionRq {
            (
                command.requested_sop_class_uid(),
                command.requested_sop_instance_uid(),
            )
        } else {
            (
                command.affected_sop_class_uid(),
                command.affected_sop_instance_uid(),
            )
        };

        let decision: Result<(), Outcome> = self.admit(field).and_then(|()| match field {
            CommandField::CEchoRq => {
                self.check(Service::Echo, abstract_syntax == VERIFICATION_SOP_CLASS)
            }
            CommandField::CStoreRq => self
                .check(
                    Service::Store,
                    sop_class_uid.as_deref() == Some(abstract_syntax.as_str()),
                )
                .and_then(|()| match (&sop_instance_uid, has_data_set) {
                    (Some(uid), true) if !uid.is_empty() => Ok(()),
                    (_, false) => Err(Outcome::failure(
                        Status::CannotUnderstand,
                        "C-STORE-RQ without a data set",
                    )),
                    _ => Err(Outcome::failure(
                        Status::MissingAttribute,
                        "Affected SOP Instance UID missing",
                    )),
                }),
            CommandField::CFindRq => self
                .check(
                    Service::Find,
                    sop_class_uid.as_deref() == Some(abstract_syntax.as_str()),
                )
                .and_then(|()| {
                    if has_data_set {
                        Ok(())
                    } else {
                        Err(Outcome::failure(
                            Status::CannotUnderstand,
                            "C-FIND-RQ without an identifier",
                        ))
                    }
                }),
            CommandField::CMoveRq | CommandField::CGetRq => {
                let service = if field == CommandField::CMoveRq {
                    Service::Move
                } else {
                    Service::Get
                };
                self.check(
                    service,
                    sop_class_uid.as_deref() == Some(abstract_syntax.as_str()),
                )
                .and_then(|()| {
                    if has_data_set {
                        Ok(())
                    } else {
                        Err(Outcome::failure(
                            Status::CannotUnderstand,
                            "retrieve request without an identifier",
                        ))
                    }
                })
            }
            CommandField::NActionRq => self
                .check(
                    Service::Commit,
                    abstract_syntax == STORAGE_COMMITMENT_PUSH
                        && sop_class_uid.as_deref() == Some(abstract_syntax.as_str()),
                )
                .and_then(|()| check_action(&command, sop_instance_uid.as_deref(), has_data_set)),
            _ => Err(Outcome::failure(
                Status::UnrecognizedOperation,
                "operation not supported",
            )),
        });

        let state = match decision {
            Err(outcome) => Receiving::Draining(outcome),
            Ok(()) if field == CommandField::CEchoRq => Receiving::Draining(Outcome::success()),
            Ok(())
                if matches!(
                    field,
                    CommandField::CFindRq
                        | CommandField::CMoveRq
                        | CommandField::CGetRq
                        | CommandField::NActionRq
                ) =>
            {
                Receiving::Collecting(Vec::new())
            }
            Ok(()) => {
                let request = StoreRequest {
                    sop_class_uid: sop_class_uid.clone().unwrap_or_default(),
                    sop_instance_uid: sop_instance_uid.clone().unwrap_or_default(),
                    transfer_syntax_uid: self.contexts[&context_id].transfer_syntax.clone(),
                    move_originator_ae: command.move_originator_ae_title(),
                };
                match self.services.begin_store(&self.ctx, request).await {
                    StoreStart::Receive(sink) => Receiving::Writing(sink),
                    StoreStart::Answer(outcome) => Receiving::Draining(outcome),
                }
            }
        };
        let header = Header {
            context_id,
            response,
            message_id,
            sop_class_uid,
            sop_instance_uid,
            move_destination: command.move_destination(),
            received,
        };
        if has_data_set {
            self.in_flight = Some(InFlight { header, state });
            Ok(())
        } else {
            let outcome = match state {
                Receiving::Draining(outcome) => outcome,
                // Only commands with a data set write or collect.
                Receiving::Writing(sink) => {
                    sink.abandon().await;
                    Outcome::failure(Status::ProcessingFailure, "internal error")
                }
                Receiving::Collecting(_) | Receiving::Ignoring => {
                    Outcome::failure(Status::ProcessingFailure, "internal error")
                }
            };
            self.respond(assoc, &header, outcome).await
        }
    }

    async fn on_data<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        bytes: Vec<u8>,
        last: bool,
    ) -> Result<(), String> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Err("data set fragment without a command".into());
        };
        match &mut in_flight.state {
            Receiving::Writing(sink) => {
                if let Err(outcome) = sink.write(bytes).await {
                    let Receiving::Writing(sink) =
                        std::mem::replace(&mut in_flight.state, Receiving::Draining(outcome))
                    else {
                        unreachable!("state was Writing just above");
                    };
                    sink.abandon().await;
                }
            }
            Receiving::Collecting(identifier) => {
                let limit = match in_flight.header.response {
                    CommandField::NActionRsp => MAX_ACTION_INFORMATION_LEN,
                    _ => MAX_IDENTIFIER_LEN,
                };
                if identifier.len() + bytes.len() > limit {
                    in_flight.state = Receiving::Draining(Outcome::failure(
                        Status::OutOfResources,
                        "identifier too large",
                    ));
                } else {
                    identifier.extend_from_slice(&bytes);
                }
            }
            Receiving::Draining(_) | Receiving::Ignoring => {}
        }
        if !last {
            return Ok(());
        }
        let in_flight = self.in_flight.take().expect("checked above");
        let outcome = match in_flight.state {
            Receiving::Writing(sink) => sink.finish().await,
            Receiving::Draining(outcome) => outcome,
            Receiving::Ignoring => return Ok(()),
            Receiving::Collecting(identifier) => {
                let header = &in_flight.header;
                return match header.response {
                    CommandField::NActionRsp => {
                        self.run_commitment(assoc, header, identifier).await
                    }
                    CommandField::CMoveRsp => {
                        self.run_retrieve(assoc, header, identifier, true).await
                    }
                    CommandField::CGetRsp => {
                        self.run_retrieve(assoc, header, identifier, false).await
                    }
                    _ => self.run_find(assoc, header, identifier).await,
                };
            }
        };
        if in_flight.header.response == CommandField::CStoreRsp {
            if outcome.status.is_failure() {
                self.failed += 1;
                warn!(
                    association = self.ctx.id,
                    calling_ae = %self.ctx.calling_ae,
                    sop_instance_uid = in_flight.header.sop_instance_uid.as_deref().unwrap_or(""),
                    status = %outcome.status,
                    comment = outcome.comment.as_deref().unwrap_or(""),
                    "C-STORE failed"
                );
            } else {
                self.stored += 1;
            }
        }
        self.respond(assoc, &in_flight.header, outcome).await
    }

    /// The request-rate limit of the calling AE title (C-ECHO is not counted).
    fn admit(&self, field: CommandField) -> Result<(), Outcome> {
        if field == CommandField::CEchoRq {
            return Ok(());
        }
        self.admission
            .admit_request(&self.ctx.calling_ae)
            .map_err(|limit| {
                debug!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, limit, "request over the AE's rate");
                // An Error Comment holds 64 characters.
                Outcome::failure(
                    out_of_resources(field),
                    format!("over [dicom] max_requests_per_sec_per_ae = {limit}"),
                )
            })
    }

    /// Access and context checks shared by every command.
    fn check(&self, service: Service, context_matches: bool) -> Result<(), Outcome> {
        self.admission.check(&self.ctx.calling_ae, service)?;
        if !context_matches {
            return Err(Outcome::failure(
                Status::SopClassNotSupported,
                "SOP class does not match the presentation context",
            ));
        }
        Ok(())
    }

    /// Sends a response without a data set.
    async fn respond<W: Wire>(
        &self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        outcome: Outcome,
    ) -> Result<(), String> {
        self.respond_with(assoc, header, outcome, None).await
    }

    /// Sends a response, followed by its data set if there is one, split into P-DATA
    /// fragments no larger than the requestor accepts.
    async fn respond_with<W: Wire>(
        &self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        outcome: Outcome,
        data_set: Option<&[u8]>,
    ) -> Result<(), String> {
        self.send_response(assoc, header, outcome, None, data_set)
            .await
    }

    /// Sends a C-MOVE/C-GET response with its sub-operation counts.
    async fn respond_counts<W: Wire>(
        &self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        outcome: Outcome,
        counts: SubOperations,
        data_set: Option<&[u8]>,
    ) -> Result<(), String> {
        self.send_response(assoc, header, outcome, Some(counts), data_set)
            .await
    }

    async fn send_response<W: Wire>(
        &self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        outcome: Outcome,
        sub_operations: Option<SubOperations>,
        data_set: Option<&[u8]>,
    ) -> Result<(), String> {
        let mut wire = Vec::new();
        encode_response(
            &mut wire,
            header,
            &outcome,
            sub_operations,
            data_set,
            assoc.requestor_max_pdu_length(),
        )?;
        let sent = self.send_wire(assoc, header, &wire).await;
        if outcome.status != Status::Pending {
            count_operation(header, outcome.status);
        }
        sent
    }

    /// Writes already encoded PDUs in one go, within the send timeout: a response and its
    /// data set, or a batch of C-FIND responses, cost one system call rather than one per PDU.
    async fn send_wire<W: Wire>(
        &self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        wire: &[u8],
    ) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let stream = assoc.inner_stream();
        let write = async {
            stream.write_all(wire).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.send_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("sending {:?}: {e}", header.response)),
            Err(_) => Err(format!("sending {:?}: timed out", header.response)),
        }
    }
}

/// Counts a finished operation and its latency (`crate::metrics`).
fn count_operation(header: &Header, status: Status) {
    let operation = match header.response {
        CommandField::CEchoRsp => "C-ECHO",
        CommandField::CStoreRsp => "C-STORE",
        CommandField::CFindRsp => "C-FIND",
        CommandField::CMoveRsp => "C-MOVE",
        CommandField::CGetRsp => "C-GET",
        CommandField::NActionRsp => "N-ACTION",
        _ => "other",
    };
    let class = match status {
        Status::Success => "success",
        Status::Cancel => "cancel",
        s if s.is_failure() => "failure",
        _ => "warning",
    };
    metrics::DIMSE_OPERATIONS.inc(&[operation, class]);
    metrics::DIMSE_DURATION.observe_duration(&[operation], header.received.elapsed());
}

/// The "out of resources" status of each request (PS3.4 Annex B, C and CC).
fn out_of_resources(field: CommandField) -> Status {
    match field {
        CommandField::CMoveRq | CommandField::CGetRq => Status::SubOperationsRefused,
        // Resource limitation (PS3.7 C.5.x).
        CommandField::NActionRq => Status::Other(0x0213),
        _ => Status::OutOfResources,
    }
}

/// Appends the P-DATA-TF PDUs of one response to `wire`: the command, then the data set if
/// there is one (see [`message_pdus`]).
fn encode_response(
    wire: &mut Vec<u8>,
    header: &Header,
    outcome: &Outcome,
    sub_operations: Option<SubOperations>,
    data_set: Option<&[u8]>,
    requestor_max_pdu_length: u32,
) -> Result<(), String> {
    let command = CommandSet::response(&Response {
        field: header.response,
        message_id: header.message_id,
        status: outcome.status,
        sop_class_uid: header.sop_class_uid.as_deref(),
        sop_instance_uid: header.sop_instance_uid.as_deref(),
        error_comment: outcome.comment.as_deref(),
        has_data_set: data_set.is_some(),
        sub_operations,
        // The only action we answer is Request Storage Commitment.
        action_type_id: (header.response == CommandField::NActionRsp).then_some(1),
    });
    for pdu in message_pdus(
        header.context_id,
        &command,
        data_set,
        requestor_max_pdu_length,
    ) {
        dicom_ul::pdu::write_pdu(wire, &pdu)
            .map_err(|e| format!("encoding {:?}: {e}", header.response))?;
    }
    Ok(())
}

/// The P-DATA-TF PDUs of one message: the command, then the data set if there is one, split
/// into fragments no larger than the peer accepts (0: no limit, PS3.8 D.3.3.1).
pub(crate) fn message_pdus(
    context_id: u8,
    command: &CommandSet,
    data_set: Option<&[u8]>,
    peer_max_pdu_length: u32,
) -> Vec<Pdu> {
    let pdv = |value_type, is_last, data: &[u8]| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context_id,
            value_type,
            is_last,
            data: data.to_vec(),
        }],
    };
    let mut pdus = vec![pdv(PDataValueType::Command, true, &command.encode())];
    let Some(data) = data_set else {
        return pdus;
    };
    // The PDV item header takes 6 bytes of the PDU's variable field.
    let room = match peer_max_pdu_length {
        0 => usize::MAX,
        max => (max as usize).saturating_sub(6).max(1),
    };
    let mut chunks = data.chunks(room).peekable();
    if chunks.peek().is_none() {
        pdus.push(pdv(PDataValueType::Data, true, &[]));
    }
    while let Some(chunk) = chunks.next() {
        pdus.push(pdv(PDataValueType::Data, chunks.peek().is_none(), chunk));
    }
    pdus
}

/// What a response needs to know about its request.
struct Header {
    context_id: u8,
    response: CommandField,
    message_id: u16,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    /// C-MOVE only: where the instances go.
    move_destination: Option<String>,
    /// When the request's command arrived (for the operation's latency).
    received: std::time::Instant,
}
