//! Image codecs. `j2k` is our JPEG 2000 encoder: pure computation, no I/O, no DICOM
//! knowledge. `dicom` applies it to Part-10 instances (encapsulation, lossy marking, the
//! decode-and-compare check). `native` knows the byte layout of the three uncompressed
//! syntaxes and `walk` follows a data set's elements as its bytes stream by (is it whole,
//! where is its pixel data): ingest checks arrivals with them, retrieves re-encode with them.
//! `json` writes the DICOM JSON model (PS3.18 F.2); `render` turns a decoded frame into
//! JPEG or PNG for display (windowing, viewport). `pixels` checks what the third-party decoders are given (attributes, sizes, RLE headers)
//! and turns their panics into errors.

pub mod dicom;
pub mod j2k;
pub mod json;
pub mod native;
pub mod pixels;
pub mod render;
pub mod walk;
