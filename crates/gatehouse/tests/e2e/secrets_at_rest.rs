//! Secrets at rest (issue 9, item 6): `gatehouse up` keeps its data folder and every SQLite
//! file (the gateway's store with the private signing keys, users' password hashes) to its
//! owner whatever the umask, and refuses to start on a store or folder other users can open.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `gatehouse up`, stopped with SIGTERM when dropped, so a failed assertion leaves
/// no process behind.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

/// `gatehouse up` on free ports in `dir`, under the most permissive umask there is; its
/// standard error is kept only when the test reads it.
fn up_with_open_umask(dir: &Path, stderr: Stdio) -> Up {
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" up --gateway-port 0 --users-port 0 --orders-port 0 --clock-port 0 --admin-port 0"#)
        .arg(env!("CARGO_BIN_EXE_gatehouse"))
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Up(child)
}

/// Reads the banner `up` prints once it serves, and returns the gateway's URL.
fn gateway_url(up: &mut Up) -> String {
    let stdout = up.0.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut gateway = None;
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("gatehouse up prints its addresses");
        if let Some(url) = line.trim().strip_prefix("gateway") {
            gateway = Some(url.trim().to_owned());
        }
        if line.starts_with("Sign in:") {
            return gateway.expect("the gateway's URL is printed");
        }
    }
}

/// The exit status and standard error of a start that must fail; never waits past 60 s.
fn refused_start(dir: &Path) -> (std::process::ExitStatus, String) {
    let up = std::cell::RefCell::new(up_with_open_umask(dir, Stdio::piped()));
    let status = kit::testing::wait::wait_for_blocking(
        "gatehouse up to refuse a store others can read",
        || up.borrow_mut().0.try_wait().unwrap(),
    );
    let mut up = up.into_inner();
    let mut stderr = String::new();
    up.0.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn the_data_folder_and_every_database_file_are_the_owners_alone_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = up_with_open_umask(dir.path(), Stdio::null());
    let gateway = gateway_url(&mut up);
    // A sign-in writes to the gateway's store and reads users' database, so both have their
    // write-ahead logs.
    let login = reqwest::Client::new()
        .post(format!("{gateway}/api/login"))
        .json(&serde_json::json!({ "username": "admin", "password": "a" }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "data/");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for expected in [
        "gateway.db",
        "gateway.db-wal",
        "gateway.db-shm",
        "users.db",
        "users.db-wal",
        "orders.db",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }
    drop(up);
}

#[tokio::test]
async fn a_store_or_data_folder_other_users_can_read_is_refused_at_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = up_with_open_umask(dir.path(), Stdio::null());
    gateway_url(&mut up);
    drop(up);
    let data = dir.path().join("data");
    let store = data.join("gateway.db");

    for (shared, loose, fix) in [
        (&store, 0o644, "chmod 600 data/gateway.db"),
        (&data, 0o755, "chmod 700 data"),
    ] {
        set_mode(shared, loose);
        let (status, stderr) = refused_start(dir.path());
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains(fix), "the error names the fix: {stderr}");
        assert!(
            stderr.contains("open to other local users"),
            "the error says why: {stderr}"
        );
        set_mode(shared, if loose == 0o644 { 0o600 } else { 0o700 });
    }

    // Fixed as told, it starts again.
    let mut up = up_with_open_umask(dir.path(), Stdio::null());
    gateway_url(&mut up);
    drop(up);
}
