//! Configuration mistakes are refused with an error that names them, at start and by
//! `gatehouse check-config`.

use std::process::Command;

const VALID: &str = r#"
listen: 127.0.0.1:8001
store: sqlite://data/gateway.db
services:
  users: { upstreams: ["http://127.0.0.1:8101"], timeout: 5s }
routes:
  - { path: /api/users, methods: [GET], service: users, to: /users, auth: { roles: [admin] } }
"#;

pub(crate) fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_mistake_is_named_by_its_line_and_column_as_well_as_its_field() {
    let (ok, output) = check_config(&VALID.replace("service: users", "service: nobody"));
    assert!(!ok);
    assert!(
        output.contains("gateway.yaml:7:50: routes[0].service: unknown service `nobody`"),
        "{output}"
    );
    let (_, output) = check_config(&VALID.replace("timeout: 5s", "timeout: soon"));
    assert!(
        output.contains("gateway.yaml:5:59: services.users.timeout"),
        "{output}"
    );
}

#[test]
fn every_mistake_in_the_file_is_named_in_one_run() {
    let route = "  - { path: /api/users, methods: [GET], service: users, to: /users, auth: { roles: [admin] } }";
    let text = format!("{VALID}{route}\n")
        .replacen("service: users", "service: nobody", 1)
        .replace("timeout: 5s", "timeout: soon");
    let (ok, output) = check_config(&text);
    assert!(!ok);
    for expected in [
        "gateway.yaml:5:59: services.users.timeout",
        "gateway.yaml:7:50: routes[0].service: unknown service `nobody`",
        "gateway.yaml:8:13: routes[1]: GET /api/users is already routed by routes[0]",
    ] {
        assert!(
            output.contains(expected),
            "{expected:?} missing from: {output}"
        );
    }
}

#[test]
fn a_valid_file_and_the_bundled_file_pass() {
    let (ok, output) = check_config(VALID);
    assert!(ok, "{output}");
    let bundled = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("check-config")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/gateway.yaml"
        ))
        .output()
        .unwrap();
    assert!(
        bundled.status.success(),
        "{}",
        String::from_utf8_lossy(&bundled.stderr)
    );
}

#[test]
fn each_kind_of_mistake_is_refused_with_an_error_naming_it() {
    let route = "  - { path: /api/users, methods: [GET], service: users, to: /users, auth: { roles: [admin] } }";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an unknown service",
            VALID.replace("service: users", "service: nobody"),
            "unknown service `nobody`",
        ),
        (
            "a bad duration",
            VALID.replace("timeout: 5s", "timeout: soon"),
            "services.users.timeout",
        ),
        (
            "a duplicate route",
            format!("{VALID}{route}\n"),
            "GET /api/users is already routed by routes[0]",
        ),
        (
            "a missing field",
            VALID.replace("service: users, ", ""),
            "routes[0].service: missing: name the service",
        ),
        (
            "a misspelt field",
            VALID.replace("methods:", "method:"),
            "unknown field `method`",
        ),
        (
            "a missing auth",
            VALID.replace(", auth: { roles: [admin] }", ""),
            "routes[0].auth",
        ),
        (
            "an unknown auth",
            VALID.replace("auth: { roles: [admin] }", "auth: everyone"),
            "routes[0].auth",
        ),
        (
            "a bad method",
            VALID.replace("[GET]", "[FETCH]"),
            "routes[0].methods",
        ),
        (
            "a bad upstream",
            VALID.replace("http://127.0.0.1:8101", "ftp://x"),
            "services.users.upstreams[0]",
        ),
        (
            "no upstream",
            VALID.replace("[\"http://127.0.0.1:8101\"]", "[]"),
            "services.users.upstreams",
        ),
        (
            "a bad listen address",
            VALID.replace("127.0.0.1:8001", "everywhere"),
            "listen",
        ),
        (
            "an unsupported store",
            VALID.replace("sqlite://data/gateway.db", "mysql://x"),
            "store",
        ),
        (
            "an unset variable",
            VALID.replace("5s", "\"${GATEHOUSE_TEST_SURELY_UNSET}\""),
            "GATEHOUSE_TEST_SURELY_UNSET",
        ),
        (
            "an unquoted variable inside braces",
            VALID.replace("5s", "${GATEHOUSE_TEST_SURELY_UNSET}"),
            "in quotes",
        ),
        (
            "an undefined parameter",
            VALID.replace("to: /users", "to: \"/users/{id}\""),
            "routes[0].to",
        ),
        (
            "a path without slash",
            VALID.replace("path: /api/users", "path: api/users"),
            "routes[0].path",
        ),
        (
            "a reserved path",
            VALID.replace("path: /api/users", "path: /healthz"),
            "answered by the gateway",
        ),
        (
            "a YAML syntax error",
            VALID.replace("routes:", "routes: [").to_string(),
            "gateway.yaml:",
        ),
        (
            "a zero timeout",
            VALID.replace("timeout: 5s", "timeout: 0s"),
            "longer than zero",
        ),
        (
            "a bad body limit",
            format!("{VALID}limits: {{ max_body: lots }}\n"),
            "limits.max_body",
        ),
        (
            "a bad algorithm",
            format!("{VALID}tokens: {{ algorithm: none }}\n"),
            "tokens.algorithm",
        ),
        ("an empty file", String::new(), "gateway.yaml"),
        (
            "a login path with a parameter",
            format!("{VALID}auth: {{ login: \"/api/{{x}}\" }}\n"),
            "auth.login",
        ),
        (
            "a route on the logout path",
            VALID.replace("path: /api/users", "path: /api/logout"),
            "answered by the gateway",
        ),
    ];
    for (mistake, text, expected) in cases {
        let (ok, output) = check_config(&text);
        assert!(!ok, "{mistake} must be refused");
        assert!(
            output.contains(expected),
            "{mistake}: the error should mention {expected:?}, got: {output}"
        );
        assert!(
            output.contains("gateway.yaml"),
            "{mistake}: the error names the file: {output}"
        );
    }
}

#[test]
fn a_bad_number_of_serving_threads_stops_the_start_before_anything_listens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    std::fs::write(&file, VALID.replace("8001", "0")).unwrap();
    for value in ["0", "many", "100000"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .env("GATEHOUSE_WORKERS", value)
            .current_dir(dir.path())
            .arg("gateway")
            .arg("--config")
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A gateway that started anyway would serve until killed: wait for an exit, not forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("GATEHOUSE_WORKERS={value:?}: the gateway started");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{value:?}: {text}");
        assert!(
            text.contains("GATEHOUSE_WORKERS") && text.contains("from 1 to 1024"),
            "{value:?}: the reason is named: {text}"
        );
        assert!(!text.contains("listening"), "{value:?}: {text}");
    }
}
