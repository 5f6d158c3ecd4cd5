//! Corrections in the index (issue #18, item 5): changing a study's or a patient's
//! attributes after the fact, moving a study to another patient, merging two patients, and
//! following a re-sent object's new values under `duplicate_policy = overwrite`. Every
//! change marks the studies it touches corrected (`studies.corrected_at`), so retrieves send
//! their instances with the index's values, and is audited (`updated`, old and new values) in
//! the same transaction.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{now_millis, Locator};
use crate::model::correction::{Attribute, Changes, Coercion, Level};
use crate::model::{person_name, PatientAttributes, StudyAttributes};

/// Why an update was not made.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("no study {0} in the index")]
    NoStudy(String),
    #[error("no patient {0} in the index")]
    NoPatient(String),
    #[error("patient ID {id} is held by several issuers ({issuers}): name one with --issuer")]
    Ambiguous { id: String, issuers: String },
    #[error("{0} is a study attribute: change it with --study")]
    StudyAttribute(&'static str),
    #[error("cannot update the index: {0}")]
    Sql(#[from] sqlx::Error),
}

/// One attribute's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub attribute: &'static str,
    pub before: String,
    pub after: String,
}

/// What an update did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Updated {
    /// Studies whose values changed, now sent with the index's values.
    pub studies: Vec<String>,
    /// The changes, as the first study saw them.
    pub changes: Vec<Change>,
    /// The patient ID (and issuer) the studies belong to now.
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    /// A patient whose studies all moved to another one and who is gone from the index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged: Option<String>,
}

/// A study as the index holds it.
struct Held {
    study_fk: i64,
    patient_fk: i64,
    patient: PatientAttributes,
    study: StudyAttributes,
}

const HELD: &str =
    "SELECT st.id AS study_fk, st.patient_fk, p.patient_id, p.issuer_of_patient_id, \
       p.patient_name, p.patient_birth_date, p.patient_sex, st.study_instance_uid, \
       st.study_date, st.study_time, st.accession_number, st.study_id, st.study_description, \
       st.referring_physician_name \
     FROM studies st JOIN patients p ON p.id = st.patient_fk";

/// The patient and study attributes of a row holding the columns of [`HELD`].
pub(super) fn attributes_of(
    row: &AnyRow,
) -> Result<(PatientAttributes, StudyAttributes), sqlx::Error> {
    Ok((
        PatientAttributes {
            patient_id: row.try_get("patient_id")?,
            issuer_of_patient_id: row.try_get("issuer_of_patient_id")?,
            patient_name: row.try_get("patient_name")?,
            patient_birth_date: row.try_get("patient_birth_date")?,
            patient_sex: row.try_get("patient_sex")?,
        },
        StudyAttributes {
            study_instance_uid: row.try_get("study_instance_uid")?,
            study_date: row.try_get("study_date")?,
            study_time: row.try_get("study_time")?,
            accession_number: row.try_get("accession_number")?,
            study_id: row.try_get("study_id")?,
            study_description: row.try_get("study_description")?,
            referring_physician_name: row.try_get("referring_physician_name")?,
        },
    ))
}

/// The columns (beside `st.study_instance_uid`) a retrieve needs to coerce: whether the
/// study is corrected, and the index's values.
pub(super) const COERCION_COLUMNS: &str = "st.corrected_at, p.patient_id, p.issuer_of_patient_id, \
       p.patient_name, p.patient_birth_date, p.patient_sex, st.study_date, st.study_time, st.accession_number, st.study_id, st.study_description, \
       st.referring_physician_name";

/// The coercions of rows holding [`COERCION_COLUMNS`], shared per study: `None` for a study
/// never corrected.
#[derive(Default)]
pub(super) struct Coercions(HashMap<String, Arc<Coercion>>);

