//! The DICOM JSON model, as the web answers use it (see [`crate::codec::json`]).

pub use crate::codec::json::{absolute_bulk_data, key, put, BULK_DATA_PREFIX};
