//! The DICOM JSON model (PS3.18 F.2) for the attributes Strata answers from its locator.

use dicom_core::{Tag, VR};
use serde_json::{Map, Value};

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
