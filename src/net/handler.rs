//! What the network layer asks of the services behind it, in DIMSE terms (encoded
//! identifiers, associations); the protocol-neutral parts are `crate::service`'s. The network
//! layer knows nothing of storage: it hands each C-STORE data set to a [`StoreSink`] fragment
//! by fragment and sends back whatever [`Outcome`] the sink reports.

use std::future::Future;
use std::net::SocketAddr;

use crate::service::{Outcome, Retrieval, StoreRequest, StoreSink, StoreStart};

/// Who is on the other end of an association.
#[derive(Debug, Clone)]
pub struct AssociationContext {
    /// Process-unique association number, for logs.
    pub id: u64,
    /// Calling AE title of the requestor.
    pub calling_ae: String,
    /// Remote socket address.
    pub peer: SocketAddr,
}

/// The command-level facts of one C-FIND request, with its identifier still encoded.
#[derive(Debug, Clone)]
pub struct FindRequest {
    /// The information model (Patient Root, Study Root, ...).
    pub sop_class_uid: String,
    /// Transfer syntax of the presentation context: the identifier's encoding, and the one
    /// responses must use.
    pub transfer_syntax_uid: String,
    /// The identifier data set, as received.
    pub identifier: Vec<u8>,
    /// The peer negotiated combined date-time matching for this information model.
    pub combined_datetime: bool,
}

/// The matches of one C-FIND, produced one at a time so that large result sets stream and a
/// C-CANCEL stops them between two responses.
pub trait FindResults: Send + Sync + 'static {
    /// The next match as an encoded identifier, `None` when there are no more, or a failure
    /// that ends the operation. Cancel-safe: a `next` dropped before it is ready loses no
    /// match (the association polls it once to decide whether to send what it holds).
    fn next(&mut self) -> impl Future<Output = Option<Result<Vec<u8>, Outcome>>> + Send;
}

/// The command-level facts of one C-MOVE or C-GET request, with its identifier still encoded.
#[derive(Debug, Clone)]
pub struct RetrieveRequest {
    /// The information model (Patient Root or Study Root, MOVE or GET).
    pub sop_class_uid: String,
    /// Transfer syntax of the presentation context: the identifier's encoding.
    pub transfer_syntax_uid: String,
    /// The identifier data set, as received.
    pub identifier: Vec<u8>,
}

/// One Storage Commitment request (N-ACTION, Action Type 1), its Action Information still
/// encoded.
#[derive(Debug, Clone)]
pub struct CommitmentRequest {
    /// Transfer syntax of the presentation context: the Action Information's encoding.
    pub transfer_syntax_uid: String,
    /// The Action Information data set (Transaction UID, Referenced SOP Sequence).
    pub action_information: Vec<u8>,
}

/// One instance of a commitment report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedSop {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// The result of a Storage Commitment request, ready to be sent as N-EVENT-REPORT.
#[derive(Debug, Clone)]
pub struct CommitmentReport {
    /// The services' key for the report, handed back with the delivery result.
    pub key: i64,
    pub transaction_uid: String,
    /// The requestor: where a report goes when its association is gone.
    pub calling_ae: String,
    /// The association the request came on, if this process received it: the report goes
    /// there while the requestor still holds it.
    pub association: Option<u64>,
    pub committed: Vec<ReferencedSop>,
    /// Instances not committed, with their Failure Reason (0x0110, 0x0112, 0x0119).
    pub failed: Vec<(ReferencedSop, u16)>,
}

/// The DIMSE services behind the network layer.
pub trait Services: Send + Sync + 'static {
    type Sink: StoreSink;
    type Matches: FindResults;
    type Retrieval: Retrieval;

    /// Starts a C-STORE.
    fn begin_store(
        &self,
        association: &AssociationContext,
        request: StoreRequest,
    ) -> impl Future<Output = StoreStart<Self::Sink>> + Send;

    /// Starts a C-FIND: checks the identifier and prepares the matches. An error is the
    /// final response.
    fn begin_find(
        &self,
        association: &AssociationContext,
        request: FindRequest,
    ) -> impl Future<Output = Result<Self::Matches, Outcome>> + Send;

    /// Starts a C-MOVE or C-GET: checks the identifier and finds the instances. An error is
    /// the final response.
    fn begin_retrieve(
        &self,
        association: &AssociationContext,
        request: RetrieveRequest,
    ) -> impl Future<Output = Result<Self::Retrieval, Outcome>> + Send;

    /// Takes a Storage Commitment request: success only once it is durably recorded; the
    /// check and the report follow later ([`Services::due_reports`]).
    fn request_commitment(
        &self,
        association: &AssociationContext,
        request: CommitmentRequest,
    ) -> impl Future<Output = Outcome> + Send;

    /// Waits until commitment reports are due (or a poll interval passes: then possibly
    /// none) and returns them, claimed for this process.
    fn due_reports(&self) -> impl Future<Output = Vec<CommitmentReport>> + Send;

    /// Tells whether report `key` was delivered (`Ok`) or why not.
    fn report_delivered(
        &self,
        key: i64,
        result: Result<(), String>,
    ) -> impl Future<Output = ()> + Send;
}
