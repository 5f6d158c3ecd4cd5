//! Who may associate with us: the called AE title must be ours and the calling one accepted
//! by the [`AccessPolicy`] (which also decides each request's verb), at the AE's request rate;
//! and where known peers are, for C-MOVE.

use std::collections::HashMap;
use std::sync::Arc;

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};

use crate::config::{DicomConfig, Service};
use crate::net::rate::RequestRate;
use crate::service::{AccessPolicy, Denied, Principal};

/// Admission of associations and of each request on them.
#[derive(Debug, Clone)]
pub struct Admission {
    our_aet: String,
    policy: Arc<AccessPolicy>,
    /// Network addresses of known peers (host, port, over TLS): C-MOVE destinations.
    addresses: HashMap<String, (String, u16, bool)>,
    /// `[dicom] max_requests_per_sec_per_ae`, shared by every association of an AE title.
    rate: Option<Arc<RequestRate>>,
}

impl Admission {
    /// `policy` is the process's one access policy, shared with the other front ends.
    pub fn new(config: &DicomConfig, policy: Arc<AccessPolicy>) -> Admission {
        Admission {
            our_aet: config.aet.trim().to_string(),
            policy,
            addresses: config
                .peers
                .iter()
                .map(|p| (p.aet.trim().to_string(), (p.host.clone(), p.port, p.tls)))
                .collect(),
            rate: RequestRate::new(config.max_requests_per_sec_per_ae).map(Arc::new),
        }
    }

    /// Our own AE title.
    pub fn our_aet(&self) -> &str {
        &self.our_aet
    }

    /// Host, port and whether to use TLS, of a known peer, for C-MOVE.
    pub fn destination(&self, aet: &str) -> Option<(&str, u16, bool)> {
        self.addresses
            .get(aet.trim())
            .map(|(host, port, tls)| (host.as_str(), *port, *tls))
    }

    /// Whether `calling_ae` may use `service`, by the access policy.
    pub fn check(&self, calling_ae: &str, service: Service) -> Result<(), Denied> {
        self.policy.check(&Principal::ae(calling_ae), service)
    }

    /// `Err(limit)` when `calling_ae` is over `[dicom] max_requests_per_sec_per_ae`; the
    /// request is then counted against nothing and must be refused.
    pub fn admit_request(&self, calling_ae: &str) -> Result<(), u32> {
        match &self.rate {
            Some(rate) if !rate.admit(calling_ae.trim()) => Err(rate.per_sec()),
            _ => Ok(()),
        }
    }
}

impl AccessControl for Admission {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != self.our_aet {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.policy.accepts_caller(calling_ae_title) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Admission {
        let config = crate::config::for_tests("", "");
        let policy = Arc::new(AccessPolicy::from_config(&config));
        Admission::new(&config.dicom, policy)
    }

    #[test]
    fn called_and_calling_titles_are_checked() {
        let admission = admission();
        assert_eq!(
            admission.check_access("", "VIEWER", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        assert_eq!(
            admission.check_access("", "NOBODY", "STRATA", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            admission.check_access("", "VIEWER ", "STRATA  ", None),
            Ok(())
        );
        assert!(admission.check("VIEWER", Service::Find).is_ok());
        assert!(admission.check("VIEWER", Service::Store).is_err());
        assert_eq!(
            admission.destination("VIEWER "),
            Some(("127.0.0.1", 1, false))
        );
    }
}
