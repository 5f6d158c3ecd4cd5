//! The instances a C-MOVE or C-GET asks for, with where each one's bytes are.

use sqlx::Row;

use std::sync::Arc;

use super::correction::{Coercions, COERCION_COLUMNS};
use super::dialect::number_placeholders;
use super::{stored_object, Locator, LocatorError};
use crate::model::correction::Coercion;
use crate::model::query::QueryLevel;
use crate::model::StoredObject;

/// Unique keys of a retrieve identifier; an empty list does not restrict.
#[derive(Debug, Clone, Default)]
pub struct RetrieveKeys {
    pub patient_id: Option<String>,
    pub study_instance_uids: Vec<String>,
    pub series_instance_uids: Vec<String>,
    pub sop_instance_uids: Vec<String>,
}

/// One instance to send.
#[derive(Debug, Clone)]
pub struct RetrieveRow {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub object: StoredObject,
    /// The index's values to send it with, when its study was corrected.
    pub coercion: Option<Arc<Coercion>>,
}

/// One instance's WADO-RS metadata: its UIDs, and the DICOM JSON kept at ingest (`None`
/// for an instance stored before metadata was kept, or whose header was too long, until
/// the retrieve service describes it).
#[derive(Debug, Clone)]
pub struct MetadataRow {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub json: Option<String>,
    /// The index's values to answer with, when its study was corrected.
    pub coercion: Option<Arc<Coercion>>,
}

impl Locator {
    /// The rows of `columns` (and `joins` beyond the instance, series, study and patient)
    /// for every instance under `keys`, study by study, series by series, in instance number
    /// order; at most `limit + 1`. None when the keys restrict nothing: never "everything".
    async fn keyed_rows(
        &self,
        columns: &str,
        joins: &str,
        keys: &RetrieveKeys,
        limit: usize,
    ) -> Result<Vec<sqlx::any::AnyRow>, LocatorError> {
        let mut clauses = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(pid) = &keys.patient_id {
            clauses.push("p.patient_id = ?".to_string());
            binds.push(pid.clone());
        }
        for (list, column) in [
            (&keys.study_instance_uids, "st.study_instance_uid"),
            (&keys.series_instance_uids, "se.series_instance_uid"),
            (&keys.sop_instance_uids, "i.sop_instance_uid"),
        ] {
            if !list.is_empty() {
                clauses.push(format!("{column} IN {}", self.dialect.json_strings("?")));
                binds.push(serde_json::to_string(list).expect("strings serialize"));
            }
        }
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {columns} \
             FROM instances i JOIN series se ON se.id = i.series_fk \
             JOIN studies st ON st.id = se.study_fk JOIN patients p ON p.id = st.patient_fk \
             {joins} WHERE {} \
             ORDER BY st.study_date DESC, st.id, se.series_number, se.id, i.instance_number, i.id \
             LIMIT {}",
            clauses.join(" AND "),
            limit + 1
        );
        // Safe: the text is built from the fixed clauses above; values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(number_placeholders(&sql)));
        for b in binds {
            query = query.bind(b);
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(LocatorError::Find)
    }

    /// The metadata of every instance under `keys`, in the order of
    /// [`Locator::retrieve_instances`]; at most `limit + 1` rows. Reads no stored file.
    pub async fn instance_metadata(
        &self,
        keys: &RetrieveKeys,
        limit: usize,
    ) -> Result<Vec<MetadataRow>, LocatorError> {
        let columns = format!(
            "st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, \
             i.sop_class_uid, m.json, {COERCION_COLUMNS}"
        );
        let rows = self
            .keyed_rows(
                &columns,
                "LEFT JOIN instance_metadata m ON m.sop_instance_uid = i.sop_instance_uid",
                keys,
                limit,
            )
            .await?;
        let mut coercions = Coercions::default();
        rows.iter()
            .map(|row| {
                Ok(MetadataRow {
                    coercion: coercions.of(row)?,
                    study_instance_uid: row.try_get("study_instance_uid")?,
                    series_instance_uid: row.try_get("series_instance_uid")?,
                    sop_instance_uid: row.try_get("sop_instance_uid")?,
                    sop_class_uid: row.try_get("sop_class_uid")?,
                    json: row.try_get("json")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(LocatorError::Find)
    }

    /// Keeps the metadata of an instance that had none, described after the fact from the
    /// stored file whose CRC-32C is `crc32c`: only while that file is still the instance's
    /// (an overwrite meanwhile keeps its own), and an instance described meanwhile keeps
    /// what it has.
    pub async fn keep_metadata(
        &self,
        sop_instance_uid: &str,
        crc32c: u32,
        json: &str,
    ) -> Result<(), LocatorError> {
        sqlx::query(
            "INSERT INTO instance_metadata (sop_instance_uid, json) SELECT $1, $2 \
             WHERE EXISTS (SELECT 1 FROM instances WHERE sop_instance_uid = $1 AND crc32c = $3) \
             ON CONFLICT (sop_instance_uid) DO NOTHING",
        )
        .bind(sop_instance_uid)
        .bind(json)
        .bind(i64::from(crc32c))
        .execute(&self.pool)
        .await
        .map_err(|source| LocatorError::Record {
            uid: sop_instance_uid.to_string(),
            source,
        })?;
        Ok(())
    }

    /// Every instance under the given keys, study by study, series by series, in instance
    /// number order. At most `limit + 1` rows.
    pub async fn retrieve_instances(
        &self,
        keys: &RetrieveKeys,
        limit: usize,
    ) -> Result<Vec<RetrieveRow>, LocatorError> {
        let columns = format!(
            "i.sop_class_uid, i.sop_instance_uid, i.tier, i.location, i.byte_offset, \
             i.byte_length, i.crc32c, i.transfer_syntax_uid, st.study_instance_uid, \
             {COERCION_COLUMNS}"
        );
        let rows = self.keyed_rows(&columns, "", keys, limit).await?;
        let mut coercions = Coercions::default();
        rows.iter()
            .map(|row| {
                Ok(RetrieveRow {
                    coercion: coercions.of(row).map_err(LocatorError::Find)?,
                    sop_class_uid: row.get("sop_class_uid"),
                    sop_instance_uid: row.get("sop_instance_uid"),
                    object: stored_object(row).map_err(LocatorError::Find)?,
                })
            })
            .collect()
    }
}

/// The unique key a retrieve level needs (PS3.4 C.4.2.2.1).
pub fn required_key(level: QueryLevel) -> &'static str {
    match level {
        QueryLevel::Patient => "PatientID",
        QueryLevel::Study => "StudyInstanceUID",
        QueryLevel::Series => "SeriesInstanceUID",
        QueryLevel::Image => "SOPInstanceUID",
    }
}
