//! A Redis of a test's own, for the tests that kill it and start it again: it listens on a unix
//! socket in a temporary directory, never on a TCP port. A port would have to be named before
//! redis-server listens (it cannot be handed a bound listener, and `--port 0` turns TCP off), so
//! a parallel test could take it between the pick and the bind, or while the Redis is down; a
//! socket path in the test's own directory is nobody else's, and a restart reuses it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::wait::wait_until;

/// A Redis without persistence, on a socket only this test knows: killing it loses everything
/// it held; starting it again serves at the same URL. Killed when dropped.
pub struct TestRedis {
    /// Holds the socket; removed with the Redis.
    dir: tempfile::TempDir,
    /// The running server, `None` between [`TestRedis::kill`] and [`TestRedis::start`].
    child: Option<Child>,
    /// Whether it saves to an RDB file in its directory on [`TestRedis::shut_down_saving`] and
    /// loads it again on [`TestRedis::start`] (never on a timer).
    persistent: bool,
}

impl TestRedis {
    /// A Redis that is not running yet: its URL can be handed out before it answers.
    pub fn stopped() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory for the Redis socket"),
            child: None,
            persistent: false,
        }
    }

    /// A Redis that answers and keeps what it holds across [`TestRedis::shut_down_saving`] and
    /// [`TestRedis::start`] (an RDB file in its own directory), as a Redis with persistence does.
    pub async fn started_persistent() -> Self {
        let mut redis = Self::stopped();
        redis.persistent = true;
        redis.start().await;
        redis
    }

    /// A Redis that answers.
    pub async fn started() -> Self {
        let mut redis = Self::stopped();
        redis.start().await;
        redis
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock`, as the gateway's `state:` and redis-rs take it.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Starts the server (again, on the same socket) and returns once it answers a connection.
    /// `DEBUG` is enabled for the tests that stall it (`DEBUG SLEEP`).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the test's Redis is already running");
        let socket = self.socket();
        // A killed server may leave its socket file behind; a stale one would answer nothing.
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--dbfilename", "redis.rdb"])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        wait_until("the test's redis-server to accept connections", || {
            answers(&socket)
        })
        .await;
    }

    /// Stops the server as an operator would: saving what it holds first when it is
    /// [persistent](TestRedis::started_persistent), so the next [`TestRedis::start`] loads it.
    pub fn shut_down_saving(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let how = if self.persistent { "save" } else { "nosave" };
        let _ = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(["shutdown", how])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        child.wait().expect("the test's redis-server is reaped");
    }

    /// Kills the server at once (no shutdown, no save); a request in flight sees the connection
    /// drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("the test's redis-server can be killed");
            child.wait().expect("the test's redis-server is reaped");
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // Never panics: a drop during a failing test's unwind would abort the whole binary.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn answers(socket: &Path) -> bool {
    tokio::net::UnixStream::connect(socket).await.is_ok()
}
