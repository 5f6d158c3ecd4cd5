//! The DICOM JSON model (PS3.18 F.2): single attributes from text (what the locator
//! indexes), and whole data sets (an instance's metadata, kept at ingest so that WADO-RS
//! `/metadata` never opens a stored file).

use base64::Engine;
use dicom_core::header::Header;
use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use serde_json::{Map, Value};

/// Binary values up to this many bytes are kept inline (base64); longer ones at the top
/// level get a [`BULK_DATA_PREFIX`] URI, inside sequences they are left out (the attribute
/// is there, without a value).
pub const INLINE_BINARY_LIMIT: usize = 1024;

/// The BulkDataURI kept at ingest for a long top-level binary value: `bulkdata/GGGGEEEE`,
/// relative to the instance's WADO-RS URL. The server makes it absolute when it answers
/// (where the instance is reached depends on the request), see [`absolute_bulk_data`].
pub const BULK_DATA_PREFIX: &str = "bulkdata/";

/// `json` (an instance's kept metadata) with its relative BulkDataURIs made absolute under
/// `instance_url`. Text values cannot hold the marker unescaped, so a plain replace is safe.
pub fn absolute_bulk_data<'a>(json: &'a str, instance_url: &str) -> std::borrow::Cow<'a, str> {
    let marker = format!("\"BulkDataURI\":\"{BULK_DATA_PREFIX}");
    if json.contains(&marker) {
        let absolute = format!("\"BulkDataURI\":\"{instance_url}/{BULK_DATA_PREFIX}");
        std::borrow::Cow::Owned(json.replace(&marker, &absolute))
    } else {
        std::borrow::Cow::Borrowed(json)
    }
}

/// One attribute of a DICOM JSON object: a `Value` array unless `value` is empty, person
/// names as `Alphabetic` components, IS/DS/US/UL as JSON numbers, multiple values split at
/// the backslash.
pub fn put(object: &mut Map<String, Value>, tag: Tag, vr: VR, value: &str) {
    let mut attribute = Map::new();
    attribute.insert("vr".into(), Value::String(vr.to_string().into()));
    let value = value.trim_end_matches([' ', '\0']);
    if !value.is_empty() {
        let values: Vec<Value> = value.split('\\').map(|v| one(vr, v)).collect();
        attribute.insert("Value".into(), Value::Array(values));
    }
    object.insert(key(tag), Value::Object(attribute));
}

/// `GGGGEEEE`, upper-case hex: the key of an attribute in a DICOM JSON object.
pub fn key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

fn one(vr: VR, value: &str) -> Value {
    let value = value.trim();
    let number = match vr {
        VR::IS | VR::US | VR::UL | VR::SS | VR::SL => value.parse::<i64>().ok().map(Value::from),
        VR::DS | VR::FL | VR::FD => value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Value::from),
        VR::PN => return person_name(value),
        _ => None,
    };
    // A number that does not parse stays a string rather than being lost.
    number.unwrap_or_else(|| Value::String(value.to_string()))
}

/// A person name's component groups (PS3.18 F.2.2): alphabetic, ideographic, phonetic;
/// empty groups left out.
fn person_name(value: &str) -> Value {
    let mut name = Map::new();
    for (group, key) in value
        .split('=')
        .zip(["Alphabetic", "Ideographic", "Phonetic"])
    {
        if !group.is_empty() {
            name.insert(key.into(), Value::String(group.to_string()));
        }
    }
    Value::Object(name)
}

/// The whole data set as a DICOM JSON object, Pixel Data and other long binary values left
/// out. Text is the decoded Unicode, so Specific Character Set says `ISO_IR 192`.
pub fn data_set(object: &InMemDicomObject) -> Map<String, Value> {
    data_set_at(object, true)
}

fn data_set_at(object: &InMemDicomObject, top: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for element in object.iter() {
        let tag = element.tag();
        if tag == dicom_dictionary_std::tags::PIXEL_DATA || tag.group() == 0x0002 {
            continue;
        }
        let vr = element.vr();
        let mut attribute = Map::new();
        attribute.insert("vr".into(), Value::String(vr.to_string().into()));
        match element.value() {
            DicomValue::Sequence(sequence) => {
                let items: Vec<Value> = sequence
                    .items()
                    .iter()
                    .map(|item| Value::Object(data_set_at(item, false)))
                    .collect();
                if !items.is_empty() {
                    attribute.insert("Value".into(), Value::Array(items));
                }
            }
            DicomValue::PixelSequence(_) => {}
            DicomValue::Primitive(value) => primitive(&mut attribute, tag, vr, value, top),
        }
        out.insert(key(tag), Value::Object(attribute));
    }
    out
}

fn primitive(
    attribute: &mut Map<String, Value>,
    tag: Tag,
    vr: VR,
    value: &PrimitiveValue,
    top: bool,
) {
    if value.multiplicity() == 0 {
        return;
    }
    let values: Vec<Value> = match vr {
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => {
            let bytes = value.to_bytes();
            if bytes.len() <= INLINE_BINARY_LIMIT {
                let inline = base64::engine::general_purpose::STANDARD.encode(&bytes);
                attribute.insert("InlineBinary".into(), Value::String(inline));
            } else if top {
                let uri = format!("{BULK_DATA_PREFIX}{}", key(tag));
                attribute.insert("BulkDataURI".into(), Value::String(uri));
            }
            return;
        }
        VR::SQ => return,
        VR::AT => match value {
            PrimitiveValue::Tags(tags) => tags.iter().map(|t| Value::String(key(*t))).collect(),
            _ => return,
        },
        VR::US | VR::SS | VR::UL | VR::SL | VR::UV | VR::SV => value
            .to_multi_int::<i64>()
            .map(|v| v.into_iter().map(Value::from).collect())
            .unwrap_or_default(),
        VR::FL | VR::FD => value
            .to_multi_float64()
            .map(|v| {
                v.into_iter()
                    .map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number))
                    .collect()
            })
            .unwrap_or_default(),
        _ => {
            let text = if tag == dicom_dictionary_std::tags::SPECIFIC_CHARACTER_SET {
                "ISO_IR 192".to_string()
            } else {
                value.to_str().into_owned()
            };
            let text = text.trim_end_matches([' ', '\0']);
            if text.is_empty() {
                return;
            }
            match vr {
                // One value, backslashes and all.
                VR::LT | VR::ST | VR::UT | VR::UR => vec![Value::String(text.to_string())],
                _ => text.split('\\').map(|v| one(vr, v)).collect(),
            }
        }
    };
    if !values.is_empty() {
        attribute.insert("Value".into(), Value::Array(values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use serde_json::json;

    #[test]
    fn values_take_the_json_type_of_their_vr() {
        let mut object = Map::new();
        put(&mut object, tags::PATIENT_NAME, VR::PN, "Doe^Jane");
        put(&mut object, tags::SERIES_NUMBER, VR::IS, "3 ");
        put(
            &mut object,
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            "Wang^Wei=王^伟",
        );
        put(&mut object, tags::MODALITIES_IN_STUDY, VR::CS, "CT\\MR");
        put(&mut object, tags::ACCESSION_NUMBER, VR::SH, "");
        assert_eq!(
            Value::Object(object),
            json!({
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
                "00200011": {"vr": "IS", "Value": [3]},
                "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Wang^Wei", "Ideographic": "王^伟"}]},
                "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
                "00080050": {"vr": "SH"},
            })
        );
    }
}
