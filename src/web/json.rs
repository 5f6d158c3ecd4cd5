//! The DICOM JSON model, as the web answers use it (see [`crate::codec::json`]).

pub use crate::codec::json::{key, put};
