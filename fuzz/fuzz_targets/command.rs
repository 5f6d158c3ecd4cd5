//! DIMSE command sets (PS3.7 9.3 and 10.3): decoded, every field Strata reads taken, and a
//! decoded set encoded again decodes to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::net::command::CommandSet;

fuzz_target!(|data: &[u8]| {
    let Ok(command) = CommandSet::decode(data) else {
        return;
    };
    let fields = |c: &CommandSet| {
        (
            (
                c.command_field().ok().map(|f| f.code()),
                c.message_id().ok(),
                c.message_id_being_responded_to().ok(),
                c.has_data_set().ok(),
            ),
            (
                c.affected_sop_class_uid(),
                c.affected_sop_instance_uid(),
                c.requested_sop_class_uid(),
                c.requested_sop_instance_uid(),
                c.action_type_id(),
                c.event_type_id(),
                c.priority(),
                c.move_destination(),
                c.move_originator_ae_title(),
                c.move_originator_message_id(),
                c.status_code(),
            ),
        )
    };
    let first = fields(&command);
    let again = CommandSet::decode(&command.encode()).expect("an encoded command set decodes");
    assert_eq!(first, fields(&again));
});
