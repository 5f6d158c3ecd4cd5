//! Coercion on the way out (issue #18, item 5): a corrected study's instances are sent with
//! the index's patient and study attributes, their stored bytes unchanged. I/O-free: the
//! attributes all sit near the start of a data set (groups 0008 to 0020, top level), so only
//! the elements up to (0020,0010) are walked and those replaced or inserted; the rest (the
//! pixel data) passes through untouched, also when it is streamed.
//!
//! Values are encoded in the data set's Specific Character Set; one without any that needs
//! a character beyond ASCII is given ISO_IR 192 (UTF-8 extends the default repertoire). The
//! Deflated syntax cannot be walked and is refused with a reason.

use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use serde_json::{json, Map, Value};

use crate::model::correction::{Attribute, Coercion};

/// Why an instance could not be coerced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoerceError {
    #[error("the data set ends inside its element at byte {0}")]
    Short(usize),
    #[error("cannot correct a data set in the Deflated syntax")]
    Deflated,
    #[error("sequences nested deeper than {DEPTH} before (0020,0010)")]
    TooDeep,
    #[error("{keyword} {value:?} cannot be written in the data set's character set {charset:?}")]
    Charset {
        keyword: &'static str,
        value: String,
        charset: String,
    },
}

/// Deepest nesting of undefined-length sequences skipped.
const DEPTH: usize = 8;
/// (0008,0005) Specific Character Set.
const SPECIFIC_CHARACTER_SET: (u16, u16) = (0x0008, 0x0005);
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    Implicit,
    ExplicitLittle,
    ExplicitBig,
}

impl Syntax {
    fn of(uid: &str) -> Result<Syntax, CoerceError> {
        match uid.trim_end_matches('\0') {
            "1.2.840.10008.1.2" => Ok(Syntax::Implicit),
            "1.2.840.10008.1.2.2" => Ok(Syntax::ExplicitBig),
            "1.2.840.10008.1.2.1.99" => Err(CoerceError::Deflated),
            _ => Ok(Syntax::ExplicitLittle),
        }
    }

    fn u16(self, b: &[u8]) -> u16 {
        let pair = [b[0], b[1]];
        match self {
            Syntax::ExplicitBig => u16::from_be_bytes(pair),
            _ => u16::from_le_bytes(pair),
        }
    }

    fn u32(self, b: &[u8]) -> u32 {
        let four = [b[0], b[1], b[2], b[3]];
        match self {
            Syntax::ExplicitBig => u32::from_be_bytes(four),
            _ => u32::from_le_bytes(four),
        }
    }
}

/// One element header.
struct Header {
    tag: (u16, u16),
    vr: [u8; 2],
    length: u32,
    /// Header size in bytes.
    size: usize,
}

fn long_vr(vr: [u8; 2]) -> bool {
    matches!(
        &vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"SV"
            | b"UV"
    )
}

fn header(data: &[u8], at: usize, syntax: Syntax) -> Result<Header, CoerceError> {
    let short = || CoerceError::Short(at);
    let b = data.get(at..at + 8).ok_or_else(short)?;
    let tag = (syntax.u16(&b[0..2]), syntax.u16(&b[2..4]));
    // Items and delimiters have no VR in any syntax.
    if syntax == Syntax::Implicit || tag.0 == 0xFFFE {
        return Ok(Header {
            tag,
            vr: *b"  ",
            length: syntax.u32(&b[4..8]),
            size: 8,
        });
    }
    let vr = [b[4], b[5]];
    if long_vr(vr) {
        let b = data.get(at..at + 12).ok_or_else(short)?;
        return Ok(Header {
            tag,
            vr,
            length: syntax.u32(&b[8..12]),
            size: 12,
        });
    }
    Ok(Header {
        tag,
        vr,
        length: u32::from(syntax.u16(&b[6..8])),
        size: 8,
    })
}

/// Where the element at `at` ends (undefined-length sequences walked to their end).
fn element_end(
    data: &[u8],
    at: usize,
    syntax: Syntax,
    depth: usize,
) -> Result<(Header, usize), CoerceError> {
    let h = header(data, at, syntax)?;
    let value = at + h.size;
    if h.length != UNDEFINED {
        let end = value + h.length as usize;
        return Ok((h, end));
    }
    // Undefined length: a sequence (or UN holding one, encoded Implicit VR Little Endian).
    let inner = if &h.vr == b"UN" {
        Syntax::Implicit
    } else {
        syntax
    };
    let end = items_end(data, value, inner, depth + 1)?;
    Ok((h, end))
}

