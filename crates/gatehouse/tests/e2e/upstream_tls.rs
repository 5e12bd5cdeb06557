//! HTTPS and HTTP/2 to upstreams: instances verified against the service's CA, a certificate
//! that does not verify answered 502 naming TLS (never a hang), client certificates for services
//! that require them, health checks over TLS, and HTTP/2 multiplexed on one connection.

use serde_json::Value;

use crate::harness::tls::{Issued, Listening, TestCa, TlsInstance};
use crate::harness::{assert_problem, config_head, spawn_app_with, wait_for, Gate};

/// A gateway with the service `secure` (its settings as written after the upstream list) on
/// the public route `/api/secure/{*rest}`.
async fn gate_for(upstream: &str, settings: &str) -> Gate {
    Gate::start(&format!(
        "{head}  secure: {{ upstreams: [\"{upstream}\"], timeout: 10s, connect_timeout: 5s, required: false{settings} }}\n\
         routes:\n  - {{ path: \"/api/secure/{{*rest}}\", methods: [GET, POST], service: secure, to: \"/{{rest}}\", auth: public }}\n",
        head = config_head("off"),
    ))
    .await
}

/// `, tls: { ca: … }` trusting `ca`.
fn trusting(ca: &TestCa) -> String {
    format!(", tls: {{ ca: \"{}\" }}", ca.pem_path().display())
}

/// An HTTPS instance presenting `cert`, speaking HTTP/1.1 and HTTP/2.
async fn presenting(cert: &Issued) -> TlsInstance {
    TlsInstance::start(Listening {
        cert: Some(cert),
        ..Listening::default()
    })
    .await
}

/// `https://localhost:port` of `instance`.
fn on_localhost(instance: &TlsInstance) -> String {
    format!("https://localhost:{}", instance.address.port())
}

/// The 502 problem a GET through `gate` gets when the TLS handshake with the instance fails.
async fn refused_over_tls(gate: &Gate) -> Value {
    let problem = assert_problem(gate.get("/api/secure/x").await, 502).await;
    assert_eq!(problem["reason"], "upstream_tls", "{problem}");
    problem
}

