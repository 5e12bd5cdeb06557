//! Sign-in throttling with device tokens (OWASP's device cookies): strangers' guesses are
//! limited per username and per IP, yet never lock out the owner's device, which has a small
//! budget of its own. Clients come from distinct loopback addresses, as distinct machines do.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use gateway::clock::{Clock, ManualClock};

use crate::harness::{
    assert_problem, spawn_app, spawn_app_at, spawn_app_with, wait_until, TestApp,
};

/// A client whose connections come from `address` (any of 127.0.0.0/8 is this machine).
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
    device_token: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({ "username": username, "password": password });
    if let Some(token) = device_token {
        body["device_token"] = json!(token);
    }
    client
        .post(app.url("/api/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Signs `username` in from `client` and returns the device token it is given.
async fn known_device(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> String {
    let response = login(app, client, username, password, None).await;
    assert_eq!(response.status(), 200, "signing {username} in");
    let body: Value = response.json().await.unwrap();
    body["device_token"]
        .as_str()
        .expect("a sign-in answers a device token")
        .to_owned()
}

/// Ten wrong passwords for `username` from 127.0.0.2, then the eleventh is throttled.
async fn a_stranger_spends_the_unknown_device_budget(app: &TestApp, username: &str) {
    let stranger = client_from("127.0.0.2");
    for attempt in 1..=10 {
        let response = login(app, &stranger, username, "guess", None).await;
        assert_eq!(response.status(), 401, "guess {attempt}");
    }
    assert_problem(login(app, &stranger, username, "guess", None).await, 429).await;
}

#[tokio::test]
async fn a_strangers_guesses_never_lock_the_owner_out_of_a_known_device() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.3");
    let device = known_device(&app, &owner, "admin", "a").await;

    a_stranger_spends_the_unknown_device_budget(&app, "admin").await;

    let response = login(&app, &owner, "admin", "a", Some(&device)).await;
    assert_eq!(response.status(), 200, "the owner's known device signs in");
    let body: Value = response.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert_problem(login(&app, &owner, "admin", "a", None).await, 429).await;
}

#[tokio::test]
async fn a_distributed_guess_spends_the_username_budget_but_not_the_owners_device() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.3");
    let device = known_device(&app, &owner, "admin", "a").await;

    let mut checked = 0;
    let mut first_throttled_address = None;
    for host in 1..=60 {
        let address = format!("127.0.1.{host}");
        let guesser = client_from(&address);
        for guess in 1..=5 {
            let response = login(&app, &guesser, "admin", &format!("guess {guess}"), None).await;
            match response.status().as_u16() {
                401 => checked += 1,
                429 => {
                    first_throttled_address.get_or_insert(host);
                }
                other => panic!("{address} guess {guess}: {other}"),
            }
        }
    }

    assert_eq!(
        checked, 10,
        "unknown devices share one budget per username, whatever their address"
    );
    assert_eq!(
        first_throttled_address,
        Some(3),
        "the third address is already refused"
    );
    for host in [4, 30, 60] {
        let late = client_from(&format!("127.0.1.{host}"));
        assert_problem(login(&app, &late, "admin", "a", None).await, 429).await;
    }
    let response = login(&app, &owner, "admin", "a", Some(&device)).await;
    assert_eq!(
        response.status(),
        200,
        "the owner's known device still signs in"
    );
}

#[tokio::test]
async fn a_known_device_has_a_small_budget_of_its_own_that_a_success_restores() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.3");
    let device = known_device(&app, &owner, "admin", "a").await;
    a_stranger_spends_the_unknown_device_budget(&app, "admin").await;

    // Typos from the known device: its own budget of five.
    for typo in 1..=4 {
        let response = login(&app, &owner, "admin", "typo", Some(&device)).await;
        assert_eq!(response.status(), 401, "typo {typo}");
    }
    assert_eq!(
        login(&app, &owner, "admin", "a", Some(&device))
            .await
            .status(),
        200,
        "the right password after four typos"
    );
    for typo in 1..=5 {
        let response = login(&app, &owner, "admin", "typo", Some(&device)).await;
        assert_eq!(
            response.status(),
            401,
            "the count started again: typo {typo}"
        );
    }
    // Past its budget the device is as unknown as any other, and the username is throttled.
    assert_problem(login(&app, &owner, "admin", "a", Some(&device)).await, 429).await;
}

