//! C-STORE sub-operations sent by us as SCU: over a new association to a C-MOVE destination,
//! or back over the requestor's own association for C-GET. One sub-operation at a time: send
//! the request and its data set (fragmented to the peer's PDU size, streamed from the
//! retrieve's reader), then wait for the response.

use std::time::Duration;

use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;
use tokio::sync::mpsc;

use crate::net::Wire;

use crate::net::command::{CommandField, CommandSet};
use crate::net::dimse::{DimseEvent, MessageAssembler};
use crate::service::Piece;
use crate::service::Status;

/// Why a sub-operation could not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum SubOpError {
    /// The association is unusable (closed, aborted, timed out, protocol error).
    #[error("{0}")]
    Link(String),
    /// The instance's bytes failed after part of its data set was sent: the only way out of
    /// a half-sent message is to abort the association.
    #[error("reading the instance failed mid-transfer: {0}")]
    ReaderMidway(String),
}

/// The answer to one C-STORE sub-operation.
#[derive(Debug)]
pub(super) struct StoreAnswer {
    pub status: Status,
    /// A C-CANCEL-RQ for the watched message ID arrived while we waited.
    pub cancel_seen: bool,
}

/// One C-STORE sub-operation's facts.
pub(super) struct StoreCommand<'a> {
    pub context_id: u8,
    pub message_id: u16,
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    /// C-MOVE originator (AE title, message ID); `None` for C-GET.
    pub originator: Option<(&'a str, u16)>,
    /// Data set length in bytes, announced by the reader.
    pub length: u64,
}

/// Sends one C-STORE-RQ with the data set taken from `pieces` (exactly `length` bytes of
/// `Piece::Data`), then waits for its C-STORE-RSP. A C-CANCEL-RQ for `watch_cancel` arriving
/// meanwhile is remembered, not acted on: the sub-operation in flight completes first.
pub(super) async fn store<A, W>(
    assoc: &mut A,
    assembler: &mut MessageAssembler,
    timeout: Duration,
    command: StoreCommand<'_>,
    pieces: &mut mpsc::Receiver<Piece>,
    watch_cancel: Option<u16>,
) -> Result<StoreAnswer, SubOpError>
where
    A: AsyncAssociation<W> + Send,
    W: Wire,
{
    let mut rq = CommandSet::request(
        CommandField::CStoreRq,
        command.message_id,
        command.sop_class_uid,
    )
    .with_data_set(command.sop_instance_uid);
    if let Some((ae, id)) = command.originator {
        rq = rq.with_move_originator(ae, id);
    }
    let ctx = command.context_id;
    send(
        assoc,
        timeout,
        ctx,
        PDataValueType::Command,
        true,
        rq.encode(),
    )
    .await?;

    // The PDV item header takes 6 bytes of the PDU's variable field; 0 means "no limit".
    let peer_max = match assoc.peer_max_pdu_length() {
        0 => 1 << 20,
        n => n as usize,
    };
    let room = peer_max.saturating_sub(6).clamp(1, 4 << 20);
    let mut remaining = command.length;
    if remaining == 0 {
        send(assoc, timeout, ctx, PDataValueType::Data, true, Vec::new()).await?;
    }
    while remaining > 0 {
        let bytes = match pieces.recv().await {
            Some(Piece::Data(bytes)) => bytes,
            Some(Piece::Failed { reason, .. }) => return Err(SubOpError::ReaderMidway(reason)),
            Some(Piece::Start { .. }) | None => {
                return Err(SubOpError::ReaderMidway(format!(
                    "data set ended {remaining} bytes short"
                )))
            }
        };
        if bytes.len() as u64 > remaining {
            return Err(SubOpError::ReaderMidway(
                "data set longer than announced".into(),
            ));
        }
        for chunk in bytes.chunks(room) {
            remaining -= chunk.len() as u64;
            let last = remaining == 0;
            send(
                assoc,
                timeout,
                ctx,
                PDataValueType::Data,
                last,
                chunk.to_vec(),
            )
            .await?;
        }
    }

    let mut cancel_seen = false;
    loop {
        let pdu = match tokio::time::timeout(timeout, AsyncAssociation::receive(assoc)).await {
            Err(_) => return Err(SubOpError::Link("no C-STORE-RSP in time".into())),
            Ok(Err(e)) => return Err(SubOpError::Link(format!("waiting for C-STORE-RSP: {e}"))),
            Ok(Ok(pdu)) => pdu,
        };
        let data = match pdu {
            Pdu::PData { data } => data,
            Pdu::AbortRQ { .. } => return Err(SubOpError::Link("peer aborted".into())),
            Pdu::ReleaseRQ => return Err(SubOpError::Link("peer released mid-operation".into())),
            _ => return Err(SubOpError::Link("unexpected PDU".into())),
        };
        for pdv in data {
            let event = assembler
                .push(pdv)
                .map_err(|e| SubOpError::Link(e.to_string()))?;
            let Some(DimseEvent::Command { command: rsp, .. }) = event else {
                continue;
            };
            match rsp.command_field() {
                Ok(CommandField::CStoreRsp)
                    if rsp.message_id_being_responded_to() == Ok(command.message_id) =>
                {
                    let code = rsp.status_code().unwrap_or(0xFFFF);
                    return Ok(StoreAnswer {
                        status: Status::from_store_response(code),
                        cancel_seen,
                    });
                }
                Ok(CommandField::CCancelRq)
                    if watch_cancel.is_some()
                        && rsp.message_id_being_responded_to().ok() == watch_cancel =>
                {
                    cancel_seen = true;
                }
                other => {
                    return Err(SubOpError::Link(format!(
                        "unexpected {other:?} while waiting for C-STORE-RSP"
                    )))
                }
            }
        }
    }
}

async fn send<A, W>(
    assoc: &mut A,
    timeout: Duration,
    context_id: u8,
    value_type: PDataValueType,
    is_last: bool,
    data: Vec<u8>,
) -> Result<(), SubOpError>
where
    A: AsyncAssociation<W> + Send,
    W: Wire,
{
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context_id,
            value_type,
            is_last,
            data,
        }],
    };
    match tokio::time::timeout(timeout, AsyncAssociation::send(assoc, &pdu)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SubOpError::Link(format!("sending C-STORE-RQ: {e}"))),
        Err(_) => Err(SubOpError::Link("sending C-STORE-RQ timed out".into())),
    }
}
