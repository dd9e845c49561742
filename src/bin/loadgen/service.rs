//! The service under load: the release binary as a child process, so its memory is its own and
//! it is stopped the way operators stop it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running service process.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
}

impl Service {
    /// Starts `bin serve` with exactly `env`, logging to `log`, and waits until `/readyz` is 200.
    pub async fn start(bin: &PathBuf, env: &HashMap<String, String>, log: &PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let address = format!("http://127.0.0.1:{port}");
        if let Some(dir) = log.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let log_file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("serve")
            .env_clear()
            .envs(env)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("PUBLIC_URL", &address)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!(
                    "start {} (build it with `cargo build --release --bins`)",
                    bin.display()
                )
            })?;
        let mut service = Self { child, address };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = client.get(service.url("/readyz")).send().await
                && response.status() == 200
            {
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait()? {
                bail!("the service exited with {status}; see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("the service was not ready within 60 s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Resident memory now and at its peak, in MiB (from /proc).
    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        Memory {
            rss_mib: field("VmRSS:"),
            peak_mib: field("VmHWM:"),
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident set size of the service.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Now.
    pub rss_mib: f64,
    /// Highest so far (VmHWM).
    pub peak_mib: f64,
}
