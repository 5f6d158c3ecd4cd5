//! The locator side of Storage Commitment: every request received by N-ACTION, kept from
//! the moment it is acknowledged until its report is delivered or given up, so a restart or
//! another node resumes it (migration 0013). A commitment is worked on by the process whose
//! lease it carries; one whose lease expired is any process's to take over. This module only
//! stores, claims and reads; checking the instances and sending reports is `commitment`'s.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Locator, LocatorError};
use crate::model::StoredObject;

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Commitments(e)
}

/// Where a commitment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitmentState {
    /// Acknowledged; its instances are not checked yet.
    Checking,
    /// Checked; the report waits to be delivered.
    Ready,
    /// The report was delivered.
    Reported,
    /// The report could not be delivered before the give-up time.
    GivenUp,
}

impl CommitmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitmentState::Checking => "checking",
            CommitmentState::Ready => "ready",
            CommitmentState::Reported => "reported",
            CommitmentState::GivenUp => "given_up",
        }
    }
}

/// One referenced instance (Referenced SOP Sequence item) and, once checked, why it is not
/// committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentItem {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// `None`: committed (once checked). Otherwise the Failure Reason (0008,1197).
    pub failure_reason: Option<u16>,
}

/// A commitment as it is worked on: to check, or with its report to deliver.
#[derive(Debug, Clone)]
pub struct Commitment {
    pub id: i64,
    pub transaction_uid: String,
    pub calling_ae: String,
    /// Unix milliseconds, database clock.
    pub received_at: i64,
    /// The association it came on, when this process received it (it may still be open).
    pub association: Option<u64>,
    pub attempts: i64,
    pub items: Vec<CommitmentItem>,
}

/// How many commitments are in each state (`strata status`).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct CommitmentCounts {
    /// Acknowledged, instances not checked yet.
    pub checking: u64,
    /// Checked, report not delivered yet (retrying).
    pub ready: u64,
    pub reported: u64,
    pub given_up: u64,
}

/// An instance as a commitment check needs it: its class and where its bytes are.
#[derive(Debug, Clone)]
pub struct CommittedInstance {
    pub sop_class_uid: String,
    pub object: StoredObject,
}

