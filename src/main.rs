//! The `strata` command line. Errors end here as one line on stderr and a non-zero exit.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata::config::Config;

#[derive(Parser)]
#[command(name = "strata", version, about = "PACS storage middleware")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum LifecycleAction {
    /// Delete every study past retention and the bytes of instances rejected more than
    /// `[lifecycle] rejected_keep_days` ago now (as `strata delete` would), then exit.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Only list the studies and rejected instances that would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the DICOM server until SIGTERM or SIGINT.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Ingest folders of Part-10 files through the same path as C-STORE.
    Import {
        #[arg(long)]
        config: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Files or folders (walked recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Archive aged studies into S-DICOM containers now, then exit.
    Tier {
        #[command(subcommand)]
        action: TierAction,
    },
    /// Make a study whole on the online tier from whichever copy survives: archived
    /// instances come back online, missing or damaged online ones are re-created.
    Restore {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        study: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show where each instance of a study lives.
    Locate {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        study: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Transcode one Part-10 file to JPEG 2000.
    Transcode {
        /// `j2k-lossless`, or `j2k-roi` (ROI lossless, background lossy; marked lossy).
        #[arg(long, value_parser = ["j2k-lossless", "j2k-roi"])]
        to: String,
        /// Region of interest for `j2k-roi`: `auto` (from the grey histogram) or `x,y,w,h`.
        #[arg(long, default_value = "auto")]
        roi: String,
        /// Compression ratio of the background (`j2k-roi`); the ROI is lossless.
        #[arg(long, default_value_t = 10.0)]
        ratio: f32,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        input: PathBuf,
        output: PathBuf,
    },
    /// Near-line backup copies.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// Check every primary and backup copy against its checksum.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// Re-create damaged primaries from backup copies and rewrite damaged near-line copies.
        #[arg(long)]
        repair: bool,
        /// The folder holding the offline volume files (a mounted tape): check offline
        /// copies too, each in its volume file.
        #[arg(long, value_name = "DIR")]
        volumes: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show when the tiering and backup workers run next, what is queued, and their last runs.
    Schedule {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The locator database.
    Locator {
        #[command(subcommand)]
        action: LocatorAction,
    },
    /// Show what is stored, per tier, what is queued, and the last run of each job.
    Status {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a study, series or instance from every tier and copy (online files, archive
    /// and near-line containers; offline copies are marked deleted). Audited.
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["study", "series", "instance"])))]
    Delete {
        #[arg(long)]
        config: PathBuf,
        /// Study Instance UID.
        #[arg(long)]
        study: Option<String>,
        /// Series Instance UID.
        #[arg(long)]
        series: Option<String>,
        /// SOP Instance UID.
        #[arg(long)]
        instance: Option<String>,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Correct a study's or a patient's attributes in the index (`--set KEYWORD=VALUE`:
    /// PatientName, PatientID, IssuerOfPatientID, PatientBirthDate, PatientSex, StudyDate,
    /// StudyTime, AccessionNumber, StudyID, StudyDescription, ReferringPhysicianName).
    /// A new PatientID on a study moves it to that patient; on a patient held by another
    /// ID, merges the two. Retrieves then send the new values; stored files are unchanged.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["study", "patient"])))]
    Update {
        #[arg(long)]
        config: PathBuf,
        /// Study Instance UID.
        #[arg(long)]
        study: Option<String>,
        /// Patient ID: every study of the patient.
        #[arg(long)]
        patient: Option<String>,
        /// Issuer of Patient ID, when several patients share the ID.
        #[arg(long, requires = "patient")]
        issuer: Option<String>,
        /// KEYWORD=VALUE, repeated.
        #[arg(long = "set", required = true)]
        set: Vec<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who touched a study (stores, replacements, queries, retrieves, deletes), or the
    /// newest entries of the audit log (`--recent N`).
    Audit {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, required_unless_present = "recent", conflicts_with = "recent")]
        study: Option<String>,
        /// The newest N entries, one per line, whatever they touched.
        #[arg(long)]
        recent: Option<u32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Studies past `[lifecycle]` retention, rejected instances due for deletion.
    Lifecycle {
        #[command(subcommand)]
        action: LifecycleAction,
    },
    /// Whole-slide microscopy images.
    Wsi {
        #[command(subcommand)]
        action: WsiAction,
    },
    /// Read a password from standard input (one line) and print its argon2 hash, for a
    /// `[[web.users]] password_hash`.
    HashPassword,
    /// Print a new random bearer token and, on the next line, the SHA-256 to list in a
    /// `[[web.users]] token_sha256` (the token itself is kept nowhere).
    NewToken,
}

#[derive(Subcommand)]
enum WsiAction {
    /// Make a large image (PNG not interlaced, or TIFF) into a VL Whole Slide Microscopy Image series
    /// (one TILED_FULL instance per pyramid level) and store it, as `import` would.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        patient_id: String,
        #[arg(long, default_value = "")]
        patient_name: String,
        /// Tile width and height, pixels (a multiple of 16).
        #[arg(long, default_value_t = 256)]
        tile: u32,
        /// `jpeg` (baseline, lossy, marked so) or `j2k` (JPEG 2000 lossless).
        #[arg(long, default_value = "jpeg")]
        codec: String,
        /// JPEG quality, 1-100.
        #[arg(long, default_value_t = 90)]
        quality: u8,
        /// Micrometres per pixel at full resolution.
        #[arg(long, default_value_t = 0.25)]
        mpp: f64,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        image: PathBuf,
    },
}

#[derive(Subcommand)]
enum TierAction {
    /// Archive every study whose newest instance is older than the minimum age.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Overrides `[tiering] min_age_days`.
        #[arg(long)]
        min_age_days: Option<u32>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BackupAction {
    /// Write near-line copies of every queued study now, then exit.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Queue this study first (again, e.g. after `[backup] format` changed); repeatable.
        #[arg(long)]
        study: Vec<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write offline volumes (ustar + MANIFEST.json + SHA256SUMS) of every instance on no
    /// volume yet, then exit.
    ExportVolume {
        #[arg(long)]
        config: PathBuf,
        /// Folder the volume files go to (a tape staging area).
        #[arg(long)]
        out: PathBuf,
        /// Largest volume file: `10G`, `500M`, or bytes.
        #[arg(long, default_value = "10G", value_parser = strata::backup::volume::parse_size)]
        max_size: u64,
        /// Bandwidth limit of volume writes in MB/s (e.g. to spare the online tier's disk
        /// during the day); 0 is unlimited.
        #[arg(long, default_value_t = 0.0)]
        throttle_mb_s: f64,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Bring volumes back: re-create missing or damaged primaries from them, ingest what the
    /// locator does not know.
    ImportVolume {
        #[arg(long)]
        config: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the offline volumes the locator knows.
    Volumes {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("strata: error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping causes a message already quotes (our
/// error types name their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[derive(Subcommand)]
enum LocatorAction {
    /// Copy this site's locator into a new, empty database (e.g. SQLite to PostgreSQL), with
    /// every node stopped; check each table's rows and checksum on both sides; print the
    /// config line that switches the site over.
    Migrate {
        #[arg(long)]
        config: PathBuf,
        /// The target, e.g. `postgres://strata:PASSWORD@db:5432/strata`.
        #[arg(long)]
        to: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The async runtime, its blocking pool bounded by `blocking_threads`.
fn runtime(blocking_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        // The server sizes its runtime from its config.
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            init_logging(&config.log.level)?;
            return runtime(config.retrieve.blocking_threads())?.block_on(serve(config));
        }
        command => command,
    };
    let runtime = runtime(strata::config::SHORT_BLOCKING_THREADS)?;
    let rt = &runtime;
    match command {
        Command::HashPassword => hash_password(),
        Command::NewToken => {
            let (token, sha256) = strata::web::auth::new_token();
            println!("{token}\n{sha256}");
            Ok(())
        }
        Command::Serve { .. } => unreachable!("served above"),
        Command::Import {
            config,
            json,
            paths,
        } => import(rt, &config, &paths, json),
        Command::Tier {
            action:
                TierAction::Run {
                    config,
                    min_age_days,
                    json,
                },
        } => tier_run(rt, &config, min_age_days, json),
        Command::Restore {
            config,
            study,
            json,
        } => restore(rt, &config, &study, json),
        Command::Locate {
            config,
            study,
            json,
        } => locate(rt, &config, &study, json),
        Command::Transcode {
            to,
            roi,
            ratio,
            json,
            input,
            output,
        } => transcode(&to, &roi, ratio, &input, &output, json),
        Command::Backup { action } => backup(rt, action),
        Command::Verify {
            config,
            repair,
            volumes,
            json,
        } => verify(rt, &config, repair, volumes.as_deref(), json),
        Command::Schedule { config, json } => {
            let config = load(&config, None)?;
            let report = runtime.block_on(strata::admin::schedule(&config))?;
            emit(&report, json, |r| print!("{r}"))
        }
        Command::Locator {
            action: LocatorAction::Migrate { config, to, json },
        } => migrate_locator(rt, &config, &to, json),
        Command::Delete {
            config,
            study,
            series,
            instance,
            reason,
            json,
        } => delete(rt, &config, (study, series, instance), &reason, json),
        Command::Update {
            config,
            study,
            patient,
            issuer,
            set,
            json,
        } => update(rt, &config, (study, patient, issuer), &set, json),
        Command::Audit {
            config,
            study,
            recent,
            json,
        } => audit(rt, &config, study.as_deref(), recent.unwrap_or(0), json),
        Command::Lifecycle {
            action:
                LifecycleAction::Run {
                    config,
                    dry_run,
                    json,
                },
        } => lifecycle_run(rt, &config, dry_run, json),
        Command::Status { config, json } => {
            let config = load(&config, None)?;
            let report = runtime.block_on(strata::admin::status(&config))?;
            emit(&report, json, |r| print!("{r}"))
        }
        Command::Wsi { action } => wsi(rt, action),
    }
}

fn wsi(rt: &Runtime, action: WsiAction) -> anyhow::Result<()> {
    let WsiAction::Import {
        config,
        patient_id,
        patient_name,
        tile,
        codec,
        quality,
        mpp,
        json,
        image,
    } = action;
    let codec = match codec.as_str() {
        "jpeg" => strata::wsi::WsiCodec::Jpeg,
        "j2k" => strata::wsi::WsiCodec::J2k,
        other => anyhow::bail!("--codec {other:?}: jpeg or j2k"),
    };

    let config = load(&config, Some("warn"))?;
    let options = strata::wsi::WsiOptions {
        patient_id,
        patient_name,
        tile,
        codec,
        quality,
        mpp,
    };
    let summary = rt.block_on(strata::admin::wsi_import(&config, &image, options))?;
    emit(&summary, json, |s| print!("{s}"))
}

type Runtime = tokio::runtime::Runtime;

fn verify(
    rt: &Runtime,
    config: &Path,
    repair: bool,
    volumes: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let config = load(config, Some("error"))?;
    let report = rt.block_on(strata::admin::verify(&config, repair, volumes))?;
    emit(&report, json, |r| print!("{r}"))?;
    if report.remaining > 0 {
        anyhow::bail!("{} damaged or missing copies remain", report.remaining);
    }
    Ok(())
}

fn migrate_locator(rt: &Runtime, config: &Path, to: &str, json: bool) -> anyhow::Result<()> {
    let config = load(config, None)?;
    let summary = rt.block_on(strata::admin::migrate_locator(&config, to, |t| {
        if !json {
            eprintln!("{}: {} rows copied and checked", t.table, t.rows);
        }
    }))?;
    emit(&summary, json, |s| print!("{s}"))
}

fn audit(
    rt: &Runtime,
    config: &Path,
    study: Option<&str>,
    recent: u32,
    json: bool,
) -> anyhow::Result<()> {
    let config = load(config, None)?;
    let rows = rt.block_on(strata::admin::audit(&config, study, recent))?;
    match study {
        Some(study) if rows.is_empty() => anyhow::bail!("no audit entries for study {study}"),
        _ => print_audit(study, &rows, json),
    }
}

fn lifecycle_run(rt: &Runtime, config: &Path, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    let pass = rt.block_on(strata::admin::lifecycle_run(&config, dry_run))?;
    print_retention(&pass, json)?;
    if pass.failed > 0 {
        anyhow::bail!("{} studies were not deleted", pass.failed);
    }
    Ok(())
}

/// Reads the config; `log` sets the log filter of a one-shot command (`None`: no logging).
fn load(path: &Path, log: Option<&str>) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    if let Some(filter) = log {
        init_logging(filter)?;
    }
    Ok(config)
}

/// Prints `value` as one line of JSON with `--json`, else as `text` prints it.
fn emit<T: serde::Serialize + ?Sized>(
    value: &T,
    json: bool,
    text: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        text(value);
    }
    Ok(())
}

fn import(rt: &Runtime, config: &Path, paths: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    let summary = rt.block_on(strata::admin::import(&config, paths))?;
    emit(&summary, json, |s| print!("{s}"))?;
    if summary.failed > 0 {
        anyhow::bail!("{} files were not imported", summary.failed);
    }
    Ok(())
}

fn tier_run(
    rt: &Runtime,
    config: &Path,
    min_age_days: Option<u32>,
    json: bool,
) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    let age = min_age_days.unwrap_or(config.tiering.min_age_days);
    let summary = rt.block_on(strata::admin::tier_run(&config, age))?;
    emit(&summary, json, |s| print!("{s}"))?;
    if summary.failed > 0 {
        anyhow::bail!("{} studies were not archived", summary.failed);
    }
    Ok(())
}

fn restore(rt: &Runtime, config: &Path, study: &str, json: bool) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    let summary = rt.block_on(strata::admin::restore(&config, study))?;
    emit(&summary, json, |s| print!("{s}"))?;
    if !summary.unrecoverable.is_empty() {
        anyhow::bail!(
            "{} instances of {study} have no intact lossless copy on disk",
            summary.unrecoverable.len()
        );
    }
    Ok(())
}

fn locate(rt: &Runtime, config: &Path, study: &str, json: bool) -> anyhow::Result<()> {
    let config = load(config, None)?;
    let located = rt.block_on(strata::admin::locate(&config, study))?;
    if located.is_empty() {
        anyhow::bail!("study {study} is not stored");
    }
    emit(&located, json, |located| {
        for l in located {
            println!(
                "{} {} {} {}+{}",
                l.sop_instance_uid, l.tier, l.location, l.offset, l.length
            );
        }
    })
}

fn transcode(
    to: &str,
    roi: &str,
    ratio: f32,
    input: &Path,
    output: &Path,
    json: bool,
) -> anyhow::Result<()> {
    // Our own info lines (the automatic ROI's size); the decoder's chatter stays out.
    init_logging("strata=info,warn")?;
    let target = match to {
        "j2k-lossless" => strata::codec::dicom::Target::Lossless,
        _ => strata::codec::dicom::Target::Roi {
            roi: strata::admin::parse_roi(roi).map_err(anyhow::Error::msg)?,
            ratio,
        },
    };
    let summary = strata::admin::transcode(input, output, &target)?;
    emit(&summary, json, |s| {
        let roi = s
            .roi_fraction
            .map(|(lo, hi)| format!(", ROI {:.1}-{:.1}% of the image", lo * 100.0, hi * 100.0))
            .unwrap_or_default();
        let kind = if s.lossless {
            "lossless"
        } else {
            "lossy, marked"
        };
        println!(
            "wrote {} ({}, {kind}), ratio {:.2}:1{roi}",
            s.output.display(),
            s.transfer_syntax_uid,
            s.ratio
        );
    })
}

fn backup(rt: &Runtime, action: BackupAction) -> anyhow::Result<()> {
    match action {
        BackupAction::Run {
            config,
            study,
            json,
        } => backup_run(rt, &config, &study, json),
        BackupAction::ExportVolume {
            config,
            out,
            max_size,
            throttle_mb_s,
            json,
        } => export_volume(rt, &config, &out, max_size, throttle_mb_s, json),
        BackupAction::ImportVolume {
            config,
            json,
            files,
        } => import_volume(rt, &config, &files, json),
        BackupAction::Volumes { config, json } => {
            let config = load(&config, Some("warn"))?;
            let volumes = rt.block_on(strata::admin::volumes(&config))?;
            emit(&volumes, json, |volumes| {
                for v in volumes {
                    println!(
                        "{}  {}  {} instances  {:.1} MB  {}",
                        v.id,
                        v.state,
                        v.instances,
                        v.size as f64 / 1e6,
                        v.directory
                    );
                }
            })
        }
    }
}

fn backup_run(rt: &Runtime, config: &Path, study: &[String], json: bool) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    rt.block_on(strata::admin::enqueue_backup(&config, study))?;
    let summary = rt.block_on(strata::admin::backup_run(&config))?;
    emit(&summary, json, |s| print!("{s}"))?;
    if summary.failed > 0 {
        anyhow::bail!("{} studies were not backed up", summary.failed);
    }
    if summary.lost_instances > 0 {
        anyhow::bail!(
            "{} instances have no lossless bytes left and were left out of their study's copy",
            summary.lost_instances
        );
    }
    Ok(())
}

fn export_volume(
    rt: &Runtime,
    config: &Path,
    out: &Path,
    max_size: u64,
    throttle_mb_s: f64,
    json: bool,
) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    let summary = rt.block_on(strata::admin::export_volume(
        &config,
        out,
        max_size,
        throttle_mb_s,
    ))?;
    emit(&summary, json, |s| {
        if s.volumes.is_empty() && s.failed == 0 {
            println!("nothing to export: every instance is on a volume");
            return;
        }
        for v in &s.volumes {
            println!(
                "{}  {} instances, {:.1} MB",
                v.path.display(),
                v.instances,
                v.size as f64 / 1e6
            );
        }
        println!(
            "exported {} instances into {} volumes ({} failed) in {:.1} s",
            s.instances,
            s.volumes.len(),
            s.failed,
            s.seconds
        );
    })?;
    if summary.failed > 0 {
        anyhow::bail!("{} instances were not exported", summary.failed);
    }
    Ok(())
}

fn import_volume(rt: &Runtime, config: &Path, files: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let config = load(config, Some("warn"))?;
    let summary = rt.block_on(strata::admin::import_volume(&config, files))?;
    emit(&summary, json, |s| {
        for failure in &s.failures {
            println!("{failure}");
        }
        println!(
            "{} members of {} volumes: {} restored, {} ingested, {} intact, {} other \
             versions, {} deleted, {} damaged, {} failed; {} studies queued for backup \
             ({:.1} s)",
            s.members,
            s.volumes,
            s.restored,
            s.ingested,
            s.intact,
            s.other_version,
            s.deleted,
            s.damaged,
            s.failed,
            s.queued_for_backup,
            s.seconds
        );
    })?;
    if summary.failed + summary.damaged > 0 {
        anyhow::bail!(
            "{} members damaged, {} failed",
            summary.damaged,
            summary.failed
        );
    }
    Ok(())
}

fn delete(
    rt: &Runtime,
    config: &Path,
    (study, series, instance): (Option<String>, Option<String>, Option<String>),
    reason: &str,
    json: bool,
) -> anyhow::Result<()> {
    use strata::locator::lifecycle::DeleteScope;
    let scope = match (study, series, instance) {
        (Some(uid), _, _) => DeleteScope::Study(uid),
        (_, Some(uid), _) => DeleteScope::Series(uid),
        (_, _, Some(uid)) => DeleteScope::Instance(uid),
        _ => anyhow::bail!("name one of --study, --series, --instance"),
    };
    let config = load(config, Some("warn"))?;
    let deleted = rt.block_on(strata::admin::delete(&config, &scope, reason))?;
    print_deleted(&deleted, json)
}

fn update(
    rt: &Runtime,
    config: &Path,
    (study, patient, issuer): (Option<String>, Option<String>, Option<String>),
    set: &[String],
    json: bool,
) -> anyhow::Result<()> {
    use strata::admin::UpdateTarget;
    let changes = strata::model::correction::Changes::parse(set)?;
    let target = match (study, patient) {
        (Some(uid), _) => UpdateTarget::Study(uid),
        (_, Some(id)) => UpdateTarget::Patient(id, issuer),
        _ => anyhow::bail!("name one of --study, --patient"),
    };
    let config = load(config, Some("warn"))?;
    let updated = rt.block_on(strata::admin::update(&config, &target, &changes))?;
    print_updated(&updated, json)
}

fn print_updated(u: &strata::locator::correction::Updated, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(u)?);
        return Ok(());
    }
    if u.changes.is_empty() {
        println!("nothing changed: every value already was so");
        return Ok(());
    }
    for c in &u.changes {
        println!("{}: {:?} -> {:?}", c.attribute, c.before, c.after);
    }
    if let Some(merged) = &u.merged {
        println!("patient {merged} merged into {}", u.patient_id);
    }
    println!(
        "{} studies of patient {} now answer with these values: {}",
        u.studies.len(),
        u.patient_id,
        u.studies.join(", ")
    );
    Ok(())
}

fn print_deleted(d: &strata::lifecycle::Deleted, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(d)?);
        return Ok(());
    }
    println!(
        "deleted {} {}: {} instances, {:.1} MB in {:.1} s",
        d.level.to_lowercase(),
        d.uid,
        d.instances,
        d.bytes as f64 / 1e6,
        d.seconds
    );
    println!(
        "  online files {}, archive containers {} ({} rewritten), near-line containers {}{}",
        d.online_files,
        d.archive_containers,
        d.archive_containers_rewritten,
        d.nearline_containers,
        if d.nearline_pending {
            " (new copy of the rest queued)"
        } else {
            ""
        }
    );
    if !d.offline_volumes.is_empty() {
        println!(
            "  offline copies marked deleted on volumes: {}",
            d.offline_volumes.join(", ")
        );
    }
    if d.study_gone {
        println!("  study {} is gone", d.study);
    }
    Ok(())
}

