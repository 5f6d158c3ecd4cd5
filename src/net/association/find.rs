//! C-FIND on an association: one Pending response per match, then the final status; pending
//! responses are written in batches. Between
//! two responses the socket is checked for a C-CANCEL-RQ without waiting, so a cancel stops
//! the stream as soon as it has arrived.

use std::future::Future;
use std::task::Poll;

use crate::net::Wire;
use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::Pdu;
use tracing::info;

use super::{encode_response, Header, Session};
use crate::net::command::CommandField;
use crate::net::dimse::DimseEvent;
use crate::net::handler::{FindRequest, FindResults, Services};
use crate::service::Outcome;
use crate::service::Status;

/// Bytes of pending C-FIND responses written at once, at most (plus one response).
const BATCH_BYTES: usize = 64 * 1024;

impl<S: Services> Session<S> {
    /// Runs a C-FIND whose identifier has fully arrived, sending every response.
    pub(super) async fn run_find<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        header: &Header,
        identifier: Vec<u8>,
    ) -> Result<(), String> {
        let sop_class_uid = header.sop_class_uid.clone().unwrap_or_default();
        // Byte 2 of the Q/R extended negotiation (PS3.4 C.5.1.1.2).
        let combined_datetime = assoc
            .extended_negotiation_for(&sop_class_uid)
            .is_some_and(|flags| flags.get(1).copied().unwrap_or(0) == 1);
        let request = FindRequest {
            sop_class_uid,
            transfer_syntax_uid: self.contexts[&header.context_id].transfer_syntax.clone(),
            identifier,
            combined_datetime,
        };
        let mut matches = match self.services.begin_find(&self.ctx, request).await {
            Ok(matches) => matches,
            Err(outcome) => {
                info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, status = %outcome.status, comment = outcome.comment.as_deref().unwrap_or(""), "C-FIND refused");
                return self.respond(assoc, header, outcome).await;
            }
        };
        let mut sent = 0u64;
        // Pending responses gather here and go out in one write when the next match is not
        // ready at once or the batch is full: a long result costs a few system calls, not
        // two per match, and the first responses still leave as soon as the locator pauses.
        let mut batch = Vec::new();
        let max_pdu_length = assoc.requestor_max_pdu_length();
        let outcome = loop {
            if self.cancel_requested(assoc, header.message_id).await? {
                break Outcome {
                    status: Status::Cancel,
                    comment: None,
                };
            }
            let next = {
                let mut next = std::pin::pin!(matches.next());
                match std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                    Poll::Ready(next) => next,
                    Poll::Pending => {
                        self.send_wire(assoc, header, &batch).await?;
                        batch.clear();
                        next.await
                    }
                }
            };
            match next {
                None => break Outcome::success(),
                Some(Err(outcome)) => break outcome,
                Some(Ok(identifier)) => {
                    let pending = Outcome {
                        status: Status::Pending,
                        comment: None,
                    };
                    encode_response(
                        &mut batch,
                        header,
                        &pending,
                        None,
                        Some(&identifier),
                        max_pdu_length,
                    )?;
                    sent += 1;
                    if batch.len() >= BATCH_BYTES {
                        self.send_wire(assoc, header, &batch).await?;
                        batch.clear();
                    }
                }
            }
        };
        if !batch.is_empty() {
            self.send_wire(assoc, header, &batch).await?;
        }
        info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, matches = sent, status = %outcome.status, "C-FIND done");
        self.respond(assoc, header, outcome).await
    }

    /// Whether a C-CANCEL-RQ for `message_id` is waiting, without blocking. Anything else that
    /// arrives mid-operation ends the association: we negotiate no asynchronous operations.
    pub(super) async fn cancel_requested<W: Wire>(
        &mut self,
        assoc: &mut AsyncServerAssociation<W>,
        message_id: u16,
    ) -> Result<bool, String> {
        loop {
            // Poll the receive exactly once (a zero timeout would wait for the next timer tick,
            // ~1 ms per match). Dropping it then is safe: bytes read stay in the association's
            // buffer.
            let polled = {
                let mut receive = std::pin::pin!(assoc.receive());
                std::future::poll_fn(|cx| Poll::Ready(receive.as_mut().poll(cx))).await
            };
            let pdu = match polled {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(e)) => return Err(format!("while answering: {e}")),
                Poll::Ready(Ok(pdu)) => pdu,
            };
            let Pdu::PData { data } = pdu else {
                return Err("A-RELEASE or A-ABORT while an operation is in progress".into());
            };
            for pdv in data {
                match self.assembler.push(pdv).map_err(|e| e.to_string())? {
                    None => {}
                    Some(DimseEvent::Command { command, .. })
                        if command.command_field() == Ok(CommandField::CCancelRq)
                            && command.message_id_being_responded_to() == Ok(message_id) =>
                    {
                        return Ok(true);
                    }
                    // A cancel of some other message: nothing of ours to stop.
                    Some(DimseEvent::Command { command, .. })
                        if command.command_field() == Ok(CommandField::CCancelRq) => {}
                    Some(_) => {
                        return Err("new request while an operation is in progress".into());
                    }
                }
            }
        }
    }
}