impl Locator {
    /// Records a commitment request received on `association` (this process's number for
    /// it), under this process's lease, to be checked. Durable on return: only then is the
    /// N-ACTION acknowledged.
    pub async fn record_commitment(
        &self,
        transaction_uid: &str,
        calling_ae: &str,
        association: u64,
        items: &[CommitmentItem],
    ) -> Result<i64, LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        let id: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO commitments (transaction_uid, calling_ae, received_at, state, \
               association, lease) VALUES ($1, $2, {now}, $3, $4, $5) RETURNING id",
            now = self.dialect.now_ms()
        )))
        .bind(transaction_uid)
        .bind(calling_ae)
        .bind(CommitmentState::Checking.as_str())
        .bind(association as i64)
        .bind(self.lease())
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        for (position, item) in items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO commitment_items (commitment_fk, position, sop_class_uid, \
                   sop_instance_uid) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&item.sop_class_uid)
            .bind(&item.sop_instance_uid)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
        Ok(id)
    }

    /// Claims for this process the commitments in `state` that are due (next attempt time
    /// passed) and not held by another live process, oldest first, at most `limit`.
    /// A commitment taken over from another process forgets its association.
    pub async fn claim_commitments(
        &self,
        state: CommitmentState,
        limit: i64,
    ) -> Result<Vec<Commitment>, LocatorError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, lease FROM commitments WHERE state = $1 AND next_attempt_at <= {now} \
             ORDER BY id LIMIT $2",
            now = self.dialect.now_ms()
        )))
        .bind(state.as_str())
        .bind(limit.max(1) * 4)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let live: HashSet<i64> = self.live_leases().await?;
        let mut claimed = Vec::new();
        for row in rows {
            if claimed.len() as i64 >= limit {
                break;
            }
            let id: i64 = row.try_get("id").map_err(err)?;
            let lease: Option<i64> = row.try_get("lease").map_err(err)?;
            if self.held_by_other(lease, &live) {
                continue;
            }
            if self.take_commitment(id, lease).await? {
                claimed.push(self.commitment(id).await?);
            }
        }
        Ok(claimed)
    }

    /// Stamps commitment `id` with this process's lease if it still carries `seen`.
    async fn take_commitment(&self, id: i64, seen: Option<i64>) -> Result<bool, LocatorError> {
        let _guard = self.write_guard().await;
        let done = sqlx::query(
            "UPDATE commitments SET lease = $1, \
               association = CASE WHEN lease = $1 THEN association ELSE NULL END \
             WHERE id = $2 AND COALESCE(lease, 0) = $3",
        )
        .bind(self.lease())
        .bind(id)
        .bind(seen.unwrap_or(0))
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected() == 1)
    }

    /// Commitment `id` with its items in request order.
    async fn commitment(&self, id: i64) -> Result<Commitment, LocatorError> {
        let row = sqlx::query(
            "SELECT id, transaction_uid, calling_ae, received_at, association, lease, attempts \
             FROM commitments WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        let items = sqlx::query(
            "SELECT sop_class_uid, sop_instance_uid, failure_reason FROM commitment_items \
             WHERE commitment_fk = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        let ours = row.try_get::<Option<i64>, _>("lease").map_err(err)? == Some(self.lease());
        Ok(Commitment {
            id,
            transaction_uid: row.try_get("transaction_uid").map_err(err)?,
            calling_ae: row.try_get("calling_ae").map_err(err)?,
            received_at: row.try_get("received_at").map_err(err)?,
            association: row
                .try_get::<Option<i64>, _>("association")
                .map_err(err)?
                .filter(|_| ours)
                .map(|a| a as u64),
            attempts: row.try_get("attempts").map_err(err)?,
            items: items.iter().map(item_of).collect::<Result<_, _>>()?,
        })
    }

    /// Records the check of commitment `id` (its items' failure reasons, in request order)
    /// and makes its report due now. Refused with `LeaseLost` if another process took it over
    /// meanwhile.
    pub async fn record_commitment_check(
        &self,
        id: i64,
        failures: &[Option<u16>],
    ) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        let event_type: i64 = if failures.iter().all(Option::is_none) {
            1
        } else {
            2
        };
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE commitments SET state = $1, event_type = $2, next_attempt_at = {now} \
             WHERE id = $3 AND state = $4 AND lease = $5",
            now = self.dialect.now_ms()
        )))
        .bind(CommitmentState::Ready.as_str())
        .bind(event_type)
        .bind(id)
        .bind(CommitmentState::Checking.as_str())
        .bind(self.lease())
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        if done.rows_affected() != 1 {
            return Err(LocatorError::LeaseLost(self.lease()));
        }
        for (position, reason) in failures.iter().enumerate() {
            if let Some(reason) = reason {
                sqlx::query(
                    "UPDATE commitment_items SET failure_reason = $1 \
                     WHERE commitment_fk = $2 AND position = $3",
                )
                .bind(i64::from(*reason))
                .bind(id)
                .bind(position as i64)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)
    }

    /// The report of commitment `id` was delivered.
    pub async fn commitment_reported(&self, id: i64) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE commitments SET state = $1, finished_at = {now}, attempts = attempts + 1 \
             WHERE id = $2",
            now = self.dialect.now_ms()
        )))
        .bind(CommitmentState::Reported.as_str())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(())
    }

    /// Delivering the report of commitment `id` failed with `error`: tried again after
    /// `retry_ms`, or given up if it was received more than `give_up_ms` ago. Returns
    /// whether it was given up.
    pub async fn commitment_report_failed(
        &self,
        id: i64,
        error: &str,
        retry_ms: i64,
        give_up_ms: i64,
    ) -> Result<bool, LocatorError> {
        let _guard = self.write_guard().await;
        let now = self.dialect.now_ms();
        let given_up = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE commitments SET state = $1, attempts = attempts + 1, last_error = $2, \
               finished_at = {now} \
             WHERE id = $3 AND state = $4 AND received_at + $5 <= {now}"
        )))
        .bind(CommitmentState::GivenUp.as_str())
        .bind(error)
        .bind(id)
        .bind(CommitmentState::Ready.as_str())
        .bind(give_up_ms)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        if given_up.rows_affected() == 1 {
            return Ok(true);
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE commitments SET attempts = attempts + 1, last_error = $1, \
               next_attempt_at = {now} + $2 \
             WHERE id = $3 AND state = $4"
        )))
        .bind(error)
        .bind(retry_ms)
        .bind(id)
        .bind(CommitmentState::Ready.as_str())
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(false)
    }

    /// How many commitments are in each state.
    pub async fn commitment_counts(&self) -> Result<CommitmentCounts, LocatorError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM commitments GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(err)?;
        let mut counts = CommitmentCounts::default();
        for row in rows {
            let n = row.try_get::<i64, _>("n").map_err(err)? as u64;
            let state: String = row.try_get("state").map_err(err)?;
            match state.as_str() {
                "checking" => counts.checking = n,
                "ready" => counts.ready = n,
                "reported" => counts.reported = n,
                "given_up" => counts.given_up = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// The class and stored copy of an instance, if it is stored.
    pub async fn committed_instance(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<CommittedInstance>, LocatorError> {
        let row = sqlx::query(
            "SELECT sop_class_uid, tier, location, byte_offset, byte_length, crc32c, \
               transfer_syntax_uid FROM instances WHERE sop_instance_uid = $1",
        )
        .bind(sop_instance_uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        row.map(|row| {
            Ok(CommittedInstance {
                sop_class_uid: row.try_get("sop_class_uid")?,
                object: super::stored_object(&row)?,
            })
        })
        .transpose()
        .map_err(err)
    }
}

fn item_of(row: &AnyRow) -> Result<CommitmentItem, LocatorError> {
    Ok(CommitmentItem {
        sop_class_uid: row.try_get("sop_class_uid").map_err(err)?,
        sop_instance_uid: row.try_get("sop_instance_uid").map_err(err)?,
        failure_reason: row
            .try_get::<Option<i64>, _>("failure_reason")
            .map_err(err)?
            .map(|r| r as u16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locator::tests::temp_locator;

    fn item(uid: &str) -> CommitmentItem {
        CommitmentItem {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: uid.into(),
            failure_reason: None,
        }
    }

    /// A commitment goes checking → ready → retried later → reported or given up, claimed
    /// by its own process with its association, its items and reasons in request order.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_commitment_is_checked_then_reported_retried_or_given_up() {
        let (_dir, locator) = temp_locator().await;
        let items = [item("1.2.3"), item("1.2.1"), item("1.2.2")];
        let id = locator
            .record_commitment("9.9.1", "MODALITY", 7, &items)
            .await
            .unwrap();
        let claimed = locator
            .claim_commitments(CommitmentState::Checking, 16)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].association, Some(7));
        assert_eq!(claimed[0].items, items);
        assert!(locator
            .claim_commitments(CommitmentState::Ready, 16)
            .await
            .unwrap()
            .is_empty());
        locator
            .record_commitment_check(id, &[None, Some(0x0112), None])
            .await
            .unwrap();
        // Checked twice (another process took it meanwhile): refused.
        assert!(matches!(
            locator
                .record_commitment_check(id, &[None, None, None])
                .await,
            Err(LocatorError::LeaseLost(_))
        ));
        let ready = locator
            .claim_commitments(CommitmentState::Ready, 16)
            .await
            .unwrap();
        let reasons: Vec<_> = ready[0].items.iter().map(|i| i.failure_reason).collect();
        assert_eq!(reasons, [None, Some(0x0112), None]);

        // A failed delivery waits `retry_ms` before it is due again.
        let gave_up = locator
            .commitment_report_failed(id, "refused", 60_000, 3_600_000)
            .await
            .unwrap();
        assert!(!gave_up);
        assert!(locator
            .claim_commitments(CommitmentState::Ready, 16)
            .await
            .unwrap()
            .is_empty());
        // Past the give-up time, the next failure gives up.
        assert!(locator
            .commitment_report_failed(id, "refused", 0, 0)
            .await
            .unwrap());
        let other = locator
            .record_commitment("9.9.2", "MODALITY", 8, &[item("1.2.4")])
            .await
            .unwrap();
        locator
            .claim_commitments(CommitmentState::Checking, 16)
            .await
            .unwrap();
        locator
            .record_commitment_check(other, &[None])
            .await
            .unwrap();
        locator.commitment_reported(other).await.unwrap();
        assert_eq!(
            locator.commitment_counts().await.unwrap(),
            CommitmentCounts {
                checking: 0,
                ready: 0,
                reported: 1,
                given_up: 1
            }
        );
    }
}
