//! Image codecs implemented inside Strata. Pure computation: no I/O, no DICOM knowledge.

pub mod j2k;
