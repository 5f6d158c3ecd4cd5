//! The vocabulary of the service core, shared by every front end (DIMSE in `net/`, DICOMweb
//! in `web/`, the `strata import` command): who is asking and what they may do
//! ([`Principal`], [`AccessPolicy`]), what a store or a retrieve is asked and answers
//! ([`StoreRequest`], [`StoreSink`], [`Retrieval`], [`Piece`]), and how an operation ends
//! ([`Outcome`] with a DICOM [`Status`]). It knows no protocol and no storage.

pub mod access;
pub mod metrics;
pub mod site;
pub mod status;

use std::future::Future;

pub use access::{AccessPolicy, Denied, Principal};
pub use status::Status;

/// The result of an operation: a status and, for failures, a short reason for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub comment: Option<String>,
}

impl Outcome {
    pub fn success() -> Outcome {
        Outcome {
            status: Status::Success,
            comment: None,
        }
    }

    pub fn failure(status: Status, comment: impl Into<String>) -> Outcome {
        Outcome {
            status,
            comment: Some(comment.into()),
        }
    }
}

impl From<Denied> for Outcome {
    fn from(denied: Denied) -> Outcome {
        Outcome::failure(Status::NotAuthorized, denied.to_string())
    }
}

/// The facts of one instance to store, whatever brings it (C-STORE command, STOW-RS part,
/// an imported file's meta).
#[derive(Debug, Clone)]
pub struct StoreRequest {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// The data set's encoding (for C-STORE, the presentation context's transfer syntax).
    pub transfer_syntax_uid: String,
    /// Set when the store is a sub-operation of someone's C-MOVE.
    pub move_originator_ae: Option<String>,
}

/// Receives one data set as it arrives.
pub trait StoreSink: Send + Sync + 'static {
    /// Takes the next fragment. An error ends the write; the rest of the data set is drained
    /// and discarded, and the error is the response.
    fn write(&mut self, fragment: Vec<u8>) -> impl Future<Output = Result<(), Outcome>> + Send;

    /// The last fragment arrived: make the instance durable and report the response status.
    /// Success must only be reported once the data and its index are durable.
    fn finish(self) -> impl Future<Output = Outcome> + Send;

    /// The data set will never complete (abort, timeout, shutdown): drop everything written.
    fn abandon(self) -> impl Future<Output = ()> + Send;
}

/// How a store starts: receive the data set into a sink, or answer at once (the data set is
/// then drained and discarded), e.g. for a duplicate that is kept or a refusal.
pub enum StoreStart<K> {
    Receive(K),
    Answer(Outcome),
}

/// One instance a retrieve (C-MOVE, C-GET, WADO-RS) will send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveItem {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// The transfer syntax the instance is stored in.
    pub transfer_syntax_uid: String,
}

/// The data set of one instance, as a retrieve's reader hands it over, in plan order.
#[derive(Debug)]
pub enum Piece {
    /// The data set of plan entry `index` begins; `length` bytes of `Data` follow. `warning`
    /// says why the data set is not the one stored (a lossy substitute for a lost original):
    /// the sub-operation then counts as a warning even when the destination answers success.
    Start {
        index: usize,
        length: u64,
        warning: Option<String>,
    },
    /// The next bytes of the current data set.
    Data(bytes::Bytes),
    /// Plan entry `index` cannot be sent (unreadable, damaged, cannot be transcoded). Comes
    /// instead of `Start`, or after some `Data` when damage is found late; the sub-operation
    /// then fails.
    Failed { index: usize, reason: String },
}

/// The instances of one retrieve, and their bytes on demand.
pub trait Retrieval: Send + Sync + 'static {
    /// Every matching instance, in the order they should be sent.
    fn items(&self) -> &[RetrieveItem];

    /// Starts reading: for each plan entry `(item index, transfer syntax to send in)`, the
    /// data set bytes in that syntax, as [`Piece`]s through a bounded channel. Reading runs
    /// ahead of the network and stops when the receiver is dropped.
    fn read(&self, plan: Vec<(usize, String)>) -> tokio::sync::mpsc::Receiver<Piece>;
}