/// Walks items from `at` to the end of their Sequence Delimitation Item.
fn items_end(
    data: &[u8],
    mut at: usize,
    syntax: Syntax,
    depth: usize,
) -> Result<usize, CoerceError> {
    if depth > DEPTH {
        return Err(CoerceError::TooDeep);
    }
    loop {
        let item = header(data, at, syntax)?;
        at += 8;
        match item.tag {
            SEQUENCE_END => return Ok(at),
            ITEM if item.length == UNDEFINED => loop {
                let (h, end) = element_end(data, at, syntax, depth)?;
                at = if h.tag == ITEM_END { at + 8 } else { end };
                if h.tag == ITEM_END {
                    break;
                }
            },
            _ => at += item.length as usize,
        }
        if at > data.len() {
            return Err(CoerceError::Short(at));
        }
    }
}

/// An element of `attribute`-like tag and VR with `value` (padded to even length), encoded.
fn element(tag: (u16, u16), vr: &str, value: &[u8], syntax: Syntax) -> Vec<u8> {
    let mut padded = value.to_vec();
    if padded.len() % 2 == 1 {
        padded.push(b' ');
    }
    let mut out = Vec::with_capacity(padded.len() + 8);
    let put16 = |out: &mut Vec<u8>, v: u16| match syntax {
        Syntax::ExplicitBig => out.extend(v.to_be_bytes()),
        _ => out.extend(v.to_le_bytes()),
    };
    put16(&mut out, tag.0);
    put16(&mut out, tag.1);
    match syntax {
        Syntax::Implicit => out.extend((padded.len() as u32).to_le_bytes()),
        _ => {
            out.extend(vr.as_bytes());
            put16(&mut out, padded.len() as u16);
        }
    }
    out.extend(padded);
    out
}

/// The value bytes of the element at `at` of header `h`, without padding.
fn value_of<'a>(data: &'a [u8], at: usize, h: &Header) -> &'a [u8] {
    let start = at + h.size;
    let end = (start + h.length as usize).min(data.len());
    let value = &data[start.min(end)..end];
    let trimmed = value
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |last| last + 1);
    &value[..trimmed]
}

/// The text codec of a Specific Character Set value (its first term, as dicom-rs names it).
fn charset(value: &[u8]) -> (String, Option<SpecificCharacterSet>) {
    let text = String::from_utf8_lossy(value).trim().to_string();
    let first = text
        .split('\\')
        .find(|t| !t.trim().is_empty())
        .unwrap_or("");
    let codec = if first.is_empty() {
        Some(SpecificCharacterSet::ISO_IR_6)
    } else {
        SpecificCharacterSet::from_code(first.trim())
    };
    (text, codec)
}

/// The data set `data` (in syntax `ts`) with `coercion`'s values: the rewritten start, and
/// how many bytes of `data` it replaces (the rest follows unchanged). Values the data set
/// lacks are added unless empty; values already equal are left as they are.
pub fn coerce_head(
    data: &[u8],
    ts: &str,
    coercion: &Coercion,
) -> Result<(Vec<u8>, usize), CoerceError> {
    let syntax = Syntax::of(ts)?;
    let needs_unicode = coercion.values.iter().any(|(_, v)| !v.is_ascii());
    let mut pending: std::collections::VecDeque<(Attribute, &str)> = coercion
        .values
        .iter()
        .map(|(a, v)| (*a, v.as_str()))
        .collect();
    let mut out = Vec::new();
    let mut at = 0;
    // The character set values are encoded in: known once (0008,0005) is passed.
    let mut codec: Option<(String, Option<SpecificCharacterSet>)> = None;
    while !pending.is_empty() {
        let next = if at < data.len() {
            Some(element_end(data, at, syntax, 0)?)
        } else {
            None
        };
        let tag = next.as_ref().map_or((0xFFFF, 0xFFFF), |(h, _)| h.tag);
        if codec.is_none() && tag >= SPECIFIC_CHARACTER_SET {
            let present = tag == SPECIFIC_CHARACTER_SET;
            let value = match (&next, present) {
                (Some((h, _)), true) => value_of(data, at, h),
                _ => &[][..],
            };
            let (text, mut known) = charset(value);
            if text.is_empty() && needs_unicode {
                // The default repertoire is ASCII, which UTF-8 extends.
                out.extend(element(SPECIFIC_CHARACTER_SET, "CS", b"ISO_IR 192", syntax));
                known = Some(SpecificCharacterSet::ISO_IR_192);
                codec = Some(("ISO_IR 192".into(), known));
                if present {
                    at = next.as_ref().map_or(at, |(_, end)| *end);
                    continue;
                }
            } else {
                codec = Some((text, known));
            }
        }
        while let Some(&(attribute, value)) = pending.front() {
            if attribute.tag() >= tag {
                break;
            }
            pending.pop_front();
            if !value.is_empty() {
                out.extend(encoded(attribute, value, codec.as_ref(), syntax)?);
            }
        }
        let Some((h, end)) = next else { break };
        if end > data.len() {
            return Err(CoerceError::Short(at));
        }
        match pending.front() {
            Some(&(attribute, value)) if attribute.tag() == tag => {
                pending.pop_front();
                let new = encoded(attribute, value, codec.as_ref(), syntax)?;
                let unchanged =
                    value_of(data, at, &h) == value_of(&new, 0, &header(&new, 0, syntax)?);
                if unchanged {
                    out.extend_from_slice(&data[at..end]);
                } else {
                    out.extend(new);
                }
            }
            _ => out.extend_from_slice(&data[at..end]),
        }
        at = end;
    }
    Ok((out, at.min(data.len())))
}

