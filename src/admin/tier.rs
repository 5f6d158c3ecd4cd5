//! `strata tier run` and `strata locate`: the converter from the command line, and where
//! each instance of a study lives.

use std::sync::Arc;

use serde::Serialize;

use super::progress::Progress;
use crate::archive::{Archive, ArchiveError};
use crate::config::Config;
use crate::convert::{ConvertError, Converter};
use crate::jobs::{JobKind, JobRun, Progress as _, Trigger};
use crate::locator::{now_millis, Locator, LocatorError, Owner, Role};
use crate::model::levels::FrameLevels;
use crate::online::{OnlineError, OnlineStore};
use crate::reader::Reader;

/// Why a tier command could not run at all (single studies failing are counted).
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Locator(#[from] LocatorError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
}

/// What a run did: the same record as a server's tiering pass.
pub type TierSummary = crate::tiering::TieringPass;

/// Where one instance lives (`strata locate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    pub sop_instance_uid: String,
    pub tier: &'static str,
    pub location: String,
    pub offset: u64,
    pub length: u64,
    /// Backup copies (near-line, offline) besides the primary.
    pub copies: Vec<LocatedCopy>,
    /// Where the primary's JPEG 2000 resolution levels end, when recorded for its bytes.
    pub resolution_levels: Vec<FrameLevels>,
}

/// Where one backup copy of an instance is (`strata locate --json`).
#[derive(Debug, Clone, Serialize)]
pub struct LocatedCopy {
    pub kind: &'static str,
    /// `original` or `j2k-roi`.
    pub format: String,
    pub location: String,
    pub offset: u64,
    pub length: u64,
}

/// The locator, a reader with recovery (a restore or a backup reads each instance from
/// whichever intact copy exists) and a converter, as a config describes them.
pub(super) async fn open_parts(
    config: &Config,
) -> Result<(Arc<Locator>, Reader, Converter), TierError> {
    let locator =
        Arc::new(Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?);
    let online = Arc::new(OnlineStore::open_for(&config.storage.online_dir, &locator).await?);
    let archive = Arc::new(Archive::open(&config.archive).await?);
    let nearline = crate::archive::LocalStore::open(&config.backup.nearline_dir)?;
    let reader =
        Reader::new(online.clone(), archive.clone()).with_recovery(locator.clone(), nearline);
    let converter = Converter::new(locator.clone(), online, archive, reader.clone())
        .with_compression(config.archive.compression)
        .with_throttle(config.tiering.throttle_mb_s);
    Ok((locator, reader, converter))
}

async fn open(config: &Config) -> Result<(Arc<Locator>, Converter), TierError> {
    let (locator, _, converter) = open_parts(config).await?;
    Ok((locator, converter))
}

/// Archives every study whose newest instance is older than `min_age_days`.
pub async fn tier_run(config: &Config, min_age_days: u32) -> Result<TierSummary, TierError> {
    let (locator, converter) = open(config).await?;
    let run = JobRun::start(&locator, JobKind::Tier, Trigger::Cli)
        .await
        .audited(&crate::audit::Auditor::for_command(config, locator.clone()));
    let result = archive_due(&locator, &converter, min_age_days).await;
    run.finish(&locator, &result).await;
    locator.close().await;
    result
}

async fn archive_due(
    locator: &Locator,
    converter: &Converter,
    min_age_days: u32,
) -> Result<TierSummary, TierError> {
    converter.recover().await?;
    let cutoff = now_millis() - i64::from(min_age_days) * 86_400_000;
    let studies = locator.studies_due(cutoff).await?;
    let progress = Progress::start();
    let mut summary = TierSummary {
        studies: studies.len() as u64,
        ..TierSummary::default()
    };
    for (n, study) in studies.iter().enumerate() {
        let result = converter.archive_study(study).await;
        if let Err(e) = &result {
            progress.note(&format!("study {study} not archived: {e}"));
        }
        summary.record(study, &result);
        let counts = format!("archived {} failed {}", summary.archived, summary.failed);
        progress.update(n as u64 + 1, summary.studies, &counts, summary.bytes);
    }
    summary.seconds = progress.finish();
    Ok(summary)
}

/// Where every instance of a study is.
pub async fn locate(config: &Config, study: &str) -> Result<Vec<Located>, TierError> {
    let locator = Locator::open(&config.locator, Owner::of(&config.node, Role::Cli)).await?;
    let located = async {
        let mut located = Vec::new();
        for i in locator.study_instances(study).await? {
            let copies = locator
                .copies_of(&i.sop_instance_uid)
                .await?
                .into_iter()
                .map(|c| LocatedCopy {
                    kind: c.kind.as_str(),
                    format: c.format,
                    location: c.location,
                    offset: c.offset,
                    length: c.length,
                })
                .collect();
            let resolution_levels = locator
                .resolution_levels(&i.sop_instance_uid, i.object.crc32c)
                .await?;
            located.push(Located {
                resolution_levels,
                sop_instance_uid: i.sop_instance_uid,
                tier: i.object.tier.as_str(),
                location: i.object.location,
                offset: i.object.offset,
                length: i.object.length,
                copies,
            });
        }
        Ok::<_, LocatorError>(located)
    }
    .await;
    locator.close().await;
    Ok(located?)
}
