//! The DICOM network layer: associations over `dicom-ul`, our own DIMSE layer (command sets,
//! message assembly), admission of associations by AE title, and the traits that services
//! implement. It knows nothing of storage.

pub mod access;
mod association;
pub mod command;
pub mod commitment;
pub mod dimse;
pub mod handler;
pub mod listener;
pub mod negotiation;
pub mod rate;
pub mod tls;

pub use association::{RetrieveSettings, Timeouts};
pub use handler::{
    AssociationContext, CommitmentReport, CommitmentRequest, FindRequest, FindResults,
    ReferencedSop, RetrieveRequest, Services,
};
pub use listener::{serve, NetConfig};

/// The byte stream under an association: plain TCP, or TLS over TCP (`[dicom] tls_listen`).
pub trait Wire: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Wire for T {}
