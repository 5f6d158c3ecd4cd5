//! Extended negotiation and role selection answered during association establishment.

use dicom_ul::association::server::Negotiation;
use dicom_ul::pdu::RequestorRoles;

use crate::model::sop_class::is_query_find;

/// What we agree to beyond presentation contexts:
/// - for the Q/R FIND models, combined date-time matching (byte 2 of PS3.4 Table C.5-2);
///   relational queries, fuzzy names, timezone adjustment and the rest are declined;
/// - SCP/SCU role selection as the requestor proposes it, so that a C-GET requestor can take
///   the Storage SCP role and receive its instances on the same association.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiator;

impl Negotiation for Negotiator {
    fn extended_negotiation(&self, sop_class_uid: &str, input: &[u8]) -> Option<Vec<u8>> {
        if !is_query_find(sop_class_uid) || input.is_empty() {
            return None;
        }
        let mut answer = vec![0u8; input.len().min(2)];
        if let Some(&combined) = input.get(1) {
            answer[1] = u8::from(combined == 1);
        }
        Some(answer)
    }

    fn negotiate_roles(
        &self,
        _sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        Some(RequestorRoles {
            scu: scu_role,
            scp: scp_role,
        })
    }
}
