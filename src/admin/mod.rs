//! Admin commands behind the CLI: reports over the locator and the tiers (`locate`; `status`
//! and `schedule` are `crate::service::site`'s, shared with the status page), and the jobs an admin runs by hand (tiering, restore, backup,
//! verify, import), each recorded in the job history (`crate::jobs`); moving the locator to
//! another database (`locator migrate`).

mod backup;
mod delete;
mod import;
mod locator;
mod progress;
mod restore;
mod tier;
mod transcode;
mod update;
mod volume;
mod wsi;

pub use crate::service::site::schedule::{schedule, ScheduleReport, WorkerSchedule};
pub use crate::service::site::status::{status, StatusReport};
pub use backup::{backup_run, enqueue_backup, verify, BackupCommandError, BackupSummary};
pub use delete::{audit, delete, lifecycle_run, DeleteCommandError};
pub use import::{import, ImportError, ImportSummary};
pub use locator::{migrate_locator, LocatorCommandError, MigrateSummary};
pub use restore::{restore, RestoreSummary};
pub use tier::{locate, tier_run, Located, LocatedCopy, TierError, TierSummary};
pub use transcode::{parse_roi, transcode, TranscodeError, TranscodeSummary};
pub use update::{update, UpdateCommandError, UpdateTarget};
pub use volume::{export_volume, import_volume, volumes, ImportVolumeSummary, VolumeCommandError};
pub use wsi::{wsi_import, WsiImportError, WsiLevel, WsiSummary};