#[tokio::test]
async fn browsers_get_the_device_token_as_a_strict_http_only_cookie_for_the_login_path() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.3");
    let response = login(&app, &owner, "admin", "a", None).await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let token = body["device_token"].as_str().unwrap();

    assert!(
        cookie.starts_with(&format!("gatehouse_device={token};")),
        "{cookie}"
    );
    for attribute in [
        "Path=/api/login",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=7776000",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }

    a_stranger_spends_the_unknown_device_budget(&app, "admin").await;
    let response = owner
        .post(app.url("/api/login"))
        .header("cookie", format!("theme=dark; gatehouse_device={token}"))
        .json(&json!({ "username": "admin", "password": "a" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the cookie is a device token too");
}

#[tokio::test]
async fn hostile_device_tokens_count_as_unknown_devices_never_as_errors() {
    let time = ManualClock::starting_now();
    let app = spawn_app_at(Clock::from(&time), |config| {
        config.replace(
            "throttle: { per_username: 10,",
            "throttle: { device_ttl: 2s, per_username: 10,",
        )
    })
    .await;
    let owner = client_from("127.0.0.3");
    let device = known_device(&app, &owner, "admin", "a").await;
    let someone_elses = known_device(&app, &owner, "test", "test").await;
    a_stranger_spends_the_unknown_device_budget(&app, "admin").await;

    let (signed, tag) = device.rsplit_once('.').unwrap();
    let mut forged_tag = tag.to_owned().into_bytes();
    forged_tag[3] = if forged_tag[3] == b'A' { b'B' } else { b'A' };
    let forged = format!("{signed}.{}", String::from_utf8(forged_tag).unwrap());
    let hostile = [
        ("a forged signature", forged),
        ("another user's token", someone_elses),
        ("garbage", "not a token".to_owned()),
        ("the right shape, nothing in it", "gd1..".to_owned()),
        ("a huge token, within the body limit", "A".repeat(15_000)),
    ];
    for (what, token) in &hostile {
        let response = login(&app, &owner, "admin", "a", Some(token)).await;
        assert_eq!(response.status(), 429, "{what}");
        assert_problem(response, 429).await;
    }
    // Past the sign-in body limit (16 KiB) the body is refused before anything is counted.
    let oversized = login(&app, &owner, "admin", "a", Some(&"A".repeat(100_000))).await;
    assert_problem(oversized, 413).await;
    let huge_cookie = owner
        .post(app.url("/api/login"))
        .header("cookie", format!("gatehouse_device={}", "A".repeat(8_000)))
        .json(&json!({ "username": "admin", "password": "a" }))
        .send()
        .await
        .unwrap();
    assert_problem(huge_cookie, 429).await;
    let wrong_type = owner
        .post(app.url("/api/login"))
        .json(&json!({ "username": "admin", "password": "a", "device_token": 42 }))
        .send()
        .await
        .unwrap();
    assert_problem(wrong_type, 422).await;

    // Lifetimes are whole seconds: a 2 s token is still known a second after its issue,
    // whatever the fraction of the second it was issued in, and unknown a second later (the
    // gateway's clock is moved; nothing waits).
    time.advance(Duration::from_secs(1));
    let still_known = login(&app, &owner, "admin", "a", Some(&device)).await;
    assert_eq!(still_known.status(), 200, "known 1 s after its issue");
    time.advance(Duration::from_secs(1));
    assert_problem(login(&app, &owner, "admin", "a", Some(&device)).await, 429).await;
}

#[tokio::test]
async fn a_flood_of_correct_sign_ins_leaves_the_owners_device_able_to_sign_in() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.3");
    let device = known_device(&app, &owner, "admin", "a").await;

    let flooding = Duration::from_secs(12);
    let until = Instant::now() + flooding;
    let refused = Arc::new(AtomicUsize::new(0));
    let signed_in = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..48)
        .map(|_| {
            let client = client_from("127.0.0.2");
            let url = app.url("/api/login");
            let refused = Arc::clone(&refused);
            let signed_in = Arc::clone(&signed_in);
            tokio::spawn(async move {
                while Instant::now() < until {
                    let response = client
                        .post(&url)
                        .json(&json!({ "username": "admin", "password": "a" }))
                        .send()
                        .await;
                    match response.map(|r| r.status().as_u16()) {
                        Ok(200) => signed_in.fetch_add(1, Ordering::Relaxed),
                        // 503 (every check slot taken) or 429 (more in flight than the
                        // username's budget): the flood is pushed back.
                        Ok(503 | 429) => refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("the flood got {other:?}"),
                    };
                }
            })
        })
        .collect();

    wait_until("the flood to be pushed back", || async {
        refused.load(Ordering::Relaxed) > 0
    })
    .await;
    let during = login(&app, &owner, "admin", "a", Some(&device)).await;
    assert_eq!(
        during.status(),
        200,
        "the known device gets a turn while the flood goes on"
    );
    for task in flood {
        task.await.unwrap();
    }
    let (refused, signed_in) = (
        refused.load(Ordering::Relaxed),
        signed_in.load(Ordering::Relaxed),
    );
    eprintln!("flood: {signed_in} signed in, {refused} refused");
    assert!(
        refused > 0 && signed_in > 0,
        "the flood was heavy enough to be pushed back: {signed_in} signed in, {refused} refused"
    );

    let after = login(&app, &owner, "admin", "a", Some(&device)).await;
    assert_eq!(after.status(), 200, "and signs in afterwards");
}

#[tokio::test]
async fn the_oauth_password_grant_gives_and_takes_a_device_token_too() {
    let app = spawn_app().await;
    let owner = client_from("127.0.0.3");
    let grant = |device: Option<String>| {
        let mut form = vec![
            ("grant_type", "password".to_owned()),
            ("username", "admin".to_owned()),
            ("password", "a".to_owned()),
        ];
        if let Some(device) = device {
            form.push(("device_token", device));
        }
        owner.post(app.url("/api/oauth/token")).form(&form).send()
    };
    let first = grant(None).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first.headers().get("set-cookie").is_none(),
        "an OAuth client is no browser"
    );
    let body: Value = first.json().await.unwrap();
    let device = body["device_token"].as_str().unwrap().to_owned();

    a_stranger_spends_the_unknown_device_budget(&app, "admin").await;

    assert_eq!(grant(Some(device)).await.unwrap().status(), 200);
    assert_eq!(grant(None).await.unwrap().status(), 429);
}

