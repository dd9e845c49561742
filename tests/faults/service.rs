//! The real binary as a child process: started with an environment, watched through its logs,
//! and stopped the way operators and crashes stop it (SIGTERM, `kill -9`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The service binary cargo built for these tests.
const BIN: &str = env!("CARGO_BIN_EXE_pipedrive-whatsapp");

/// A running (or stopped) service process.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The port it listens on.
    pub port: u16,
    logs: Arc<Mutex<Vec<String>>>,
}

/// A free loopback port (bound and released; the service binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Service {
    /// Starts `serve` with exactly `env` (plus `LISTEN_ADDR`/`PUBLIC_URL` for `port`) and waits
    /// until `/readyz` answers 200.
    pub async fn start(env: &HashMap<String, String>, port: u16) -> Self {
        let mut service = Self::spawn(env, port);
        service.wait_ready(Duration::from_secs(60)).await;
        service
    }

    /// Starts `serve` without waiting for it.
    pub fn spawn(env: &HashMap<String, String>, port: u16) -> Self {
        let address = format!("http://127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(env)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("PUBLIC_URL", &address)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the service binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            address,
            port,
            logs,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, bound: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + bound;
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline && self.is_running(),
                "service not ready within {bound:?}; logs:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL is delivered");
        self.child.wait().expect("the killed process is reaped");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
    }

    /// Waits for the process to exit; its status and how long it took, or `None` after `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<(ExitStatus, Duration)> {
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some((status, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Every line the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The last `n` lines, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let logs = self.logs();
        logs[logs.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
