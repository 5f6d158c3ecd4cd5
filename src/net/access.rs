//! Who may associate with us and which services each peer may use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};

use crate::config::{DicomConfig, Service};
use crate::net::rate::RequestRate;

/// The AE-title policy: the called AE must be ours; calling AEs must be known peers unless
/// unknown callers are accepted, and each peer may use only the services it is allowed.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    our_aet: String,
    accept_unknown_callers: bool,
    peers: HashMap<String, HashSet<Service>>,
    /// Network addresses of known peers (host, port, over TLS): C-MOVE destinations.
    addresses: HashMap<String, (String, u16, bool)>,
    /// `[dicom] max_requests_per_sec_per_ae`, shared by every association of an AE title.
    rate: Option<Arc<RequestRate>>,
}

/// Services granted to callers missing from the peer list when they are accepted at all.
/// C-MOVE is left out: a move needs a known destination anyway. A commitment report to an
/// unknown caller can only come on the association the request came on.
const UNKNOWN_CALLER_SERVICES: &[Service] = &[
    Service::Echo,
    Service::Store,
    Service::Find,
    Service::Get,
    Service::Commit,
];

impl AccessPolicy {
    pub fn from_config(config: &DicomConfig) -> AccessPolicy {
        AccessPolicy {
            our_aet: config.aet.trim().to_string(),
            accept_unknown_callers: config.accept_unknown_callers,
            peers: config
                .peers
                .iter()
                .map(|p| (p.aet.trim().to_string(), p.allow.iter().copied().collect()))
                .collect(),
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

    /// Whether `calling_ae` may use `service`.
    pub fn allows(&self, calling_ae: &str, service: Service) -> bool {
        match self.peers.get(calling_ae.trim()) {
            Some(allowed) => allowed.contains(&service),
            None => self.accept_unknown_callers && UNKNOWN_CALLER_SERVICES.contains(&service),
        }
    }
}

impl AccessPolicy {
    /// `Err(limit)` when `calling_ae` is over `[dicom] max_requests_per_sec_per_ae`; the
    /// request is then counted against nothing and must be refused.
    pub fn admit_request(&self, calling_ae: &str) -> Result<(), u32> {
        match &self.rate {
            Some(rate) if !rate.admit(calling_ae.trim()) => Err(rate.per_sec()),
            _ => Ok(()),
        }
    }
}

impl AccessControl for AccessPolicy {
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
        if !self.accept_unknown_callers && !self.peers.contains_key(calling_ae_title.trim()) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConfig;

    fn config(accept_unknown: bool) -> DicomConfig {
        DicomConfig {
            aet: "STRATA".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            accept_unknown_callers: accept_unknown,
            peers: vec![PeerConfig {
                aet: "VIEWER".into(),
                host: "127.0.0.1".into(),
                port: 1,
                allow: vec![Service::Echo, Service::Find],
                tls: false,
            }],
            max_associations: 1,
            max_requests_per_sec_per_ae: 0,
            max_pdu_length: 16384,
            artim_timeout_secs: 1,
            dimse_timeout_secs: 1,
            idle_timeout_secs: 1,
            shutdown_grace_secs: 1,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }

    #[test]
    fn called_and_calling_titles_are_checked() {
        let policy = AccessPolicy::from_config(&config(false));
        assert_eq!(
            policy.check_access("", "VIEWER", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
        assert_eq!(
            policy.check_access("", "NOBODY", "STRATA", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(policy.check_access("", "VIEWER ", "STRATA  ", None), Ok(()));
        assert!(policy.allows("VIEWER", Service::Find));
        assert!(!policy.allows("VIEWER", Service::Store));
        assert!(!policy.allows("NOBODY", Service::Echo));
    }

    #[test]
    fn unknown_callers_when_accepted_cannot_move() {
        let policy = AccessPolicy::from_config(&config(true));
        assert_eq!(policy.check_access("", "NOBODY", "STRATA", None), Ok(()));
        assert!(policy.allows("NOBODY", Service::Store));
        assert!(!policy.allows("NOBODY", Service::Move));
    }
}
