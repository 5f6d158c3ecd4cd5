//! C-FIND on an association: one Pending response per match, then the final status. Between
//! two responses the socket is checked for a C-CANCEL-RQ without waiting, so a cancel stops
//! the stream after at most one more match.

use std::time::Duration;

use dicom_ul::association::AsyncServerAssociation;
use dicom_ul::Pdu;
use tokio::net::TcpStream;
use tracing::info;

use super::{Header, Session};
use crate::net::command::CommandField;
use crate::net::dimse::DimseEvent;
use crate::net::handler::{FindRequest, FindResults, Outcome, Services};
use crate::net::status::Status;

impl<S: Services> Session<S> {
    /// Runs a C-FIND whose identifier has fully arrived, sending every response.
    pub(super) async fn run_find(
        &mut self,
        assoc: &mut AsyncServerAssociation<TcpStream>,
        header: &Header,
        identifier: Vec<u8>,
    ) -> Result<(), String> {
        let request = FindRequest {
            sop_class_uid: header.sop_class_uid.clone().unwrap_or_default(),
            transfer_syntax_uid: self.contexts[&header.context_id].transfer_syntax.clone(),
            identifier,
        };
        let mut matches = match self.services.begin_find(&self.ctx, request).await {
            Ok(matches) => matches,
            Err(outcome) => {
                info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, status = %outcome.status, comment = outcome.comment.as_deref().unwrap_or(""), "C-FIND refused");
                return self.respond(assoc, header, outcome).await;
            }
        };
        let mut sent = 0u64;
        let outcome = loop {
            if self.cancel_requested(assoc, header.message_id).await? {
                break Outcome {
                    status: Status::Cancel,
                    comment: None,
                };
            }
            match matches.next().await {
                None => break Outcome::success(),
                Some(Err(outcome)) => break outcome,
                Some(Ok(identifier)) => {
                    let pending = Outcome {
                        status: Status::Pending,
                        comment: None,
                    };
                    self.respond_with(assoc, header, pending, Some(&identifier))
                        .await?;
                    sent += 1;
                }
            }
        };
        info!(association = self.ctx.id, calling_ae = %self.ctx.calling_ae, matches = sent, status = %outcome.status, "C-FIND done");
        self.respond(assoc, header, outcome).await
    }

    /// Whether a C-CANCEL-RQ for `message_id` is waiting, without blocking. Anything else that
    /// arrives mid-operation ends the association: we negotiate no asynchronous operations.
    async fn cancel_requested(
        &mut self,
        assoc: &mut AsyncServerAssociation<TcpStream>,
        message_id: u16,
    ) -> Result<bool, String> {
        loop {
            // Receiving is cancel-safe: bytes read stay in the association's buffer.
            let pdu = match tokio::time::timeout(Duration::ZERO, assoc.receive()).await {
                Err(_) => return Ok(false),
                Ok(Err(e)) => return Err(format!("while answering C-FIND: {e}")),
                Ok(Ok(pdu)) => pdu,
            };
            let Pdu::PData { data } = pdu else {
                return Err("A-RELEASE or A-ABORT while answering C-FIND".into());
            };
            for pdv in data {
                match self.assembler.push(pdv).map_err(|e| e.to_string())? {
                    None => {}
                    Some(DimseEvent::Command { command, .. })
                        if command.command_field() == Ok(CommandField::CCancelRq) =>
                    {
                        if command.message_id_being_responded_to() == Ok(message_id) {
                            return Ok(true);
                        }
                    }
                    Some(_) => {
                        return Err("new request while a C-FIND is in progress".into());
                    }
                }
            }
        }
    }
}