impl Coercions {
    pub fn of(&mut self, row: &AnyRow) -> Result<Option<Arc<Coercion>>, sqlx::Error> {
        let corrected: Option<i64> = row.try_get("corrected_at")?;
        if corrected.is_none() {
            return Ok(None);
        }
        let study: String = row.try_get("study_instance_uid")?;
        if let Some(known) = self.0.get(&study) {
            return Ok(Some(known.clone()));
        }
        let (patient, attributes) = attributes_of(row)?;
        let coercion = Arc::new(Coercion::of(&patient, &attributes));
        self.0.insert(study, coercion.clone());
        Ok(Some(coercion))
    }
}

async fn held(tx: &mut Transaction<'_, Any>, study: &str) -> Result<Option<Held>, sqlx::Error> {
    let sql = format!("{HELD} WHERE st.study_instance_uid = $1");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(study)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let (patient, attributes) = attributes_of(&row)?;
    Ok(Some(Held {
        study_fk: row.try_get("study_fk")?,
        patient_fk: row.try_get("patient_fk")?,
        patient,
        study: attributes,
    }))
}

/// The locator column of an attribute.
fn column(attribute: Attribute) -> &'static str {
    match attribute {
        Attribute::StudyDate => "study_date",
        Attribute::StudyTime => "study_time",
        Attribute::AccessionNumber => "accession_number",
        Attribute::ReferringPhysicianName => "referring_physician_name",
        Attribute::StudyDescription => "study_description",
        Attribute::PatientName => "patient_name",
        Attribute::PatientID => "patient_id",
        Attribute::IssuerOfPatientID => "issuer_of_patient_id",
        Attribute::PatientBirthDate => "patient_birth_date",
        Attribute::PatientSex => "patient_sex",
        Attribute::StudyID => "study_id",
    }
}

/// Sets `changes` (of one level) on the row `id` of `table`, with the person-name keys.
async fn set_columns(
    tx: &mut Transaction<'_, Any>,
    table: &str,
    id: i64,
    changes: &[(Attribute, &str)],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut sets = Vec::new();
    let mut values = Vec::new();
    for (attribute, value) in changes {
        sets.push(format!("{} = ${}", column(*attribute), values.len() + 1));
        values.push(value.to_string());
        if attribute.vr() == "PN" {
            sets.push(format!(
                "{}_key = ${}",
                column(*attribute),
                values.len() + 1
            ));
            values.push(person_name::search_key(value));
        }
    }
    let sql = format!(
        "UPDATE {table} SET {} WHERE id = ${}",
        sets.join(", "),
        values.len() + 1
    );
    // Safe: table and column names are fixed above; values are bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in values {
        query = query.bind(value);
    }
    query.bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// The patient row of (`id`, `issuer`), if any.
async fn patient_row(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    issuer: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM patients WHERE patient_id = $1 AND issuer_of_patient_id = $2",
    )
    .bind(id)
    .bind(issuer)
    .fetch_optional(&mut **tx)
    .await
}

/// The changes of `set` at `level`.
fn at_level<'a>(set: &[(Attribute, &'a str)], level: Level) -> Vec<(Attribute, &'a str)> {
    set.iter()
        .copied()
        .filter(|(a, _)| a.level() == level)
        .collect()
}

