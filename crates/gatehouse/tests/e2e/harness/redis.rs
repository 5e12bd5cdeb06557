//! A Redis of a test's own, for the tests that stop it: started on a port, killed at will.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_ENV: &str = "GATEHOUSE_TEST_REDIS";

/// A Redis of the test's own, without persistence unless asked: killing it loses everything it
/// held.
pub struct TestRedis {
    child: Child,
    pub port: u16,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRedis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn start(port: u16) -> Self {
        Self::start_with(port, &["--save", "", "--appendonly", "no"]).await
    }

    /// A Redis started with `persistence` (no persistence, or an RDB file of the test's).
    pub async fn start_with(port: u16, persistence: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(persistence)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port }
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops it as an operator would, saving what it holds first (to its RDB file, if any).
    pub fn shut_down_saving(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "save"])
            .stdout(Stdio::null())
            .status();
        self.child.wait().unwrap();
    }
}

pub fn redis_tests_enabled() -> bool {
    let enabled = std::env::var(REDIS_ENV).is_ok_and(|url| !url.is_empty());
    if !enabled {
        eprintln!("{REDIS_ENV} is not set: the Redis fault tests check nothing");
    }
    enabled
}

/// Polls `check` for up to `deadline`; whether it came to hold.
pub async fn eventually<Fut: std::future::Future<Output = bool>>(
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