fn print_audit(
    study: Option<&str>,
    rows: &[strata::locator::audit::AuditSummary],
    json: bool,
) -> anyhow::Result<()> {
    use strata::model::schedule::iso8601;
    if json {
        let entries: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "event": r.event, "who": r.who, "address": r.address,
                    "instances": r.instances, "entries": r.entries,
                    "first": iso8601(r.first_ms), "last": iso8601(r.last_ms),
                    "detail": r.detail, "outcome": r.outcome, "object": r.object,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "study": study, "entries": entries })
        );
        return Ok(());
    }
    for r in rows {
        let detail = if r.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.detail)
        };
        let what = if r.instances > 0 {
            format!("{:>6} instances", r.instances)
        } else {
            format!("{:>6} times    ", r.entries)
        };
        let from = if r.address.is_empty() {
            String::new()
        } else {
            format!(" from {}", r.address)
        };
        let failed = if r.outcome == "ok" { "" } else { " FAILED" };
        let about = if r.object.is_empty() {
            String::new()
        } else {
            format!(" of {}", r.object)
        };
        println!(
            "{} .. {}  {:<9} {what}{about} by {}{from}{detail}{failed}",
            iso8601(r.first_ms),
            iso8601(r.last_ms),
            r.event,
            if r.who.is_empty() {
                "(unknown)"
            } else {
                &r.who
            },
        );
    }
    Ok(())
}

