//! A dev HDFS for the tests (tools/hdfs-dev.sh: Apache Hadoop's NameNode and DataNode on
//! loopback, or an HA pair), stopped when dropped, with Hadoop's own tools to look at it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::common::{repo, signal, text};

/// A dev HDFS, stopped when dropped.
pub struct Hdfs {
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Hdfs {
    pub fn start() -> Hdfs {
        Hdfs::start_with("start")
    }

    /// `start` for one NameNode, `start-ha` for an HA pair (nn1 active, nn2 standby).
    pub fn start_with(mode: &str) -> Hdfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repo().join("tools/hdfs-dev.sh"))
            .arg(mode)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "HDFS did not start: {}", text(&out));
        let env = std::fs::read_to_string(dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hdfs { dir, env }
    }

    pub fn url(&self) -> &str {
        &self.env["HDFS_URL"]
    }

    pub fn files_total(&self) -> u64 {
        self.files_total_on("")
    }

    /// FilesTotal as NameNode `nn` ("1", "2" in an HA pair; "" for the only one) sees it.
    pub fn files_total_on(&self, nn: &str) -> u64 {
        let out = Command::new(repo().join("tools/hdfs-dev.sh"))
            .arg("status")
            .arg(self.dir.path())
            .arg(nn)
            .output()
            .unwrap();
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        state["FilesTotal"].as_u64().unwrap()
    }

    /// Runs a Java class from `classes` with the Hadoop classpath.
    pub fn java(&self, classes: &Path, args: &[&str]) -> std::process::Output {
        Command::new("java")
            .arg("-cp")
            .arg(format!(
                "{}:{}",
                classes.display(),
                self.env["HDFS_CLASSPATH"]
            ))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Hdfs {
    /// Hadoop's DFSHAAdmin on the pair; its standard output.
    pub fn haadmin(&self, args: &[&str]) -> String {
        let out = Command::new(repo().join("tools/hdfs-dev.sh"))
            .arg("haadmin")
            .arg(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "haadmin {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// kill -9 of NameNode `nn` of the pair.
    pub fn kill_namenode(&self, nn: u8) {
        let pid =
            std::fs::read_to_string(self.dir.path().join(format!("namenode{nn}.pid"))).unwrap();
        signal(pid.trim().parse().unwrap(), "KILL");
    }
}

impl Drop for Hdfs {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tools/hdfs-dev.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

impl Hdfs {
    /// Every file below `path` on the NameNode, relative to it, through `FsShell -ls -R`.
    pub fn files_below(&self, path: &str) -> HashSet<String> {
        let no_classes = tempfile::tempdir().unwrap();
        let root = format!("{}{path}", self.url());
        let out = self.java(
            no_classes.path(),
            &["org.apache.hadoop.fs.FsShell", "-ls", "-R", &root],
        );
        assert!(out.status.success(), "FsShell -ls: {}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|p| p.strip_prefix(&format!("{root}/")))
            .map(str::to_string)
            .collect()
    }
}