#[tokio::test]
async fn a_known_device_gets_a_check_slot_while_a_flood_holds_every_other() {
    // One check at a time for unknown devices: a flood of sign-ins (right passwords, so no
    // budget is spent) keeps that slot taken, and everyone else without a device token gets
    // 503. The owner's device has a pool of its own.
    let app = spawn_app_with(|config| {
        config.replace(
            "throttle: { per_username: 10,",
            "throttle: { concurrent: 1, per_username: 10,",
        )
    })
    .await;
    let owner = client_from("127.0.0.3");
    let device = known_device(&app, &owner, "admin", "a").await;

    let until = Instant::now() + Duration::from_secs(4);
    let busy = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..48)
        .map(|_| {
            let client = client_from("127.0.0.2");
            let url = app.url("/api/login");
            let busy = Arc::clone(&busy);
            tokio::spawn(async move {
                while Instant::now() < until {
                    let response = client
                        .post(&url)
                        .json(&json!({ "username": "test", "password": "test" }))
                        .send()
                        .await;
                    if response.is_ok_and(|r| r.status() == 503) {
                        busy.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    wait_until("the flood to hold the slot", || async {
        busy.load(Ordering::Relaxed) > 0
    })
    .await;
    for attempt in 1..=3 {
        let response = login(&app, &owner, "admin", "a", Some(&device)).await;
        assert_eq!(response.status(), 200, "known device, attempt {attempt}");
    }
    for task in flood {
        task.await.unwrap();
    }
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "the flood held the only slot for unknown devices"
    );
}
