//! Who is asking ([`Principal`]) and the one rule for what each may do ([`AccessPolicy`]).
//! The verbs are the same for every front end: `store` (C-STORE, STOW-RS), `find` (C-FIND,
//! QIDO-RS), `get` (C-GET, WADO-RS), `move`, `echo` and `commit` (DIMSE only), `admin`
//! (administration endpoints). DIMSE peers get theirs from `[[dicom.peers]] allow`, web users
//! from `[[web.users]] allow`.

use std::collections::{HashMap, HashSet};

use crate::config::{Config, Service};

/// Who a request is served for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A DIMSE peer, by its calling AE title (trimmed).
    Ae(String),
    /// A `[[web.users]]` name whose credentials verified.
    User(String),
    /// A web request without credentials, `[web] allow_anonymous` being set.
    Anonymous,
    /// Whoever runs `strata` commands on this machine: the files and the configuration are
    /// already theirs.
    Operator,
}

/// The Source AE Title written into the files the operator imports.
pub const OPERATOR_AE: &str = "STRATA-IMPORT";

impl Principal {
    /// A DIMSE peer by its calling AE title, however padded.
    pub fn ae(calling_ae: &str) -> Principal {
        Principal::Ae(calling_ae.trim().to_string())
    }

    /// The Source AE Title (0002,0016) for the files this principal stores: empty for web
    /// users, who have no AE title.
    pub fn source_ae(&self) -> &str {
        match self {
            Principal::Ae(aet) => aet,
            Principal::Operator => OPERATOR_AE,
            Principal::User(_) | Principal::Anonymous => "",
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Ae(aet) => write!(f, "AE {aet}"),
            Principal::User(name) => write!(f, "user {name}"),
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Operator => f.write_str("the operator"),
        }
    }
}

/// A principal asked for a verb it was not given. DIMSE answers Refused: Not Authorized,
/// HTTP 403. Its text fits a DIMSE Error Comment (64 characters) for AE titles (16).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{verb} not allowed for {principal}")]
pub struct Denied {
    pub principal: Principal,
    pub verb: Service,
}

/// Verbs granted to DIMSE callers missing from the peer list when they are accepted at
/// all. C-MOVE is left out: a move needs a known destination anyway. A commitment report to
/// an unknown caller can only come on the association the request came on.
const UNKNOWN_CALLER_VERBS: &[Service] = &[
    Service::Echo,
    Service::Store,
    Service::Find,
    Service::Get,
    Service::Commit,
];

/// Verbs of anonymous web requests when `[web] allow_anonymous` is set: what a viewer and an
/// uploader need, never administration.
const ANONYMOUS_VERBS: &[Service] = &[Service::Store, Service::Find, Service::Get];

/// The verbs of every principal, from the configuration. One instance serves the whole
/// process (all front ends).
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    peers: HashMap<String, HashSet<Service>>,
    accept_unknown_callers: bool,
    users: HashMap<String, HashSet<Service>>,
    allow_anonymous: bool,
}

impl AccessPolicy {
    pub fn from_config(config: &Config) -> AccessPolicy {
        let verbs = |allow: &[Service]| allow.iter().copied().collect::<HashSet<_>>();
        AccessPolicy {
            peers: config
                .dicom
                .peers
                .iter()
                .map(|p| (p.aet.trim().to_string(), verbs(&p.allow)))
                .collect(),
            accept_unknown_callers: config.dicom.accept_unknown_callers,
            users: config
                .web
                .users
                .iter()
                .map(|u| (u.name.clone(), verbs(&u.allow)))
                .collect(),
            allow_anonymous: config.web.allow_anonymous,
        }
    }

    /// Whether an association from `calling_ae` is accepted at all: a known peer, or any
    /// caller under `[dicom] accept_unknown_callers`.
    pub fn accepts_caller(&self, calling_ae: &str) -> bool {
        self.accept_unknown_callers || self.peers.contains_key(calling_ae.trim())
    }

    /// Whether `principal` may use `verb`.
    pub fn allows(&self, principal: &Principal, verb: Service) -> bool {
        match principal {
            Principal::Ae(aet) => match self.peers.get(aet.trim()) {
                Some(allowed) => allowed.contains(&verb),
                None => self.accept_unknown_callers && UNKNOWN_CALLER_VERBS.contains(&verb),
            },
            Principal::User(name) => self.users.get(name).is_some_and(|v| v.contains(&verb)),
            Principal::Anonymous => self.allow_anonymous && ANONYMOUS_VERBS.contains(&verb),
            Principal::Operator => true,
        }
    }

    /// [`AccessPolicy::allows`] as a result.
    pub fn check(&self, principal: &Principal, verb: Service) -> Result<(), Denied> {
        if self.allows(principal, verb) {
            Ok(())
        } else {
            Err(Denied {
                principal: principal.clone(),
                verb,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(accept_unknown: bool, allow_anonymous: bool) -> AccessPolicy {
        let config = crate::config::for_tests(
            &format!("accept_unknown_callers = {accept_unknown}"),
            &format!(
                "[web]\nallow_anonymous = {allow_anonymous}\n\
                 [[web.users]]\nname = \"viewer\"\npassword_hash = \"x\"\nallow = [\"find\", \"get\"]\n\
                 [[web.users]]\nname = \"admin\"\nallow = [\"admin\"]\n"
            ),
        );
        AccessPolicy::from_config(&config)
    }

    #[test]
    fn peers_and_users_get_exactly_their_verbs() {
        let policy = policy(false, false);
        assert!(policy.allows(&Principal::ae("VIEWER  "), Service::Find));
        assert!(!policy.allows(&Principal::ae("VIEWER"), Service::Store));
        assert!(!policy.allows(&Principal::ae("NOBODY"), Service::Echo));
        assert!(policy.allows(&Principal::User("viewer".into()), Service::Get));
        assert!(!policy.allows(&Principal::User("viewer".into()), Service::Store));
        assert!(!policy.allows(&Principal::User("viewer".into()), Service::Admin));
        assert!(policy.allows(&Principal::User("admin".into()), Service::Admin));
        assert!(!policy.allows(&Principal::User("nobody".into()), Service::Find));
        assert!(!policy.allows(&Principal::Anonymous, Service::Find));
        assert!(policy.allows(&Principal::Operator, Service::Store));
        assert!(policy.accepts_caller("VIEWER"));
        assert!(!policy.accepts_caller("NOBODY"));
        let denied = policy
            .check(&Principal::ae("VIEWER"), Service::Store)
            .unwrap_err();
        assert_eq!(denied.to_string(), "store not allowed for AE VIEWER");
    }

    #[test]
    fn unknown_callers_cannot_move_and_anonymous_users_cannot_administer() {
        let policy = policy(true, true);
        assert!(policy.accepts_caller("NOBODY"));
        assert!(policy.allows(&Principal::ae("NOBODY"), Service::Store));
        assert!(!policy.allows(&Principal::ae("NOBODY"), Service::Move));
        assert!(!policy.allows(&Principal::ae("NOBODY"), Service::Admin));
        assert!(policy.allows(&Principal::Anonymous, Service::Store));
        assert!(!policy.allows(&Principal::Anonymous, Service::Admin));
    }
}
