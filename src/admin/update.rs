//! `strata update`: corrects a study's or a patient's attributes in the index (see
//! `crate::locator::correction`); retrieves then send the index's values, the stored bytes
//! stay as received. Audited in the locator with the change, and to syslog.

use std::sync::Arc;

use crate::audit::{Auditor, Entry, Event};
use crate::config::Config;
use crate::locator::correction::{describe, UpdateError, Updated};
use crate::locator::{Locator, LocatorError, Owner, Role};
use crate::model::correction::Changes;

/// What `strata update` changes.
#[derive(Debug, Clone)]
pub enum UpdateTarget {
    Study(String),
    /// A patient ID, and its issuer when several share the ID.
    Patient(String, Option<String>),
}

/// Why `strata update` did not update.
#[derive(Debug, thiserror::Error)]
pub enum UpdateCommandError {
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// Applies `changes` to `target`; the audit names the operating-system user and node.
pub async fn update(
    config: &Config,
    target: &UpdateTarget,
    changes: &Changes,
) -> Result<Updated, UpdateCommandError> {
    let locator =
        Arc::new(Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?);
    let who = crate::audit::operator(locator.node());
    let result = match target {
        UpdateTarget::Study(uid) => locator.update_study(uid, changes, (&who, "")).await,
        UpdateTarget::Patient(id, issuer) => {
            locator
                .update_patient(id, issuer.as_deref(), changes, (&who, ""))
                .await
        }
    };
    if let Ok(updated) = &result {
        // The locator's rows were written with the change; syslog hears of it now.
        let auditor = Auditor::for_command(config, locator.clone());
        let detail = describe(&updated.changes);
        for study in &updated.studies {
            let entry = Entry {
                study: Some(study),
                patient: Some(&updated.patient_id),
                detail: &detail,
                ..Entry::new(Event::Updated, &who)
            };
            auditor.send(&entry, crate::locator::now_millis());
        }
    }
    locator.close().await;
    Ok(result?)
}