/// `attribute` = `value`, encoded in `codec`'s character set.
fn encoded(
    attribute: Attribute,
    value: &str,
    codec: Option<&(String, Option<SpecificCharacterSet>)>,
    syntax: Syntax,
) -> Result<Vec<u8>, CoerceError> {
    let bytes = if value.is_ascii() {
        value.as_bytes().to_vec()
    } else {
        let (name, known) = codec.map_or(("", None), |(n, k)| (n.as_str(), k.as_ref()));
        let fail = || CoerceError::Charset {
            keyword: attribute.keyword(),
            value: value.to_string(),
            charset: name.to_string(),
        };
        known.ok_or_else(fail)?.encode(value).map_err(|_| fail())?
    };
    Ok(element(attribute.tag(), attribute.vr(), &bytes, syntax))
}

/// A whole data set with `coercion`'s values.
pub fn coerce(data: &[u8], ts: &str, coercion: &Coercion) -> Result<Vec<u8>, CoerceError> {
    let (mut head, consumed) = coerce_head(data, ts, coercion)?;
    head.extend_from_slice(&data[consumed..]);
    Ok(head)
}

/// An instance's DICOM JSON (WADO-RS metadata) with `coercion`'s values.
pub fn coerce_json(json: &str, coercion: &Coercion) -> String {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(json) else {
        return json.to_string();
    };
    for (attribute, value) in &coercion.values {
        let (group, element) = attribute.tag();
        let key = format!("{group:04X}{element:04X}");
        if value.is_empty() && !object.contains_key(&key) {
            continue;
        }
        let mut entry = Map::new();
        entry.insert("vr".into(), json!(attribute.vr()));
        if !value.is_empty() {
            let v = if attribute.vr() == "PN" {
                let mut groups = Map::new();
                for (name, part) in ["Alphabetic", "Ideographic", "Phonetic"]
                    .iter()
                    .zip(value.split('='))
                {
                    if !part.is_empty() {
                        groups.insert((*name).into(), json!(part));
                    }
                }
                Value::Object(groups)
            } else {
                json!(value)
            };
            entry.insert("Value".into(), json!([v]));
        }
        object.insert(key, Value::Object(entry));
    }
    Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PatientAttributes, StudyAttributes};

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT: &str = "1.2.840.10008.1.2";

    fn coercion(name: &str, id: &str) -> Coercion {
        let patient = PatientAttributes {
            patient_id: id.into(),
            patient_name: name.into(),
            ..Default::default()
        };
        let study = StudyAttributes {
            study_date: "20260102".into(),
            ..Default::default()
        };
        Coercion::of(&patient, &study)
    }

    /// A data set with SCS (maybe), an undefined-length sequence, Patient's Name and ID
    /// and pixel data, in `ts`.
    fn data_set(ts: &str, scs: Option<&[u8]>) -> Vec<u8> {
        let syntax = Syntax::of(ts).unwrap();
        let mut d = Vec::new();
        if let Some(scs) = scs {
            d.extend(element(SPECIFIC_CHARACTER_SET, "CS", scs, syntax));
        }
        d.extend(element(
            (0x0008, 0x0016),
            "UI",
            b"1.2.840.10008.5.1.4.1.1.7\0",
            syntax,
        ));
        // (0008,1110) Referenced Study Sequence, undefined length, one undefined item.
        d.extend([0x08, 0, 0x10, 0x11]);
        if syntax == Syntax::Implicit {
            d.extend(UNDEFINED.to_le_bytes());
        } else {
            d.extend(b"SQ\0\0");
            d.extend(UNDEFINED.to_le_bytes());
        }
        d.extend([0xFE, 0xFF, 0x00, 0xE0]);
        d.extend(UNDEFINED.to_le_bytes());
        d.extend(element((0x0008, 0x1150), "UI", b"1.2\0", syntax));
        d.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        d.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        d.extend(element((0x0010, 0x0010), "PN", b"Doe^Jane", syntax));
        d.extend(element((0x0010, 0x0020), "LO", b"P1", syntax));
        d.extend(element((0x0028, 0x0010), "US", &[2, 0], syntax));
        d.extend([0xE0, 0x7F, 0x10, 0x00]);
        if syntax == Syntax::Implicit {
            d.extend(4u32.to_le_bytes());
        } else {
            d.extend(b"OW\0\0");
            d.extend(4u32.to_le_bytes());
        }
        d.extend([1, 2, 3, 4]);
        d
    }

    fn parse(data: &[u8], ts: &str) -> dicom_object::InMemDicomObject {
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
            .get(ts)
            .unwrap();
        use dicom_encoding::TransferSyntaxIndex;
        dicom_object::InMemDicomObject::read_dataset_with_ts(data, ts).unwrap()
    }

    fn text(object: &dicom_object::InMemDicomObject, tag: (u16, u16)) -> String {
        object
            .element(dicom_core::Tag(tag.0, tag.1))
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn values_are_replaced_and_added_and_the_rest_passes_unchanged() {
        for ts in [EXPLICIT, IMPLICIT] {
            let original = data_set(ts, None);
            let (head, consumed) = coerce_head(&original, ts, &coercion("Roe^Jane", "P2")).unwrap();
            // The walk stops before the pixel module: the pixel data is not part of the head.
            assert!(consumed < original.len() - 8, "{ts}");
            let coerced = coerce(&original, ts, &coercion("Roe^Jane", "P2")).unwrap();
            assert!(coerced.starts_with(&head));
            let object = parse(&coerced, ts);
            assert_eq!(text(&object, (0x0010, 0x0010)), "Roe^Jane");
            assert_eq!(text(&object, (0x0010, 0x0020)), "P2");
            assert_eq!(text(&object, (0x0008, 0x0020)), "20260102");
            // Empty index values are not added.
            assert!(object.element(dicom_core::Tag(0x0010, 0x0040)).is_err());
            assert!(coerced.ends_with(&[1, 2, 3, 4]));
        }
    }

    #[test]
    fn equal_values_keep_their_bytes() {
        let original = data_set(EXPLICIT, None);
        let mut same = coercion("Doe^Jane", "P1");
        same.values.retain(|(a, _)| a.tag().0 == 0x0010);
        assert_eq!(coerce(&original, EXPLICIT, &same).unwrap(), original);
    }

    #[test]
    fn non_ascii_values_get_utf8_or_the_data_sets_own_character_set() {
        let original = data_set(EXPLICIT, None);
        let coerced = coerce(&original, EXPLICIT, &coercion("Müller^Jürgen", "P1")).unwrap();
        let object = parse(&coerced, EXPLICIT);
        assert_eq!(text(&object, (0x0008, 0x0005)), "ISO_IR 192");
        assert_eq!(text(&object, (0x0010, 0x0010)), "Müller^Jürgen");

        let latin1 = data_set(EXPLICIT, Some(b"ISO_IR 100"));
        let coerced = coerce(&latin1, EXPLICIT, &coercion("Müller", "P1")).unwrap();
        assert!(coerced.windows(6).any(|w| w == b"M\xfcller"));
        let object = parse(&coerced, EXPLICIT);
        assert_eq!(text(&object, (0x0010, 0x0010)), "Müller");

        let refused = coerce(&latin1, EXPLICIT, &coercion("山田^太郎", "P1")).unwrap_err();
        assert!(matches!(refused, CoerceError::Charset { .. }), "{refused}");
    }

    #[test]
    fn deflated_and_cut_data_sets_are_refused() {
        let c = coercion("Roe^Jane", "P2");
        assert_eq!(
            coerce(b"", "1.2.840.10008.1.2.1.99", &c).unwrap_err(),
            CoerceError::Deflated
        );
        let original = data_set(EXPLICIT, None);
        assert!(matches!(
            coerce(&original[..30], EXPLICIT, &c).unwrap_err(),
            CoerceError::Short(_)
        ));
    }

    #[test]
    fn metadata_json_answers_with_the_index_values() {
        let json = r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},"00100020":{"vr":"LO","Value":["P1"]}}"#;
        let out: Value =
            serde_json::from_str(&coerce_json(json, &coercion("Roe^Jane=山田", "P2"))).unwrap();
        assert_eq!(out["00100010"]["Value"][0]["Alphabetic"], "Roe^Jane");
        assert_eq!(out["00100010"]["Value"][0]["Ideographic"], "山田");
        assert_eq!(out["00100020"]["Value"][0], "P2");
        assert_eq!(out["00080020"]["Value"][0], "20260102");
        assert!(out.get("00100040").is_none());
    }
}