/// The changes that differ from what the index holds (`held`): as recorded for the audit,
/// and as (attribute, new value) to set.
fn differing<'a>(
    changes: &'a Changes,
    held: (&PatientAttributes, &StudyAttributes),
) -> (Vec<Change>, Vec<(Attribute, &'a str)>) {
    changes
        .iter()
        .filter(|(a, after)| a.value_in(held.0, held.1) != *after)
        .map(|(a, after)| {
            let change = Change {
                attribute: a.keyword(),
                before: a.value_in(held.0, held.1).to_string(),
                after: after.to_string(),
            };
            (change, (a, after))
        })
        .unzip()
}

/// Removes a patient row no study refers to any more.
async fn drop_if_empty(
    tx: &mut Transaction<'_, Any>,
    patient_fk: i64,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query(
        "DELETE FROM patients WHERE id = $1 \
           AND NOT EXISTS (SELECT 1 FROM studies WHERE patient_fk = $1)",
    )
    .bind(patient_fk)
    .execute(&mut **tx)
    .await?;
    Ok(removed.rows_affected() > 0)
}

/// Moves the studies of patient row `from` (all, or only `study_fk`) to the patient
/// (`id`, `issuer`), made with `patient`'s other values when new; the patient-level
/// `changes` are set on it. The target's row id.
async fn move_studies(
    tx: &mut Transaction<'_, Any>,
    from: i64,
    study_fk: Option<i64>,
    patient: &PatientAttributes,
    changes: &[(Attribute, &str)],
) -> Result<i64, sqlx::Error> {
    let target = match patient_row(tx, &patient.patient_id, &patient.issuer_of_patient_id).await? {
        Some(id) => {
            set_columns(tx, "patients", id, changes).await?;
            id
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO patients (patient_id, issuer_of_patient_id, patient_name, \
                   patient_birth_date, patient_sex, patient_name_key) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&patient.patient_id)
            .bind(&patient.issuer_of_patient_id)
            .bind(&patient.patient_name)
            .bind(&patient.patient_birth_date)
            .bind(&patient.patient_sex)
            .bind(person_name::search_key(&patient.patient_name))
            .fetch_one(&mut **tx)
            .await?
        }
    };
    match study_fk {
        Some(study) => {
            sqlx::query("UPDATE studies SET patient_fk = $1 WHERE id = $2")
                .bind(target)
                .bind(study)
                .execute(&mut **tx)
                .await?
        }
        None => {
            sqlx::query("UPDATE studies SET patient_fk = $1 WHERE patient_fk = $2")
                .bind(target)
                .bind(from)
                .execute(&mut **tx)
                .await?
        }
    };
    Ok(target)
}

/// `patient` with the patient-level `changes` applied.
fn changed_patient(
    patient: &PatientAttributes,
    changes: &[(Attribute, &str)],
) -> PatientAttributes {
    let mut after = patient.clone();
    for (attribute, value) in changes {
        let field = match attribute {
            Attribute::PatientName => &mut after.patient_name,
            Attribute::PatientID => &mut after.patient_id,
            Attribute::IssuerOfPatientID => &mut after.issuer_of_patient_id,
            Attribute::PatientBirthDate => &mut after.patient_birth_date,
            Attribute::PatientSex => &mut after.patient_sex,
            _ => continue,
        };
        *field = value.to_string();
    }
    after
}

/// Marks `studies` corrected at `at` and audits the change for each.
async fn mark_and_audit(
    tx: &mut Transaction<'_, Any>,
    studies: &[String],
    changes: &[Change],
    (who, address): (&str, &str),
    at: i64,
) -> Result<(), sqlx::Error> {
    let detail = describe(changes);
    for study in studies {
        sqlx::query("UPDATE studies SET corrected_at = $1 WHERE study_instance_uid = $2")
            .bind(at)
            .bind(study)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, event, ae, address, study_instance_uid, detail) \
             VALUES ($1, 'updated', $2, $3, $4, $5)",
        )
        .bind(at)
        .bind(who)
        .bind(address)
        .bind(study)
        .bind(&detail)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `PatientName "A" -> "B"; ...`: the audit's record of the changes.
pub fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| format!("{} {:?} -> {:?}", c.attribute, c.before, c.after))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The studies of patient row `patient_fk`.
async fn studies_of(
    tx: &mut Transaction<'_, Any>,
    patient_fk: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT study_instance_uid FROM studies WHERE patient_fk = $1 ORDER BY id")
        .bind(patient_fk)
        .fetch_all(&mut **tx)
        .await
}

