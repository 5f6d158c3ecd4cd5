//! C-FIND latency client for tools/bench.sh, built on Strata's own DIMSE layer so that the
//! client costs microseconds per response instead of pynetdicom's ~0.6 ms: it measures the
//! server. One association, each query run N times; prints `NAME p50_ms p95_ms matches` where
//! the time runs from sending the request to receiving the final response.
//!
//!   find_latency HOST:PORT --aec AET [--aet MODALITY] [--runs 50] NAME:KEY=VALUE,KEY=VALUE ...

use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};
use strata::model::sop_class::STUDY_ROOT_FIND;
use strata::model::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN;
use strata::net::command::{CommandField, CommandSet};
use strata::net::dimse::{DimseEvent, MessageAssembler};

const RETURN_KEYS: &[&str] = &[
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "StudyInstanceUID",
    "ModalitiesInStudy",
];

fn tag(keyword: &str) -> (Tag, VR) {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    let entry = StandardDataDictionary
        .by_name(keyword)
        .unwrap_or_else(|| panic!("unknown keyword {keyword}"));
    let vr = entry.vr().relaxed();
    (entry.tag(), vr)
}

fn identifier(keys: &[(String, String)]) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    obj.put(DataElement::new(
        Tag(0x0008, 0x0052),
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    for k in RETURN_KEYS {
        let (t, vr) = tag(k);
        obj.put(DataElement::new(t, vr, PrimitiveValue::Empty));
    }
    for (k, v) in keys {
        let (t, vr) = tag(k);
        obj.put(DataElement::new(t, vr, PrimitiveValue::from(v.as_str())));
    }
    let ts = TransferSyntaxRegistry
        .get(EXPLICIT_VR_LITTLE_ENDIAN)
        .unwrap();
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts).unwrap();
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut addr = None;
    let mut aec = "STRATA".to_string();
    let mut aet = "MODALITY".to_string();
    let mut runs = 50usize;
    let mut queries = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--aec" => aec = it.next().expect("--aec value"),
            "--aet" => aet = it.next().expect("--aet value"),
            "--runs" => runs = it.next().expect("--runs value").parse().expect("a number"),
            _ if addr.is_none() => addr = Some(a),
            _ => queries.push(a),
        }
    }
    let addr = addr.expect("HOST:PORT");
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(aet)
        .called_ae_title(aec)
        .max_pdu_length(65536)
        .with_presentation_context(STUDY_ROOT_FIND, vec![EXPLICIT_VR_LITTLE_ENDIAN])
        .establish_async(addr.as_str())
        .await
        .expect("association");
    assoc.inner_stream().set_nodelay(true).unwrap();
    let pc = assoc.presentation_contexts()[0].id;
    let mut message_id = 1u16;
    for spec in queries {
        let (name, keys) = spec.split_once(':').expect("NAME:KEY=VALUE");
        let keys: Vec<(String, String)> = keys
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("KEY=VALUE");
                (k.to_string(), v.to_string())
            })
            .collect();
        let data = identifier(&keys);
        let mut times = Vec::new();
        let mut matches = 0;
        for _ in 0..runs {
            let command = CommandSet::request(CommandField::CFindRq, message_id, STUDY_ROOT_FIND)
                .with_identifier()
                .encode();
            message_id = message_id.wrapping_add(1).max(1);
            let t0 = Instant::now();
            let pdu = Pdu::PData {
                data: vec![
                    PDataValue {
                        presentation_context_id: pc,
                        value_type: PDataValueType::Command,
                        is_last: true,
                        data: command,
                    },
                    PDataValue {
                        presentation_context_id: pc,
                        value_type: PDataValueType::Data,
                        is_last: true,
                        data: data.clone(),
                    },
                ],
            };
            assoc.send(&pdu).await.expect("send");
            let mut assembler = MessageAssembler::default();
            let mut pending = 0;
            'responses: loop {
                let Pdu::PData { data } = assoc.receive().await.expect("receive") else {
                    panic!("association ended");
                };
                for pdv in data {
                    if let Some(DimseEvent::Command { command, .. }) =
                        assembler.push(pdv).expect("well-formed")
                    {
                        match command.status_code() {
                            Some(0xFF00 | 0xFF01) => pending += 1,
                            Some(_) => break 'responses,
                            None => panic!("response without status"),
                        }
                    }
                }
            }
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            matches = pending;
        }
        times.sort_by(f64::total_cmp);
        let pct = |q: f64| times[((q * (times.len() - 1) as f64).round()) as usize];
        println!("{name} {:.2} {:.2} {matches}", pct(0.5), pct(0.95));
    }
    let _ = assoc.release().await;
}
