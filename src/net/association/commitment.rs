//! Storage Commitment on an association (PS3.4 J.3): N-ACTION requests taken and answered at
//! once, and reports (N-EVENT-REPORT) sent back on this association when the requestor
//! still holds it. Checking the instances is the services' business, later.

use dicom_ul::association::AsyncServerAssociation;
use tracing::{debug, info};

use super::{message_pdus, AwaitingReport, Header, Session};
use crate::model::sop_class::{STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_PUSH_INSTANCE};
use crate::net::command::CommandSet;
use crate::net::commitment::{answer_of, event_report, Outgoing};
use crate::net::handler::{CommitmentRequest, Services};
use crate::net::Wire;
use crate::service::Outcome;
use crate::service::Status;

/// The checks of an N-ACTION-RQ's command beyond access: the well-known instance, Action
/// Type 1 (Request Storage Commitment), Action Information present.
pub(super) fn check_action(
    command: &CommandSet,
    requested_instance: Option<&str>,
    has_data_set: bool,
) -> Result<(), Outcome> {
    if requested_instance != Some(STORAGE_COMMITMENT_PUSH_INSTANCE) {
        return Err(Outcome::failure(
            Status::NoSuchSopInstance,
            "Requested SOP Instance is not the Storage Commitment instance",
        ));
    }
    if command.action_type_id() != Some(1) {
        return Err(Outcome::failure(
            Status::NoSuchActionType,
            "only Action Type 1 (Request Storage Commitment)",
        ));
    }
    if !has_data_set {
        return Err(Outcome::failure(
            Status::MissingAttribute,
            "N-ACTION-RQ without Action Information",
        ));
    }
    Ok(())
}

impl<S: Services> Session<S> {
    /// An N-ACTION whose Action Information has fully arrived: the services record it (and
    /// check it later); the response says whether it was taken.
    pub(super) async fn run_commitment<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        action_information: Vec<u8>,
    ) -> Result<(), String> {
        let request = CommitmentRequest {
            transfer_syntax_uid: self.contexts[&header.context_id].transfer_syntax.clone(),
            action_information,
        };
        let outcome = self.services.request_commitment(&self.ctx, request).await;
        info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, status = %outcome.status, comment = outcome.comment.as_deref().unwrap_or(""), "N-ACTION storage commitment");
        self.respond(assoc, header, outcome).await
    }

    /// Sends a commitment report on this association; its answer arrives later (see
    /// [`Session::on_report_answer`]). An error is a broken link.
    pub(super) async fn send_report<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        outgoing: Outgoing,
    ) -> Result<(), String> {
        let Some((context_id, ts)) = self
            .contexts
            .iter()
            .find(|(_, c)| c.abstract_syntax == STORAGE_COMMITMENT_PUSH)
            .map(|(id, c)| (*id, c.transfer_syntax.clone()))
        else {
            let _ = outgoing
                .done
                .send(Err("no Storage Commitment context".into()));
            return Ok(());
        };
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        let (command, data) = match event_report(&outgoing.report, message_id, &ts) {
            Ok(encoded) => encoded,
            Err(reason) => {
                let _ = outgoing.done.send(Err(reason));
                return Ok(());
            }
        };
        let mut wire = Vec::new();
        for pdu in message_pdus(
            context_id,
            &command,
            Some(&data),
            assoc.requestor_max_pdu_length(),
        ) {
            dicom_ul::pdu::write_pdu(&mut wire, &pdu)
                .map_err(|e| format!("encoding N-EVENT-REPORT-RQ: {e}"))?;
        }
        let header = Header {
            context_id,
            response: crate::net::command::CommandField::NEventReportRq,
            message_id,
            sop_class_uid: None,
            sop_instance_uid: None,
            move_destination: None,
            received: std::time::Instant::now(),
        };
        if let Err(reason) = self.send_wire(assoc, &header, &wire).await {
            let _ = outgoing.done.send(Err(reason.clone()));
            return Err(reason);
        }
        debug!(association = self.ctx.id, transaction_uid = %outgoing.report.transaction_uid, message_id, "N-EVENT-REPORT-RQ sent");
        self.awaiting = Some(AwaitingReport {
            message_id,
            deadline: tokio::time::Instant::now() + self.send_timeout,
            done: outgoing.done,
        });
        Ok(())
    }

    /// An N-EVENT-REPORT-RSP arrived: it settles the report we sent, or is a protocol error.
    pub(super) fn on_report_answer(&mut self, rsp: &CommandSet) -> Result<(), String> {
        let Some(awaiting) = self.awaiting.take() else {
            return Err("N-EVENT-REPORT-RSP without a report sent".into());
        };
        let answer = answer_of(rsp, awaiting.message_id);
        let _ = awaiting.done.send(answer);
        Ok(())
    }
}
