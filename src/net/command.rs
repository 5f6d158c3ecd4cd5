//! DIMSE command sets (PS3.7 §9.3, §E.1): decoding, encoding and typed views. I/O-free.
//!
//! Command sets are always Implicit VR Little Endian and hold only group 0000, so we encode
//! and decode them directly instead of going through a general data set parser.

use std::collections::BTreeMap;

use crate::service::Status;

/// (0000,0000) Command Group Length.
const COMMAND_GROUP_LENGTH: u16 = 0x0000;
const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
const REQUESTED_SOP_CLASS_UID: u16 = 0x0003;
const COMMAND_FIELD: u16 = 0x0100;
const MESSAGE_ID: u16 = 0x0110;
const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
const MOVE_DESTINATION: u16 = 0x0600;
const PRIORITY: u16 = 0x0700;
const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
const STATUS: u16 = 0x0900;
const ERROR_COMMENT: u16 = 0x0902;
const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
const REQUESTED_SOP_INSTANCE_UID: u16 = 0x1001;
const EVENT_TYPE_ID: u16 = 0x1002;
const ACTION_TYPE_ID: u16 = 0x1008;
const MOVE_ORIGINATOR_AE_TITLE: u16 = 0x1030;
const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;
const NUMBER_OF_REMAINING_SUB_OPERATIONS: u16 = 0x1020;
const NUMBER_OF_COMPLETED_SUB_OPERATIONS: u16 = 0x1021;
const NUMBER_OF_FAILED_SUB_OPERATIONS: u16 = 0x1022;
const NUMBER_OF_WARNING_SUB_OPERATIONS: u16 = 0x1023;

/// Command Data Set Type value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

/// Why a command set could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {0}")]
    Truncated(usize),
    #[error("command element (0000,{0:04X}) outside group 0000")]
    WrongGroup(u16),
    #[error("command set lacks (0000,{0:04X})")]
    Missing(u16),
    #[error("command element (0000,{0:04X}) has a bad value")]
    BadValue(u16),
}

/// The DIMSE command fields we know (PS3.7 Table E.1-1): DIMSE-C, and the DIMSE-N ones
/// Storage Commitment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandField {
    CStoreRq,
    CStoreRsp,
    CGetRq,
    CGetRsp,
    CFindRq,
    CFindRsp,
    CMoveRq,
    CMoveRsp,
    CEchoRq,
    CEchoRsp,
    CCancelRq,
    NEventReportRq,
    NEventReportRsp,
    NActionRq,
    NActionRsp,
    /// Any other value (other N-services and unknown ones).
    Other(u16),
}

impl CommandField {
    pub fn from_code(code: u16) -> CommandField {
        match code {
            0x0001 => CommandField::CStoreRq,
            0x8001 => CommandField::CStoreRsp,
            0x0010 => CommandField::CGetRq,
            0x8010 => CommandField::CGetRsp,
            0x0020 => CommandField::CFindRq,
            0x8020 => CommandField::CFindRsp,
            0x0021 => CommandField::CMoveRq,
            0x8021 => CommandField::CMoveRsp,
            0x0030 => CommandField::CEchoRq,
            0x8030 => CommandField::CEchoRsp,
            0x0FFF => CommandField::CCancelRq,
            0x0100 => CommandField::NEventReportRq,
            0x8100 => CommandField::NEventReportRsp,
            0x0130 => CommandField::NActionRq,
            0x8130 => CommandField::NActionRsp,
            other => CommandField::Other(other),
        }
    }

    pub fn code(self) -> u16 {
        match self {
            CommandField::CStoreRq => 0x0001,
            CommandField::CStoreRsp => 0x8001,
            CommandField::CGetRq => 0x0010,
            CommandField::CGetRsp => 0x8010,
            CommandField::CFindRq => 0x0020,
            CommandField::CFindRsp => 0x8020,
            CommandField::CMoveRq => 0x0021,
            CommandField::CMoveRsp => 0x8021,
            CommandField::CEchoRq => 0x0030,
            CommandField::CEchoRsp => 0x8030,
            CommandField::CCancelRq => 0x0FFF,
            CommandField::NEventReportRq => 0x0100,
            CommandField::NEventReportRsp => 0x8100,
            CommandField::NActionRq => 0x0130,
            CommandField::NActionRsp => 0x8130,
            CommandField::Other(code) => code,
        }
    }

