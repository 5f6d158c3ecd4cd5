//! The DICOM audit message (PS3.15 A.5, the ATNA schema) of one audit entry, as an
//! RFC 5424 syslog line. I/O-free: [`super::syslog`] sends what this writes.

use super::{Entry, Event};
use crate::model::markup::escape as attr;

/// The facility and severity of every message: authpriv (10), notice (5).
const PRIORITY: u8 = 10 * 8 + 5;
/// The MSGID IHE ATNA gives DICOM audit messages.
const MSGID: &str = "IHE+RFC-3881";

/// Where the messages come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// Our AE title: the audit source and the non-requesting participant.
    pub aet: String,
    /// This machine's host name (syslog HOSTNAME, NetworkAccessPointID).
    pub host: String,
    pub pid: u32,
}

/// The EventID (code, meaning) and EventActionCode of an event, from PS3.15 A.5.3.
fn event_id(event: Event) -> (&'static str, &'static str, &'static str) {
    match event {
        Event::Stored => ("110104", "DICOM Instances Transferred", "C"),
        Event::Retrieved => ("110104", "DICOM Instances Transferred", "R"),
        Event::Queried => ("110112", "Query", "E"),
        Event::Deleted => ("110105", "DICOM Study Deleted", "D"),
        // IHE IOCM: instances made unavailable are "accessed" with action Delete.
        Event::Rejected => ("110103", "DICOM Instances Accessed", "D"),
        // A correction of the index: the study's instances are "accessed" with action Update.
        Event::Updated => ("110103", "DICOM Instances Accessed", "U"),
        // An admin command is a local service operation, a kind of Security Alert.
        Event::Admin => ("110113", "Security Alert", "E"),
        Event::Started | Event::Stopped => ("110100", "Application Activity", "E"),
    }
}

/// The EventTypeCode of an application activity.
fn event_type(event: Event) -> Option<(&'static str, &'static str)> {
    match event {
        Event::Started => Some(("110120", "Application Start")),
        Event::Stopped => Some(("110121", "Application Stop")),
        Event::Admin => Some(("110142", "Local Service Operation Stopped")),
        _ => None,
    }
}

/// `YYYY-MM-DDThh:mm:ss.mmmZ` of Unix ms.
fn timestamp(ms: i64) -> String {
    let seconds = crate::model::schedule::iso8601(ms);
    format!(
        "{}.{:03}Z",
        seconds.trim_end_matches('Z'),
        ms.rem_euclid(1000)
    )
}

/// The ATNA XML of `entry`.
pub fn message(entry: &Entry<'_>, at_ms: i64, source: &Source) -> String {
    let (code, meaning, action) = event_id(entry.event);
    let outcome = if entry.failed { "8" } else { "0" };
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>\
         <EventIdentification EventActionCode=\"{action}\" EventDateTime=\"{}\" \
         EventOutcomeIndicator=\"{outcome}\"><EventID csd-code=\"{code}\" \
         codeSystemName=\"DCM\" originalText=\"{meaning}\"/>",
        timestamp(at_ms)
    );
    if let Some((code, meaning)) = event_type(entry.event) {
        xml.push_str(&format!(
            "<EventTypeCode csd-code=\"{code}\" codeSystemName=\"DCM\" originalText=\"{meaning}\"/>"
        ));
    }
    if entry.failed && !entry.detail.is_empty() {
        xml.push_str(&format!(
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            attr(entry.detail)
        ));
    }
    xml.push_str("</EventIdentification>");
    // The requestor (the caller), then this application.
    let (requestor_role, our_role) = match entry.event {
        Event::Stored => (
            ("110153", "Source Role ID"),
            ("110152", "Destination Role ID"),
        ),
        Event::Retrieved => (
            ("110152", "Destination Role ID"),
            ("110153", "Source Role ID"),
        ),
        _ => (("110150", "Application"), ("110150", "Application")),
    };
    if !entry.who.is_empty() {
        let access_point = if entry.address.is_empty() {
            String::new()
        } else {
            format!(
                " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
                attr(entry.address)
            )
        };
        xml.push_str(&format!(
            "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\"{access_point}>\
             <RoleIDCode csd-code=\"{}\" codeSystemName=\"DCM\" originalText=\"{}\"/>\
             </ActiveParticipant>",
            attr(entry.who),
            requestor_role.0,
            requestor_role.1
        ));
    }
    xml.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" AlternativeUserID=\"{}\" UserIsRequestor=\"{}\" \
         NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"1\">\
         <RoleIDCode csd-code=\"{}\" codeSystemName=\"DCM\" originalText=\"{}\"/>\
         </ActiveParticipant>",
        attr(&source.aet),
        source.pid,
        entry.who.is_empty(),
        attr(&source.host),
        our_role.0,
        our_role.1
    ));
    xml.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}@{}\"/>",
        attr(&source.aet),
        attr(&source.host)
    ));
    if let Some(study) = entry.study {
        xml.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" \
             ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">\
             <ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" \
             originalText=\"Study Instance UID\"/></ParticipantObjectIdentification>",
            attr(study)
        ));
    }
    if entry.event == Event::Queried {
        use base64::Engine as _;
        xml.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" \
             ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">\
             <ParticipantObjectIDTypeCode csd-code=\"110181\" codeSystemName=\"DCM\" \
             originalText=\"SOP Class UID\"/><ParticipantObjectQuery>{}</ParticipantObjectQuery>\
             </ParticipantObjectIdentification>",
            attr(entry.object),
            base64::engine::general_purpose::STANDARD.encode(entry.detail)
        ));
    }
    if let Some(patient) = entry.patient.filter(|p| !p.is_empty()) {
        xml.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" \
             ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">\
             <ParticipantObjectIDTypeCode csd-code=\"2\" codeSystemName=\"RFC-3881\" \
             originalText=\"Patient Number\"/></ParticipantObjectIdentification>",
            attr(patient)
        ));
    }
    xml.push_str("</AuditMessage>");
    xml
}

/// The RFC 5424 line carrying `entry`'s message (BOM before the UTF-8 XML, as RFC 5424
/// 6.4 asks).
pub fn syslog_line(entry: &Entry<'_>, at_ms: i64, source: &Source) -> String {
    format!(
        "<{PRIORITY}>1 {} {} strata {} {MSGID} - \u{feff}{}",
        timestamp(at_ms),
        if source.host.is_empty() {
            "-"
        } else {
            &source.host
        },
        source.pid,
        message(entry, at_ms, source)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retrieve_names_the_caller_its_address_and_the_study() {
        let source = Source {
            aet: "STRATA".into(),
            host: "pacs1".into(),
            pid: 42,
        };
        let entry = Entry {
            event: Event::Retrieved,
            who: "VIEWER<1>",
            address: "10.0.0.7",
            study: Some("1.2.3"),
            patient: None,
            object: "",
            detail: "C-GET 3 instances",
            failed: false,
        };
        let line = syslog_line(&entry, 1_764_927_000_123, &source);
        assert!(line.starts_with(
            "<85>1 2025-12-05T09:30:00.123Z pacs1 strata 42 IHE+RFC-3881 - \u{feff}<?xml"
        ));
        assert!(line.contains("csd-code=\"110104\""));
        assert!(line.contains("EventActionCode=\"R\""));
        assert!(line.contains("UserID=\"VIEWER&lt;1&gt;\""));
        assert!(line.contains("NetworkAccessPointID=\"10.0.0.7\""));
        assert!(line.contains("ParticipantObjectID=\"1.2.3\""));
        assert!(line.ends_with("</AuditMessage>"));
    }
}