/// How many requests `/metrics` counts with `reason`.
async fn counted_with_reason(gate: &Gate, reason: &str) -> u64 {
    let label = format!("reason=\"{reason}\"");
    gate.metrics()
        .await
        .lines()
        .filter(|line| line.starts_with("gatehouse_requests_total{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn an_https_service_with_its_ca_answers_through_the_gateway_and_gets_the_identity_headers() {
    let ca = TestCa::new();
    let cert = ca.issue("instance", &["localhost"]);
    let instance = presenting(&cert).await;
    let upstream = on_localhost(&instance);
    let tls = trusting(&ca);
    let app = spawn_app_with(move |text| {
        let text = text.replacen(
            "services:\n",
            &format!("services:\n  secure: {{ upstreams: [\"{upstream}\"], timeout: 10s{tls} }}\n"),
            1,
        );
        format!(
            "{text}  - {{ path: \"/api/secure/{{*rest}}\", methods: [GET], service: secure, to: \"/{{rest}}\", auth: authenticated }}\n"
        )
    })
    .await;
    let token = app.token("test", "test").await;

    let response = app.get("/api/secure/who", Some(&token)).await;

    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/who");
    let headers = &seen["headers"];
    assert!(headers["x-user-id"].is_string(), "{seen}");
    assert_eq!(
        headers["x-gatehouse-identity"]
            .as_str()
            .unwrap()
            .split('.')
            .count(),
        3,
        "a signed identity token: {seen}"
    );
    assert_eq!(
        headers["host"],
        format!("localhost:{}", instance.address.port()),
        "the instance's own name, as its certificate says"
    );
    assert_eq!(
        seen["version"], "HTTP/1.1",
        "HTTP/1.1 unless the service says"
    );
}

#[tokio::test]
async fn an_instance_whose_certificate_names_another_host_is_a_502_naming_tls() {
    let ca = TestCa::new();
    let cert = ca.issue("elsewhere", &["elsewhere.test"]);
    let instance = presenting(&cert).await;
    let gate = gate_for(&on_localhost(&instance), &trusting(&ca)).await;

    let problem = refused_over_tls(&gate).await;

    assert!(
        problem["detail"].as_str().unwrap().contains("TLS"),
        "{problem}"
    );
    assert_eq!(counted_with_reason(&gate, "upstream_tls").await, 1);
}

#[tokio::test]
async fn an_instance_certified_by_an_unknown_ca_is_a_502_naming_tls() {
    let theirs = TestCa::new();
    let ours = TestCa::new();
    let cert = theirs.issue("instance", &["localhost"]);
    let instance = presenting(&cert).await;
    let gate = gate_for(&on_localhost(&instance), &trusting(&ours)).await;

    refused_over_tls(&gate).await;
}

#[tokio::test]
async fn the_system_roots_do_not_trust_a_private_ca() {
    // No `tls.ca`: the system's trust store, which has never heard of the test's CA.
    let ca = TestCa::new();
    let cert = ca.issue("instance", &["localhost"]);
    let instance = presenting(&cert).await;
    let gate = gate_for(&on_localhost(&instance), "").await;

    refused_over_tls(&gate).await;
}

#[tokio::test]
async fn a_service_that_requires_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new();
    let server = ca.issue("instance", &["127.0.0.1"]);
    let clients = TestCa::new();
    let gateway_cert = clients.issue("gateway", &["gateway.test"]);
    let instance = TlsInstance::start(Listening {
        cert: Some(&server),
        client_ca: Some(&clients.pem_path()),
        ..Listening::default()
    })
    .await;
    let upstream = format!("https://127.0.0.1:{}", instance.address.port());

    let with_cert = gate_for(
        &upstream,
        &format!(
            ", tls: {{ ca: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
            ca.pem_path().display(),
            gateway_cert.cert.display(),
            gateway_cert.key.display()
        ),
    )
    .await;
    let response = with_cert.get("/api/secure/mtls").await;
    assert_eq!(
        response.status(),
        200,
        "an IP address checked against the certificate's"
    );

    let without_cert = gate_for(&upstream, &trusting(&ca)).await;
    refused_over_tls(&without_cert).await;
}

#[tokio::test]
async fn health_checks_over_tls_count_an_instance_that_verifies_and_not_one_that_does_not() {
    let ca = TestCa::new();
    let good = ca.issue("good", &["localhost"]);
    let wrong_name = ca.issue("wrong", &["elsewhere.test"]);
    let verified = presenting(&good).await;
    let misnamed = presenting(&wrong_name).await;
    let gate = gate_for(
        &format!("{}\", \"{}", on_localhost(&verified), on_localhost(&misnamed)),
        &format!(
            "{}, health: {{ path: /healthz, interval: 100ms, timeout: 2s, healthy: 1, unhealthy: 1 }}",
            trusting(&ca)
        ),
    )
    .await;

    let ready = wait_for("the health checks to sort the instances", || async {
        let (_, ready) = gate.readiness().await;
        let secure = &ready["services"]["secure"];
        (secure["seen_healthy"] == true && secure["healthy"] == 1).then_some(ready)
    })
    .await;

    assert_eq!(ready["services"]["secure"]["instances"], 2, "{ready}");
    for _ in 0..4 {
        let response = gate.get("/api/secure/x").await;
        assert_eq!(
            response.status(),
            200,
            "only the verified instance gets requests"
        );
    }
}

/// Sends `n` requests at once through `gate` and returns the answers' bodies.
async fn side_by_side(gate: &Gate, n: usize) -> Vec<Value> {
    let requests = (0..n).map(|i| async move {
        let response = gate.get(&format!("/api/secure/n/{i}")).await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    });
    futures_util::future::join_all(requests).await
}

/// A gateway speaking HTTP/2 over TLS to `instance`, trusting `ca`.
async fn speaking_http2_to(instance: &TlsInstance, ca: &TestCa) -> Gate {
    gate_for(
        &on_localhost(instance),
        &format!("{}, protocol: http2", trusting(ca)),
    )
    .await
}

#[tokio::test]
async fn http2_over_tls_multiplexes_requests_on_one_connection() {
    let ca = TestCa::new();
    let cert = ca.issue("instance", &["localhost"]);
    // Each request is answered only once all five are in flight: one connection must carry
    // them side by side.
    let instance = TlsInstance::start(Listening {
        cert: Some(&cert),
        together: 5,
        ..Listening::default()
    })
    .await;
    let gate = speaking_http2_to(&instance, &ca).await;

    let answers = side_by_side(&gate, 5).await;

    for seen in &answers {
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
        assert_eq!(
            seen["authority"],
            format!("localhost:{}", instance.address.port()),
            "the instance's name as :authority: {seen}"
        );
    }
    assert_eq!(instance.connections(), 1);
}

#[tokio::test]
async fn http2_on_plain_http_is_prior_knowledge_h2c_on_one_connection() {
    let instance = TlsInstance::start(Listening {
        together: 4,
        ..Listening::default()
    })
    .await;
    let gate = gate_for(&format!("http://{}", instance.address), ", protocol: http2").await;

    let answers = side_by_side(&gate, 4).await;
    let again = side_by_side(&gate, 4).await;

    for seen in answers.iter().chain(&again) {
        assert_eq!(seen["version"], "HTTP/2.0", "{seen}");
    }
    assert_eq!(
        instance.connections(),
        1,
        "the connection is kept for the next ones"
    );
}

#[tokio::test]
async fn an_http2_service_over_tls_refused_h2_is_a_502_naming_tls() {
    // An instance that speaks HTTP/1.1 only over TLS: it does not agree to h2 in the handshake.
    let ca = TestCa::new();
    let cert = ca.issue("instance", &["localhost"]);
    let instance = TlsInstance::start(Listening {
        cert: Some(&cert),
        http1_only: true,
        ..Listening::default()
    })
    .await;
    let gate = speaking_http2_to(&instance, &ca).await;

    refused_over_tls(&gate).await;
}