/// Applies `changes` to the study `held`, inside a write transaction: a new Patient ID (or
/// issuer) moves the study to that patient (made if new); other patient attributes change
/// the patient row, and so every study of the patient. What changed; nothing when every
/// value already was so.
async fn apply(
    tx: &mut Transaction<'_, Any>,
    held: &Held,
    changes: &Changes,
    who: (&str, &str),
    at: i64,
) -> Result<Updated, sqlx::Error> {
    let (recorded, set) = differing(changes, (&held.patient, &held.study));
    let uid = held.study.study_instance_uid.clone();
    let patient_changes = at_level(&set, Level::Patient);
    let study_changes = at_level(&set, Level::Study);
    let after = changed_patient(&held.patient, &patient_changes);
    let mut updated = Updated {
        patient_id: after.patient_id.clone(),
        issuer_of_patient_id: after.issuer_of_patient_id.clone(),
        ..Updated::default()
    };
    if recorded.is_empty() {
        return Ok(updated);
    }
    let moves = after.patient_id != held.patient.patient_id
        || after.issuer_of_patient_id != held.patient.issuer_of_patient_id;
    let mut studies = vec![uid];
    if moves {
        let target = move_studies(
            tx,
            held.patient_fk,
            Some(held.study_fk),
            &after,
            &patient_changes,
        )
        .await?;
        drop_if_empty(tx, held.patient_fk).await?;
        let renamed = patient_changes
            .iter()
            .any(|(a, _)| !matches!(a, Attribute::PatientID | Attribute::IssuerOfPatientID));
        if renamed {
            // Values set on a patient who has other studies change those too.
            studies = studies_of(tx, target).await?;
        }
    } else if !patient_changes.is_empty() {
        set_columns(tx, "patients", held.patient_fk, &patient_changes).await?;
        studies = studies_of(tx, held.patient_fk).await?;
    }
    set_columns(tx, "studies", held.study_fk, &study_changes).await?;
    mark_and_audit(tx, &studies, &recorded, who, at).await?;
    updated.studies = studies;
    updated.changes = recorded;
    Ok(updated)
}