    /// The response field for a request field (bit 15 set), if the request has one.
    pub fn response(self) -> Option<CommandField> {
        let code = self.code();
        (code & 0x8000 == 0 && self != CommandField::CCancelRq)
            .then(|| CommandField::from_code(code | 0x8000))
    }
}

/// A decoded command set: element number (group 0000) to raw value bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandSet {
    elements: BTreeMap<u16, Vec<u8>>,
}

impl CommandSet {
    /// Decodes an Implicit VR Little Endian command set.
    pub fn decode(bytes: &[u8]) -> Result<CommandSet, CommandError> {
        let mut elements = BTreeMap::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let header = bytes
                .get(pos..pos + 8)
                .ok_or(CommandError::Truncated(pos))?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if group != 0x0000 {
                return Err(CommandError::WrongGroup(element));
            }
            let start = pos + 8;
            let value = start
                .checked_add(len)
                .and_then(|end| bytes.get(start..end))
                .ok_or(CommandError::Truncated(pos))?;
            elements.insert(element, value.to_vec());
            pos = start + len;
        }
        Ok(CommandSet { elements })
    }

    /// Encodes as Implicit VR Little Endian with a correct Command Group Length first.
    pub fn encode(&self) -> Vec<u8> {
        let body_len: usize = self
            .elements
            .iter()
            .filter(|(tag, _)| **tag != COMMAND_GROUP_LENGTH)
            .map(|(_, v)| 8 + v.len())
            .sum();
        let mut out = Vec::with_capacity(12 + body_len);
        put_element(
            &mut out,
            COMMAND_GROUP_LENGTH,
            &(body_len as u32).to_le_bytes(),
        );
        for (tag, value) in &self.elements {
            if *tag != COMMAND_GROUP_LENGTH {
                put_element(&mut out, *tag, value);
            }
        }
        out
    }

    fn us(&self, tag: u16) -> Option<Result<u16, CommandError>> {
        self.elements.get(&tag).map(|v| {
            v.as_slice()
                .try_into()
                .map(u16::from_le_bytes)
                .map_err(|_| CommandError::BadValue(tag))
        })
    }

    fn required_us(&self, tag: u16) -> Result<u16, CommandError> {
        self.us(tag).ok_or(CommandError::Missing(tag))?
    }

    fn text(&self, tag: u16) -> Option<String> {
        self.elements.get(&tag).map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches(['\0', ' '])
                .trim_start()
                .to_string()
        })
    }

    fn set_us(&mut self, tag: u16, value: u16) {
        self.elements.insert(tag, value.to_le_bytes().to_vec());
    }

    /// Sets a UI value, NUL-padded to even length as PS3.5 requires.
    fn set_uid(&mut self, tag: u16, value: &str) {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        self.elements.insert(tag, v);
    }

    /// Sets a text value (AE, LO), space-padded to even length.
    fn set_text(&mut self, tag: u16, value: &str) {
        let mut v = value.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(b' ');
        }
        self.elements.insert(tag, v);
    }

    pub fn command_field(&self) -> Result<CommandField, CommandError> {
        self.required_us(COMMAND_FIELD).map(CommandField::from_code)
    }

    pub fn message_id(&self) -> Result<u16, CommandError> {
        self.required_us(MESSAGE_ID)
    }

    pub fn message_id_being_responded_to(&self) -> Result<u16, CommandError> {
        self.required_us(MESSAGE_ID_BEING_RESPONDED_TO)
    }

    /// Whether a data set follows this command (Command Data Set Type other than 0101H).
    pub fn has_data_set(&self) -> Result<bool, CommandError> {
        self.required_us(COMMAND_DATA_SET_TYPE)
            .map(|v| v != NO_DATA_SET)
    }

    pub fn affected_sop_class_uid(&self) -> Option<String> {
        self.text(AFFECTED_SOP_CLASS_UID)
    }

    pub fn affected_sop_instance_uid(&self) -> Option<String> {
        self.text(AFFECTED_SOP_INSTANCE_UID)
    }

    /// Requested SOP Class UID (N-ACTION-RQ and the other DIMSE-N requests).
    pub fn requested_sop_class_uid(&self) -> Option<String> {
        self.text(REQUESTED_SOP_CLASS_UID)
    }

    /// Requested SOP Instance UID (N-ACTION-RQ and the other DIMSE-N requests).
    pub fn requested_sop_instance_uid(&self) -> Option<String> {
        self.text(REQUESTED_SOP_INSTANCE_UID)
    }

    /// Action Type ID of an N-ACTION.
    pub fn action_type_id(&self) -> Option<u16> {
        self.us(ACTION_TYPE_ID).and_then(Result::ok)
    }

    /// Event Type ID of an N-EVENT-REPORT.
    pub fn event_type_id(&self) -> Option<u16> {
        self.us(EVENT_TYPE_ID).and_then(Result::ok)
    }

    pub fn priority(&self) -> Option<u16> {
        self.us(PRIORITY).and_then(Result::ok)
    }

    pub fn move_destination(&self) -> Option<String> {
        self.text(MOVE_DESTINATION)
    }

    pub fn move_originator_ae_title(&self) -> Option<String> {
        self.text(MOVE_ORIGINATOR_AE_TITLE)
            .filter(|s| !s.is_empty())
    }

    pub fn move_originator_message_id(&self) -> Option<u16> {
        self.us(MOVE_ORIGINATOR_MESSAGE_ID).and_then(Result::ok)
    }

    /// The raw status code of a response.
    pub fn status_code(&self) -> Option<u16> {
        self.us(STATUS).and_then(Result::ok)
    }

    /// Builds the response to a request.
    pub fn response(request: &Response<'_>) -> CommandSet {
        let mut rsp = CommandSet::default();
        rsp.set_us(COMMAND_FIELD, request.field.code());
        rsp.set_us(MESSAGE_ID_BEING_RESPONDED_TO, request.message_id);
        rsp.set_us(
            COMMAND_DATA_SET_TYPE,
            if request.has_data_set {
                0x0000
            } else {
                NO_DATA_SET
            },
        );
        rsp.set_us(STATUS, request.status.code());
        if let Some(uid) = request.sop_class_uid {
            rsp.set_uid(AFFECTED_SOP_CLASS_UID, uid);
        }
        if let Some(uid) = request.sop_instance_uid {
            rsp.set_uid(AFFECTED_SOP_INSTANCE_UID, uid);
        }
        if let Some(counts) = &request.sub_operations {
            let clamp = |n: u32| n.min(u32::from(u16::MAX)) as u16;
            if let Some(remaining) = counts.remaining {
                rsp.set_us(NUMBER_OF_REMAINING_SUB_OPERATIONS, clamp(remaining));
            }
            rsp.set_us(NUMBER_OF_COMPLETED_SUB_OPERATIONS, clamp(counts.completed));
            rsp.set_us(NUMBER_OF_FAILED_SUB_OPERATIONS, clamp(counts.failed));
            rsp.set_us(NUMBER_OF_WARNING_SUB_OPERATIONS, clamp(counts.warning));
        }
        if let Some(id) = request.action_type_id {
            rsp.set_us(ACTION_TYPE_ID, id);
        }
        if let Some(comment) = request.error_comment {
            // Error Comment is LO: at most 64 characters.
            let comment: String = comment.chars().filter(char::is_ascii).take(64).collect();
            rsp.set_text(ERROR_COMMENT, &comment);
        }
        rsp
    }

    /// Names the C-MOVE this C-STORE is a sub-operation of.
    pub fn with_move_originator(mut self, ae_title: &str, message_id: u16) -> CommandSet {
        self.set_text(MOVE_ORIGINATOR_AE_TITLE, ae_title);
        self.set_us(MOVE_ORIGINATOR_MESSAGE_ID, message_id);
        self
    }

    /// Builds a request (our SCU side: C-STORE sub-operations, and tests).
    pub fn request(field: CommandField, message_id: u16, sop_class_uid: &str) -> CommandSet {
        let mut rq = CommandSet::default();
        rq.set_us(COMMAND_FIELD, field.code());
        rq.set_us(MESSAGE_ID, message_id);
        rq.set_uid(AFFECTED_SOP_CLASS_UID, sop_class_uid);
        rq.set_us(COMMAND_DATA_SET_TYPE, NO_DATA_SET);
        rq
    }

    /// Builds an N-EVENT-REPORT-RQ with its Event Information data set following (our SCP
    /// side of Storage Commitment: the commitment result).
    pub fn event_report(
        message_id: u16,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        event_type_id: u16,
    ) -> CommandSet {
        let mut rq = CommandSet::default();
        rq.set_us(COMMAND_FIELD, CommandField::NEventReportRq.code());
        rq.set_us(MESSAGE_ID, message_id);
        rq.set_uid(AFFECTED_SOP_CLASS_UID, sop_class_uid);
        rq.set_uid(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
        rq.set_us(EVENT_TYPE_ID, event_type_id);
        rq.set_us(COMMAND_DATA_SET_TYPE, 0x0000);
        rq
    }

    /// Builds an N-ACTION-RQ with its Action Information data set following (tests, and
    /// the requestor's side of Storage Commitment).
    pub fn action(
        message_id: u16,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        action_type_id: u16,
    ) -> CommandSet {
        let mut rq = CommandSet::default();
        rq.set_us(COMMAND_FIELD, CommandField::NActionRq.code());
        rq.set_us(MESSAGE_ID, message_id);
        rq.set_uid(REQUESTED_SOP_CLASS_UID, sop_class_uid);
        rq.set_uid(REQUESTED_SOP_INSTANCE_UID, sop_instance_uid);
        rq.set_us(ACTION_TYPE_ID, action_type_id);
        rq.set_us(COMMAND_DATA_SET_TYPE, 0x0000);
        rq
    }

    /// Marks that an identifier follows (C-FIND-RQ, C-MOVE-RQ, C-GET-RQ), medium priority.
    pub fn with_identifier(mut self) -> CommandSet {
        self.set_us(COMMAND_DATA_SET_TYPE, 0x0000);
        self.set_us(PRIORITY, 0);
        self
    }

    /// Marks that a data set follows, with the given affected instance (C-STORE-RQ).
    pub fn with_data_set(mut self, sop_instance_uid: &str) -> CommandSet {
        self.set_us(COMMAND_DATA_SET_TYPE, 0x0000);
        self.set_uid(AFFECTED_SOP_INSTANCE_UID, sop_instance_uid);
        self.set_us(PRIORITY, 0);
        self
    }
}

