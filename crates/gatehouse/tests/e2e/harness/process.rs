//! The `gatehouse` binary as a child process, its listeners on port 0: the addresses it bound
//! are read from its own log (JSON lines on stderr), so no test picks a port that another could
//! take between the pick and the bind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::wait_for;

/// The log messages under which the binary states a listener's address: the gateway's own
/// (`gateway::server`) and a kit service's (`kit::service`).
const LISTENING: [&str; 4] = [
    "gateway listening",
    "gateway admin listening",
    "listening",
    "admin listening",
];

/// A running `gatehouse` process; killed when dropped.
pub struct Process {
    child: Mutex<Child>,
    /// Every line the process has logged so far, and the addresses it said it listens on.
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    text: String,
    listening: BTreeMap<String, SocketAddr>,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Process {
    /// Starts `gatehouse ARGS` with `env`, logging JSON at `info` for the lines that name its
    /// listeners (`warn` for everything else, unless `env` says otherwise).
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
        command
            .args(args)
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,gateway::server=info,kit::service=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the gatehouse binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Log::default()));
        let reading = Arc::clone(&log);
        // A thread of its own: the pipe is read to its end, so the process never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = reading.lock().unwrap();
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    let message = entry["message"].as_str().unwrap_or_default();
                    let address = entry["address"].as_str().and_then(|a| a.parse().ok());
                    if let (true, Some(address)) = (LISTENING.contains(&message), address) {
                        log.listening.insert(message.to_owned(), address);
                    }
                }
                log.text.push_str(&line);
                log.text.push('\n');
            }
        });
        Self {
            child: Mutex::new(child),
            log,
        }
    }

    /// The address the process logged under `message` (one of [`LISTENING`]), once it has.
    pub async fn listening(&self, message: &str) -> SocketAddr {
        assert!(LISTENING.contains(&message), "not a listening message");
        wait_for(&format!("the process to log {message:?}"), || async {
            if let Ok(Some(exit)) = self.child.lock().unwrap().try_wait() {
                panic!(
                    "the process exited ({exit}) before listening:\n{}",
                    self.log()
                );
            }
            self.log.lock().unwrap().listening.get(message).copied()
        })
        .await
    }

    pub fn id(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Sends `signal` (`TERM`, `HUP`, …), as an operator or an orchestrator would.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for the process to exit on its own.
    pub async fn exit(&self) -> ExitStatus {
        wait_for("the process to exit", || async {
            self.child
                .lock()
                .unwrap()
                .try_wait()
                .expect("the process can be waited on")
        })
        .await
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().text.clone()
    }
}

/// `gatehouse clock` on its own, its listeners on port 0: a service as a process, which a test
/// can signal (freeze it with `STOP`, as an overloaded machine freezes) or read the files of.
pub struct StandaloneClock {
    pub process: Process,
    /// `http://` and its public address.
    pub url: String,
    /// `http://` and its admin address (`/metrics`).
    pub admin: String,
}

impl StandaloneClock {
    /// Writes its access log to `access_log` (a path, or `off`); trusts a JWKS at the dead
    /// address, so it verifies no identity: for what needs none (`/healthz`, `/metrics`).
    pub async fn start(access_log: &str) -> Self {
        let jwks = format!("http://{}/.well-known/jwks.json", super::dead_address());
        let process = Process::start(
            &[
                "clock",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--access-log",
                access_log,
                "--jwks-url",
                &jwks,
            ],
            &[],
        );
        let url = format!("http://{}", process.listening("listening").await);
        let admin = format!("http://{}", process.listening("admin listening").await);
        Self {
            process,
            url,
            admin,
        }
    }
}
