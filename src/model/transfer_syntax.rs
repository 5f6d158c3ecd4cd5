//! Transfer syntaxes Strata accepts for storage. Encapsulated data is stored as received, so
//! accepting a compressed syntax needs no codec.

pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// Retired, but old modalities still send it; stored as received, re-encoded for
/// destinations that do not take it.
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Accepted for storage, in no particular order: the requestor's order of preference decides.
pub const STORAGE_TRANSFER_SYNTAXES: &[&str] = &[
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  // JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  // JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  // JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.201", // High-Throughput JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.202", // High-Throughput JPEG 2000 with RPCL Options Lossless Only
    "1.2.840.10008.1.2.4.203", // High-Throughput JPEG 2000
    "1.2.840.10008.1.2.5",     // RLE Lossless
];

/// Whether pixel data in this syntax is native (not encapsulated): the uncompressed ones.
pub fn is_native(transfer_syntax_uid: &str) -> bool {
    matches!(
        transfer_syntax_uid,
        IMPLICIT_VR_LITTLE_ENDIAN
            | EXPLICIT_VR_LITTLE_ENDIAN
            | DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
            | EXPLICIT_VR_BIG_ENDIAN
    )
}

/// The media type of one frame's bitstream in an encapsulated syntax (PS3.18 Table 8.7.3-2
/// and 8.7.4-1), for WADO-RS frames sent as stored: `None` for syntaxes whose frames are
/// only sent decoded.
pub fn frame_media_type(transfer_syntax_uid: &str) -> Option<&'static str> {
    Some(match transfer_syntax_uid {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => return None,
    })
}

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
