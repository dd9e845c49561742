//! A PostgreSQL cluster of the test's own (initdb into a temporary directory, a free port), so
//! that it can be restarted under load without disturbing other tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::service::free_port;

/// A running cluster; stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    owner: Option<String>,
}

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL's server binaries are installed.
fn bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|dirs| {
        let mut versions: Vec<PathBuf> = dirs.flatten().map(|d| d.path().join("bin")).collect();
        versions.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
        });
        versions.pop()
    });
    [from_pg_config, installed]
        .into_iter()
        .flatten()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

impl Cluster {
    /// Initialises and starts a cluster, or `None` (with the reason printed) when PostgreSQL's
    /// server binaries are missing.
    pub fn start() -> Option<Self> {
        let Some(bindir) = bindir() else {
            println!("skipped: PostgreSQL server binaries (initdb, pg_ctl) are not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("pw-faults-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // initdb refuses to run as root: the cluster then belongs to the postgres user.
        let owner = is_root().then(|| {
            let user = if user_exists("postgres") {
                "postgres"
            } else {
                "nobody"
            };
            let chown = Command::new("chown").arg(user).arg(&dir).status().unwrap();
            assert!(chown.success(), "chown of the cluster directory");
            user.to_string()
        });
        let mut cluster = Self {
            dir,
            bindir,
            port: free_port(),
            owner,
        };
        let data = cluster.dir.join("data");
        cluster.run_blocking(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        let log = cluster.dir.join("postgres.log");
        // The port was free when it was picked, but another process may bind it before the
        // server does (a CI run once failed to start here): a failed start is tried again on
        // another port, and the server's log is shown.
        for attempt in 1.. {
            match cluster.try_start(&data, &log) {
                Ok(()) => break,
                Err(failure) if attempt < 3 => {
                    println!("starting the cluster failed, trying another port: {failure}");
                    cluster.port = free_port();
                }
                Err(failure) => panic!("pg_ctl start failed: {failure}"),
            }
        }
        Some(cluster)
    }

    /// `pg_ctl start` on the cluster's port, waiting until it accepts connections; on failure,
    /// what pg_ctl printed and the server's log.
    fn try_start(&self, data: &std::path::Path, log: &std::path::Path) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(log)
            .args(["-w", "-o", &options, "start"])
            .output()
            .unwrap();
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        ))
    }

    /// `postgres://…` URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: connections are cut, the server stops and starts again.
    /// Returns how long it took.
    pub async fn restart(&self) -> Duration {
        let started = Instant::now();
        let data = self.dir.join("data");
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "restart"])
            .stdout(std::process::Stdio::null());
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "pg_ctl restart");
        started.elapsed()
    }

    fn command(&self, program: &str) -> Command {
        let binary = self.bindir.join(program);
        match &self.owner {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(binary);
                command
            }
            None => Command::new(binary),
        }
    }

    fn run_blocking(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let output = self.command(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}
