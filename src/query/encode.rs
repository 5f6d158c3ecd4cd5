//! Match identifiers written straight to bytes. A C-FIND answers with one small data set per
//! match, thousands per query; building each as an in-memory object and encoding it through
//! the generic writer cost more than reading the match from the database. Here the elements
//! are text (or empty) and the transfer syntax is Implicit or Explicit VR Little Endian, the
//! two every query context uses; anything else goes through dicom-rs ([`write_generic`]).
//! The unit tests hold the bytes equal to dicom-rs's for the same elements.

use std::borrow::Cow;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_encoding::text::SpecificCharacterSet;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::model::transfer_syntax::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};

/// One element of a match: a text value (several values joined by `\`), empty for none.
#[derive(Debug, Clone)]
pub struct Element<'a> {
    pub tag: Tag,
    pub vr: VR,
    pub value: Cow<'a, str>,
}

/// Whether the syntax is one this module writes: `Some(explicit)`, else `None`.
pub fn fast_syntax(transfer_syntax_uid: &str) -> Option<bool> {
    match transfer_syntax_uid.trim_end_matches('\0') {
        IMPLICIT_VR_LITTLE_ENDIAN => Some(false),
        EXPLICIT_VR_LITTLE_ENDIAN => Some(true),
        _ => None,
    }
}

/// A value too long for its VR's 16-bit length field (Explicit VR).
#[derive(Debug, thiserror::Error)]
#[error("({:04X},{:05X}) {vr:?}: value of {len} bytes does not fit", tag.0, tag.1)]
pub struct TooLong {
    tag: Tag,
    vr: VR,
    len: usize,
}

/// Encodes the elements in ascending tag order; of two with the same tag, the first given
/// wins.
pub fn write(mut elements: Vec<Element<'_>>, explicit: bool) -> Result<Vec<u8>, TooLong> {
    elements.sort_by_key(|e| e.tag); // stable: the first of a tag stays first
    elements.dedup_by_key(|e| e.tag);
    let size: usize = elements.iter().map(|e| 12 + e.value.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for e in &elements {
        let value = e.value.as_bytes();
        let padded = value.len() + value.len() % 2;
        out.extend_from_slice(&e.tag.0.to_le_bytes());
        out.extend_from_slice(&e.tag.1.to_le_bytes());
        if !explicit {
            out.extend_from_slice(&(padded as u32).to_le_bytes());
        } else if long_length(e.vr) {
            out.extend_from_slice(&e.vr.to_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(padded as u32).to_le_bytes());
        } else {
            let len = u16::try_from(padded).map_err(|_| TooLong {
                tag: e.tag,
                vr: e.vr,
                len: padded,
            })?;
            out.extend_from_slice(&e.vr.to_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(value);
        if padded > value.len() {
            out.push(if e.vr == VR::UI { 0 } else { b' ' });
        }
    }
    Ok(out)
}

/// The same elements through dicom-rs, for any other syntax a peer negotiated (Deflated,
/// Big Endian).
pub fn write_generic(
    elements: Vec<Element<'_>>,
    transfer_syntax_uid: &str,
) -> Result<Vec<u8>, String> {
    let mut object = InMemDicomObject::new_empty();
    for e in elements {
        if object.get(e.tag).is_some() {
            continue; // the first of a tag wins, as in `write`
        }
        let value = if e.value.is_empty() {
            PrimitiveValue::Empty
        } else if e.value.contains('\\') {
            PrimitiveValue::Strs(e.value.split('\\').map(String::from).collect())
        } else {
            PrimitiveValue::from(e.value.as_ref())
        };
        object.put(DataElement::new(e.tag, e.vr, value));
    }
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or("transfer syntax vanished")?;
    let mut bytes = Vec::new();
    object
        .write_dataset_with_ts_cs(&mut bytes, ts, SpecificCharacterSet::ISO_IR_192)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// VRs whose Explicit VR header has a 32-bit length (PS3.5 7.1.2).
fn long_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(group: u16, number: u16, vr: VR, value: &str) -> Element<'static> {
        Element {
            tag: Tag(group, number),
            vr,
            value: Cow::Owned(value.to_string()),
        }
    }

    /// The bytes dicom-rs writes for the same elements.
    fn reference(elements: &[Element<'_>], ts: &str) -> Vec<u8> {
        write_generic(elements.to_vec(), ts).unwrap()
    }

    fn sample() -> Vec<Element<'static>> {
        vec![
            element(0x0010, 0x0010, VR::PN, "MÜLLER^ANNA"), // odd UTF-8 length
            element(0x0008, 0x0005, VR::CS, "ISO_IR 192"),
            element(0x0008, 0x0052, VR::CS, "STUDY"),
            element(0x0020, 0x000D, VR::UI, "1.2.3.4"), // odd: pads with NUL
            element(0x0008, 0x0061, VR::CS, "CT\\MR"),
            element(0x0008, 0x0020, VR::DA, ""),
            element(0x0020, 0x1208, VR::IS, "1234"),
            element(0x0008, 0x1030, VR::LO, "CHEST"),
            element(0x0018, 0x9999, VR::UT, "text"),
            element(0x0010, 0x0010, VR::PN, "SECOND^WINS^NOT"), // a duplicate: first wins
        ]
    }

    #[test]
    fn bytes_equal_dicom_rs_in_both_syntaxes() {
        for ts in [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN] {
            let explicit = fast_syntax(ts).unwrap();
            assert_eq!(
                write(sample(), explicit).unwrap(),
                reference(&sample(), ts),
                "{ts}"
            );
        }
    }

    /// dicom-rs drops a sequence without items; a requested sequence key comes back as an
    /// empty sequence (PS3.4 C.2.2.1.3: every requested key is returned).
    #[test]
    fn a_sequence_key_comes_back_empty() {
        let sq = vec![element(0x0040, 0x0275, VR::SQ, "")];
        assert_eq!(
            write(sq.clone(), false).unwrap(),
            [0x40, 0, 0x75, 2, 0, 0, 0, 0]
        );
        assert_eq!(
            write(sq, true).unwrap(),
            [0x40, 0, 0x75, 2, b'S', b'Q', 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn other_syntaxes_are_left_to_dicom_rs() {
        assert_eq!(fast_syntax("1.2.840.10008.1.2.1.99"), None);
        assert_eq!(fast_syntax("1.2.840.10008.1.2.2"), None);
    }

    #[test]
    fn a_value_over_the_short_length_is_an_error_in_explicit_vr_only() {
        let long = vec![element(0x0008, 0x1030, VR::LO, &"x".repeat(70_000))];
        assert!(write(long.clone(), true).is_err());
        assert_eq!(write(long, false).unwrap().len(), 8 + 70_000);
    }
}
