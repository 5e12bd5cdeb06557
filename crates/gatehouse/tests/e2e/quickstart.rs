//! The README's quickstart, run with the real binary as a user would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

struct Up {
    child: Child,
    gateway: String,
    banner: String,
}

/// Starts `gatehouse up` on free ports in `dir` and reads the addresses it prints.
fn start_up(dir: &std::path::Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["up", "--gateway-port", "0", "--users-port", "0"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = String::new();
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(60))
            .expect("gatehouse up prints its addresses");
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Sign in:") {
            break;
        }
    }
    let gateway = banner
        .lines()
        .find_map(|line| line.trim().strip_prefix("gateway"))
        .map(|rest| rest.trim().to_owned())
        .expect("the gateway's URL is printed");
    Up {
        child,
        gateway,
        banner,
    }
}

fn stop(mut up: Up) -> std::process::ExitStatus {
    let pid = up.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    up.child.wait().unwrap()
}

#[tokio::test]
async fn the_quickstart_works_verbatim_and_demo_accounts_are_seeded_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let up = start_up(dir.path());
    assert!(
        up.banner.contains("demo credentials"),
        "a new database gets demo accounts, with a warning:\n{}",
        up.banner
    );
    assert!(
        up.gateway.starts_with("http://127.0.0.1:"),
        "loopback by default: {}",
        up.gateway
    );

    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/login", up.gateway))
        .header("Content-Type", "application/json")
        .body(r#"{"username":"admin","password":"a"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 900);
    let token = login["access_token"].as_str().unwrap();
    let users = http
        .get(format!("{}/api/users", up.gateway))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200);
    let text = users.text().await.unwrap();
    assert!(
        text.contains("\"admin\"") && text.contains("\"test\""),
        "{text}"
    );
    assert!(!text.contains("hashed_password") && !text.contains("$argon2"));

    assert!(stop(up).success(), "SIGTERM shuts down cleanly");
    assert!(
        dir.path().join("data/users.db").exists(),
        "SQLite files live under ./data"
    );

    let again = start_up(dir.path());
    assert!(
        !again.banner.contains("demo credentials"),
        "an existing database is not seeded again:\n{}",
        again.banner
    );
    let login = http
        .post(format!("{}/api/login", again.gateway))
        .json(&serde_json::json!({ "username": "test", "password": "test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.status(),
        200,
        "the data and the signing key survive a restart"
    );
    stop(again);
}
