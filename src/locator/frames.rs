//! Where each frame of a multi-frame instance is in its stored bytes (`frame_offsets`): the
//! value of the frame's fragment, by offset from the instance's first byte and length, for
//! the bytes with one CRC-32C. Recorded by whoever wrote the instance (`strata wsi import`);
//! read by WADO-RS `/frames` to read only the frames asked for.

use sqlx::Row;

use super::{Locator, LocatorError};

fn err(e: sqlx::Error) -> LocatorError {
    LocatorError::Frames(e)
}

/// Rows one INSERT writes (five values each).
const ROWS_PER_INSERT: usize = 500;
/// Distinct frames one lookup takes (one placeholder each); more: not looked up.
const MOST_FRAMES: usize = 8192;

/// One frame's bytes: its fragment's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePlace {
    /// From 1.
    pub frame: u32,
    /// From the instance's first byte.
    pub offset: u64,
    pub length: u64,
}

impl Locator {
    /// Records where the frames of `sop_instance_uid`'s bytes with CRC-32C `crc32c` are,
    /// replacing what was recorded for it.
    pub async fn record_frame_offsets(
        &self,
        sop_instance_uid: &str,
        crc32c: u32,
        places: &[FramePlace],
    ) -> Result<(), LocatorError> {
        let _guard = self.write_guard().await;
        let mut tx = self.begin_write().await.map_err(err)?;
        sqlx::query("DELETE FROM frame_offsets WHERE sop_instance_uid = $1")
            .bind(sop_instance_uid)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        for chunk in places.chunks(ROWS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = 5 * i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5
                    )
                })
                .collect();
            // Only placeholders are spliced in.
            let sql = format!(
                "INSERT INTO frame_offsets (sop_instance_uid, frame, crc32c, byte_offset, byte_length) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for place in chunk {
                query = query
                    .bind(sop_instance_uid)
                    .bind(i64::from(place.frame))
                    .bind(i64::from(crc32c))
                    .bind(place.offset as i64)
                    .bind(place.length as i64);
            }
            query.execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    /// Where `frames` of `sop_instance_uid` are in its bytes with CRC-32C `crc32c`, in the
    /// order asked; `None` unless every one is recorded for those bytes.
    pub async fn frame_offsets(
        &self,
        sop_instance_uid: &str,
        crc32c: u32,
        frames: &[u32],
    ) -> Result<Option<Vec<FramePlace>>, LocatorError> {
        let mut wanted: Vec<u32> = frames.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(Some(Vec::new()));
        }
        if wanted.len() > MOST_FRAMES {
            return Ok(None);
        }
        // Only placeholders are spliced in.
        let list: Vec<String> = (0..wanted.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT frame, crc32c, byte_offset, byte_length FROM frame_offsets \
             WHERE sop_instance_uid = $1 AND frame IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sop_instance_uid);
        for frame in &wanted {
            query = query.bind(i64::from(*frame));
        }
        let rows = query.fetch_all(&self.pool).await.map_err(err)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            if row.try_get::<i64, _>("crc32c").map_err(err)? != i64::from(crc32c) {
                return Ok(None);
            }
            let frame = row.try_get::<i64, _>("frame").map_err(err)? as u32;
            let place = FramePlace {
                frame,
                offset: row.try_get::<i64, _>("byte_offset").map_err(err)? as u64,
                length: row.try_get::<i64, _>("byte_length").map_err(err)? as u64,
            };
            found.insert(frame, place);
        }
        Ok(frames.iter().map(|f| found.get(f).copied()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn frame_places_hold_for_their_bytes_only() {
        let (_dir, locator) = crate::locator::tests::temp_locator().await;
        let places: Vec<FramePlace> = (1..=1200)
            .map(|frame| FramePlace {
                frame,
                offset: 1000 + 100 * u64::from(frame),
                length: 90,
            })
            .collect();
        locator
            .record_frame_offsets("1.2.3", 7, &places)
            .await
            .unwrap();
        let got = locator
            .frame_offsets("1.2.3", 7, &[1100, 2, 1200])
            .await
            .unwrap();
        assert_eq!(got, Some(vec![places[1099], places[1], places[1199]]));
        assert_eq!(
            locator.frame_offsets("1.2.3", 8, &[2]).await.unwrap(),
            None,
            "other bytes"
        );
        assert_eq!(
            locator.frame_offsets("1.2.3", 7, &[1201]).await.unwrap(),
            None
        );
        assert_eq!(locator.frame_offsets("9.9", 7, &[1]).await.unwrap(), None);
        // Recorded again for new bytes: the old places go.
        locator
            .record_frame_offsets("1.2.3", 9, &places[..1])
            .await
            .unwrap();
        assert_eq!(
            locator.frame_offsets("1.2.3", 9, &[1]).await.unwrap(),
            Some(vec![places[0]])
        );
        assert_eq!(locator.frame_offsets("1.2.3", 9, &[2]).await.unwrap(), None);
    }
}