/// The parts of a response command set.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    pub field: CommandField,
    pub message_id: u16,
    pub status: Status,
    pub sop_class_uid: Option<&'a str>,
    pub sop_instance_uid: Option<&'a str>,
    pub error_comment: Option<&'a str>,
    pub has_data_set: bool,
    /// C-MOVE/C-GET sub-operation counts.
    pub sub_operations: Option<SubOperations>,
    /// N-ACTION-RSP: the Action Type ID answered.
    pub action_type_id: Option<u16>,
}

/// Sub-operation counts of a C-MOVE or C-GET response (PS3.7 9.3.4, 9.3.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    /// Omitted from final responses other than Cancel.
    pub remaining: Option<u32>,
    pub completed: u32,
    pub failed: u32,
    pub warning: u32,
}

fn put_element(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips() {
        let rq = CommandSet::request(CommandField::CStoreRq, 7, "1.2.840.10008.5.1.4.1.1.2")
            .with_data_set("1.2.3.4.5");
        let bytes = rq.encode();
        // Group length counts every byte after its own element.
        let group_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(group_len, bytes.len() - 12);
        let back = CommandSet::decode(&bytes).unwrap();
        assert_eq!(back.command_field().unwrap(), CommandField::CStoreRq);
        assert_eq!(back.message_id().unwrap(), 7);
        assert!(back.has_data_set().unwrap());
        assert_eq!(
            back.affected_sop_class_uid().unwrap(),
            "1.2.840.10008.5.1.4.1.1.2"
        );
        // The odd-length UID was padded with NUL, and the padding is not part of the value.
        assert_eq!(back.affected_sop_instance_uid().unwrap(), "1.2.3.4.5");
    }

    #[test]
    fn response_carries_status_and_comment() {
        let rsp = CommandSet::response(&Response {
            field: CommandField::CStoreRsp,
            message_id: 3,
            status: Status::OutOfResources,
            sop_class_uid: Some("1.2"),
            sop_instance_uid: Some("1.2.3"),
            error_comment: Some("disk full"),
            has_data_set: false,
            sub_operations: None,
            action_type_id: None,
        });
        let back = CommandSet::decode(&rsp.encode()).unwrap();
        assert_eq!(back.status_code(), Some(0xA700));
        assert_eq!(back.message_id_being_responded_to().unwrap(), 3);
        assert!(!back.has_data_set().unwrap());
        assert_eq!(back.text(ERROR_COMMENT).unwrap(), "disk full");
    }

    #[test]
    fn truncated_and_foreign_elements_are_errors() {
        let bytes = CommandSet::request(CommandField::CEchoRq, 1, "1.2.840.10008.1.1").encode();
        assert!(matches!(
            CommandSet::decode(&bytes[..bytes.len() - 3]),
            Err(CommandError::Truncated(_))
        ));
        let mut foreign = bytes.clone();
        foreign[12] = 0x08; // the element after group length now claims group 0008
        assert!(matches!(
            CommandSet::decode(&foreign),
            Err(CommandError::WrongGroup(_))
        ));
        // A length that points past the end must not panic or allocate wildly.
        let mut huge = bytes;
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(CommandSet::decode(&huge).is_err());
    }

    #[test]
    fn n_action_and_event_report_round_trip() {
        let rq = CommandSet::action(9, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1);
        let back = CommandSet::decode(&rq.encode()).unwrap();
        assert_eq!(back.command_field().unwrap(), CommandField::NActionRq);
        assert_eq!(
            back.command_field().unwrap().response(),
            Some(CommandField::NActionRsp)
        );
        assert_eq!(
            back.requested_sop_class_uid().unwrap(),
            "1.2.840.10008.1.20.1"
        );
        assert_eq!(
            back.requested_sop_instance_uid().unwrap(),
            "1.2.840.10008.1.20.1.1"
        );
        assert_eq!(back.action_type_id(), Some(1));
        assert!(back.has_data_set().unwrap());
        let report =
            CommandSet::event_report(4, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2);
        let back = CommandSet::decode(&report.encode()).unwrap();
        assert_eq!(back.command_field().unwrap().code(), 0x0100);
        assert_eq!(back.event_type_id(), Some(2));
        assert_eq!(back.message_id().unwrap(), 4);
        assert_eq!(
            CommandField::from_code(0x8100),
            CommandField::NEventReportRsp
        );
    }

    #[test]
    fn response_fields() {
        assert_eq!(
            CommandField::CStoreRq.response(),
            Some(CommandField::CStoreRsp)
        );
        assert_eq!(CommandField::CCancelRq.response(), None);
        assert_eq!(CommandField::CEchoRsp.response(), None);
    }
}