impl Locator {
    /// Changes a study's attributes in the index (`strata update --study`); see [`apply`].
    pub async fn update_study(
        &self,
        study: &str,
        changes: &Changes,
        who: (&str, &str),
    ) -> Result<Updated, UpdateError> {
        let _writer = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        self.lock_key(&mut tx, study).await?;
        let held = held(&mut tx, study)
            .await?
            .ok_or_else(|| UpdateError::NoStudy(study.to_string()))?;
        let updated = apply(&mut tx, &held, changes, who, now_millis()).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Changes a patient's attributes in the index (`strata update --patient`): with a new
    /// Patient ID (or issuer) held by another patient, every study moves to that one (a
    /// merge: the other patient keeps its values but those set, this one is gone); a new ID
    /// held by none renames the patient. `issuer` picks among patients sharing the ID.
    pub async fn update_patient(
        &self,
        patient_id: &str,
        issuer: Option<&str>,
        changes: &Changes,
        who: (&str, &str),
    ) -> Result<Updated, UpdateError> {
        if let Some((attribute, _)) = changes.iter().find(|(a, _)| a.level() == Level::Study) {
            return Err(UpdateError::StudyAttribute(attribute.keyword()));
        }
        let _writer = self.write_guard().await;
        let mut tx = self.begin_write().await?;
        self.lock_key(&mut tx, &format!("patient {patient_id}"))
            .await?;
        let rows = sqlx::query(
            "SELECT id, patient_id, issuer_of_patient_id, patient_name, patient_birth_date, \
               patient_sex FROM patients WHERE patient_id = $1 ORDER BY id",
        )
        .bind(patient_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut found = Vec::new();
        for row in &rows {
            let issuer_held: String = row.try_get("issuer_of_patient_id")?;
            if issuer.is_none_or(|wanted| wanted == issuer_held) {
                found.push(row);
            }
        }
        let row = match found.as_slice() {
            [] => return Err(UpdateError::NoPatient(patient_id.to_string())),
            [row] => *row,
            several => {
                let issuers: Vec<String> = several
                    .iter()
                    .map(|r| r.try_get::<String, _>("issuer_of_patient_id"))
                    .collect::<Result<_, _>>()?;
                return Err(UpdateError::Ambiguous {
                    id: patient_id.to_string(),
                    issuers: issuers.join(", "),
                });
            }
        };
        let patient_fk: i64 = row.try_get("id")?;
        let before = PatientAttributes {
            patient_id: row.try_get("patient_id")?,
            issuer_of_patient_id: row.try_get("issuer_of_patient_id")?,
            patient_name: row.try_get("patient_name")?,
            patient_birth_date: row.try_get("patient_birth_date")?,
            patient_sex: row.try_get("patient_sex")?,
        };
        let updated = merge_or_rename(&mut tx, patient_fk, &before, changes, who).await?;
        tx.commit().await?;
        Ok(updated)
    }
}

/// [`Locator::update_patient`] inside its transaction.
async fn merge_or_rename(
    tx: &mut Transaction<'_, Any>,
    patient_fk: i64,
    before: &PatientAttributes,
    changes: &Changes,
    who: (&str, &str),
) -> Result<Updated, sqlx::Error> {
    let none = StudyAttributes::default();
    let (recorded, set) = differing(changes, (before, &none));
    let after = changed_patient(before, &set);
    let mut updated = Updated {
        patient_id: after.patient_id.clone(),
        issuer_of_patient_id: after.issuer_of_patient_id.clone(),
        ..Updated::default()
    };
    if recorded.is_empty() {
        return Ok(updated);
    }
    let studies = studies_of(tx, patient_fk).await?;
    let target = patient_row(tx, &after.patient_id, &after.issuer_of_patient_id).await?;
    match target {
        Some(other) if other != patient_fk => {
            // A merge: the other patient keeps its values, except those set here.
            let others: Vec<_> = set
                .iter()
                .copied()
                .filter(|(a, _)| !matches!(a, Attribute::PatientID | Attribute::IssuerOfPatientID))
                .collect();
            move_studies(tx, patient_fk, None, &after, &others).await?;
            drop_if_empty(tx, patient_fk).await?;
            updated.merged = Some(before.patient_id.clone());
        }
        _ => set_columns(tx, "patients", patient_fk, &set).await?,
    }
    let at = now_millis();
    // Every study of the patient it is now: a merge changes the values of the target's
    // own studies too when attributes were set on it.
    let patient_now = patient_row(tx, &after.patient_id, &after.issuer_of_patient_id)
        .await?
        .unwrap_or(patient_fk);
    let mut touched = studies;
    if updated.merged.is_some() && set.len() > 1 {
        touched = studies_of(tx, patient_now).await?;
    }
    mark_and_audit(tx, &touched, &recorded, who, at).await?;
    updated.studies = touched;
    updated.changes = recorded;
    Ok(updated)
}

/// Under `duplicate_policy = overwrite`, a re-sent object whose patient or study attributes
/// differ from the index's changes them, as `strata update --study` would, audited as the
/// sender's. Inside the store's transaction.
pub(super) async fn follow_resent(
    tx: &mut Transaction<'_, Any>,
    patient: &PatientAttributes,
    study: &StudyAttributes,
    who: (&str, &str),
    at: i64,
) -> Result<(), sqlx::Error> {
    let Some(held) = held(tx, &study.study_instance_uid).await? else {
        return Ok(());
    };
    let changes = Changes::between((&held.patient, &held.study), (patient, study));
    if changes.is_empty() {
        return Ok(());
    }
    let updated = apply(tx, &held, &changes, who, at).await?;
    tracing::info!(
        study_instance_uid = %study.study_instance_uid,
        changes = %describe(&updated.changes),
        "a re-sent instance corrected its study"
    );
    Ok(())
}
