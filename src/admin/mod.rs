//! Admin commands behind the CLI: reports over the locator and the tiers (`status`,
//! `schedule`, `locate`), and the jobs an admin runs by hand (tiering, restore, backup,
//! verify, import), each recorded in the job history (`crate::jobs`).

mod backup;
mod import;
mod progress;
mod restore;
mod schedule;
mod status;
mod tier;
mod transcode;
mod volume;

pub use backup::{backup_run, enqueue_backup, verify, BackupCommandError, BackupSummary};
pub use import::{import, ImportError, ImportSummary, IMPORT_AE};
pub use restore::{restore, RestoreSummary};
pub use schedule::{schedule, ScheduleReport, WorkerSchedule};
pub use status::{status, StatusReport};
pub use tier::{locate, tier_run, Located, LocatedCopy, TierError, TierSummary};
pub use transcode::{parse_roi, transcode, TranscodeError, TranscodeSummary};
pub use volume::{export_volume, import_volume, volumes, ImportVolumeSummary, VolumeCommandError};