fn print_retention(
    p: &strata::lifecycle::retention::RetentionPass,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(p)?);
        return Ok(());
    }
    for e in &p.expired {
        println!(
            "{} patient {} {} {} ({} years)",
            e.study_instance_uid,
            e.patient_id,
            e.date,
            e.modalities.join("\\"),
            e.retention_years
        );
    }
    for r in &p.rejected {
        println!(
            "{} {} rejected instances ({:.1} MB) since {}",
            r.study_instance_uid,
            r.instances,
            r.bytes as f64 / 1e6,
            strata::model::schedule::iso8601(r.first_rejected_ms)
        );
    }
    for failure in &p.failures {
        println!("{failure}");
    }
    let rejected: u64 = p.rejected.iter().map(|r| r.instances).sum();
    if p.dry_run {
        println!(
            "{} studies past retention, {rejected} rejected instances due (dry run: nothing deleted)",
            p.expired.len()
        );
    } else {
        println!(
            "deleted {} of {} studies past retention and {} of {rejected} rejected instances ({} failed), {} instances, {:.1} MB in {:.1} s",
            p.deleted,
            p.expired.len(),
            p.rejected_deleted,
            p.failed,
            p.instances,
            p.bytes as f64 / 1e6,
            p.seconds
        );
    }
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password on standard input");
    println!("{}", strata::web::auth::hash_password(password)?);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    strata::server::run(config, shutdown, |at| {
        // Machine-readable: tests and scripts read the bound ports from these lines.
        println!("listening on {}", at.dicom);
        if let Some(tls) = at.tls {
            println!("tls listening on {tls}");
        }
        if let Some(web) = at.web {
            println!("web listening on {web}");
        }
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log.level {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}
