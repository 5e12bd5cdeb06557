//! The token lifecycle: refresh rotation with reuse detection, logout, per-user cut-offs, login
//! throttling and key rotation, through the running system.

use std::time::Duration;

use gateway::auth::keys::KEY_RELOAD_INTERVAL;
use gateway::clock::{Clock, ManualClock};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{assert_problem, spawn_app, spawn_app_at, wait_for, wait_until, TestApp};

async fn sign_in(app: &TestApp, username: &str, password: &str) -> Value {
    let response = app.login(username, password).await;
    assert_eq!(response.status(), 200, "sign-in of {username}");
    response.json().await.unwrap()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/token/refresh"))
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

/// `POST /api/logout` with `access` as bearer and `refresh` in the body.
async fn logout_with(app: &TestApp, access: &str, refresh: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/logout"))
        .bearer_auth(access)
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap()
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[tokio::test]
async fn a_refresh_spends_the_token_and_gives_a_new_pair() {
    let app = spawn_app().await;
    let first = sign_in(&app, "test", "test").await;
    assert_eq!(first["token_type"], "bearer");

    let response = refresh(&app, field(&first, "refresh_token")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let second: Value = response.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(
        app.get("/api/users/me", Some(field(&second, "access_token")))
            .await
            .status(),
        200
    );
    let third = refresh(&app, field(&second, "refresh_token")).await;
    assert_eq!(third.status(), 200, "the new refresh token works in turn");
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    let first = sign_in(&app, "test", "test").await;
    let second: Value = refresh(&app, field(&first, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();

    assert_problem(refresh(&app, field(&first, "refresh_token")).await, 401).await;

    let newest = refresh(&app, field(&second, "refresh_token")).await;
    assert_eq!(
        newest.status(),
        401,
        "the newest token of the family is refused too"
    );
    let other_session = sign_in(&app, "test", "test").await;
    assert_eq!(
        refresh(&app, field(&other_session, "refresh_token"))
            .await
            .status(),
        200,
        "other sign-ins live on"
    );
}

#[tokio::test]
async fn an_access_token_is_no_refresh_token_and_a_refresh_token_no_access_token() {
    let app = spawn_app().await;
    let session = sign_in(&app, "test", "test").await;
    assert_problem(refresh(&app, field(&session, "access_token")).await, 401).await;
    assert_problem(
        app.get("/api/users/me", Some(field(&session, "refresh_token")))
            .await,
        401,
    )
    .await;
    for body in [
        json!({}),
        json!({ "refresh_token": "" }),
        json!({ "refresh_token": "x".repeat(10_000) }),
        json!({ "refresh_token": 5 }),
    ] {
        let response = app
            .http
            .post(app.url("/api/token/refresh"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{body}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn logout_refuses_the_access_token_at_once_ends_the_session_and_may_be_repeated() {
    let app = spawn_app().await;
    let session = sign_in(&app, "test", "test").await;
    let access = field(&session, "access_token");
    assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 200);

    let logout = app
        .http
        .post(app.url("/api/logout"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);

    let refused = app.get("/api/users/me", Some(access)).await;
    assert_eq!(refused.status(), 401, "the access token is refused at once");
    assert_problem(refresh(&app, field(&session, "refresh_token")).await, 401).await;
    let again = app
        .http
        .post(app.url("/api/logout"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        204,
        "logout is idempotent: a retry with the now revoked token is accepted (it may have to finish the job)"
    );
    assert_eq!(app.get("/api/users/me", Some(access)).await.status(), 401);
    let forged = app
        .http
        .post(app.url("/api/logout"))
        .bearer_auth(format!("{access}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        401,
        "only a revoked token, never an invalid one"
    );
}

#[tokio::test]
async fn logout_with_a_refresh_token_ends_that_session_too_but_never_someone_elses() {
    let app = spawn_app().await;
    let mine = sign_in(&app, "test", "test").await;
    let my_other = sign_in(&app, "test", "test").await;
    let admins = sign_in(&app, "admin", "a").await;

    let logout = logout_with(
        &app,
        field(&mine, "access_token"),
        field(&my_other, "refresh_token"),
    )
    .await;
    assert_eq!(logout.status(), 204);
    assert_eq!(
        refresh(&app, field(&my_other, "refresh_token"))
            .await
            .status(),
        401
    );

    let attempt = logout_with(
        &app,
        field(&my_other, "access_token"),
        field(&admins, "refresh_token"),
    )
    .await;
    assert_eq!(attempt.status(), 204);
    assert_eq!(
        refresh(&app, field(&admins, "refresh_token"))
            .await
            .status(),
        200,
        "another user's session is untouched"
    );

    let malformed = app
        .http
        .post(app.url("/api/logout"))
        .bearer_auth(field(&admins, "access_token"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400).await;
    assert_problem(
        app.http.post(app.url("/api/logout")).send().await.unwrap(),
        401,
    )
    .await;
}

#[tokio::test]
async fn changing_a_users_role_or_password_or_deactivating_them_refuses_their_older_tokens() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for (i, change) in [
        json!({ "role": "admin" }),
        json!({ "password": "changed" }),
        json!({ "is_active": false }),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("victim{i}");
        let user = app.create_user(&admin, &name, "secret").await;
        let session = sign_in(&app, &name, "secret").await;
        let access = field(&session, "access_token").to_owned();
        assert_eq!(app.get("/api/users/me", Some(&access)).await.status(), 200);

        let patched = app
            .send_json(
                Method::PATCH,
                &format!("/api/users/{}", field(&user, "id")),
                &admin,
                change,
            )
            .await;
        assert_eq!(patched.status(), 200, "{change}");

        wait_until(
            &format!("{change}: the old token to be refused"),
            || async { app.get("/api/users/me", Some(&access)).await.status() == 401 },
        )
        .await;
        assert_eq!(
            refresh(&app, field(&session, "refresh_token"))
                .await
                .status(),
            401,
            "{change}: the session ends too"
        );
    }
    let fresh = sign_in(&app, "victim1", "changed").await;
    assert_eq!(
        app.get("/api/users/me", Some(field(&fresh, "access_token")))
            .await
            .status(),
        200,
        "a token issued after the change works"
    );
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_throttled_without_telling_who_exists() {
    let app = spawn_app().await;
    for username in ["test", "nobody-at-all"] {
        for attempt in 1..=10 {
            assert_eq!(
                app.login(username, "wrong").await.status(),
                401,
                "{username} attempt {attempt}"
            );
        }
        let throttled = app.login(username, "wrong").await;
        let retry_after: u64 = throttled.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
        let body = assert_problem(throttled, 429).await;
        assert!(
            !body.to_string().contains(username),
            "the answer does not echo whom it is about"
        );
    }
    let right_password = app.login("test", "test").await;
    assert_eq!(
        right_password.status(),
        429,
        "while throttled, even the right password waits"
    );
    assert_eq!(
        app.login("admin", "a").await.status(),
        200,
        "other users are not locked out"
    );
}

#[tokio::test]
async fn a_successful_sign_in_resets_the_usernames_failure_count() {
    let app = spawn_app().await;
    for _ in 0..9 {
        assert_eq!(app.login("test", "wrong").await.status(), 401);
    }
    assert_eq!(app.login("test", "test").await.status(), 200);
    for _ in 0..9 {
        assert_eq!(
            app.login("test", "wrong").await.status(),
            401,
            "the count started again"
        );
    }
}

#[tokio::test]
async fn a_rotated_key_signs_new_tokens_while_the_old_one_still_verifies() {
    // The gateway's clock starts a reload interval behind the machine's, so moving it past one
    // brings it level with the machine's again, the time everyone else reads: the CLI stamps
    // the new key with it, and the services refuse identity tokens from seconds in its future.
    let time = ManualClock::starting_at(gateway::clock::unix_ms() - millis(KEY_RELOAD_INTERVAL));
    let app = spawn_app_at(Clock::from(&time), |config| config).await;
    let before = sign_in(&app, "test", "test").await;
    let old_kid = jsonwebtoken::decode_header(field(&before, "access_token"))
        .unwrap()
        .kid
        .unwrap();

    let (ok, output) = app.cli(&["keys", "rotate"]);
    assert!(ok, "{output}");
    let (ok, listing) = app.cli(&["keys", "list"]);
    assert!(
        ok && listing.contains("published, signs from") && listing.contains("signing"),
        "{listing}"
    );

    // The running gateway rereads its keys every KEY_RELOAD_INTERVAL of its clock: moved to a
    // second past now on the machine's (the new key's 1 s activation, as the test config has
    // it), which is more than an interval on from where it started.
    let gateway_clock = Clock::from(&time);
    let past_activation = gateway::clock::unix_ms() + 1000 - gateway_clock.unix_ms();
    assert!(past_activation >= millis(KEY_RELOAD_INTERVAL));
    time.advance(Duration::from_millis(past_activation));
    let new_kid = wait_for("the running gateway to sign with the new key", || async {
        let session = sign_in(&app, "test", "test").await;
        let kid = jsonwebtoken::decode_header(field(&session, "access_token"))
            .unwrap()
            .kid
            .unwrap();
        (kid != old_kid).then_some(kid)
    })
    .await;
    // The old key still verifies: the gateway publishes it and accepts the tokens it signed.
    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    // Through to a service, which the gateway vouches for with an identity token of the new
    // key. (How soon a service fetches that key is its JWKS cache's business, on its own
    // clock: `kit::identity`.)
    let echoed = app
        .get("/api/echo/me", Some(field(&before, "access_token")))
        .await;
    assert_eq!(echoed.status(), 200, "tokens of the old key live on");
    let echoed: Value = echoed.json().await.unwrap();
    let identity = echoed["headers"]["x-gatehouse-identity"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(identity).unwrap().kid.unwrap(),
        new_kid,
        "identity tokens are signed with the new EdDSA key"
    );
}

#[tokio::test]
async fn logout_and_refresh_reuse_end_every_access_token_of_the_session() {
    let app = spawn_app().await;
    let first = sign_in(&app, "test", "test").await;
    let second: Value = refresh(&app, field(&first, "refresh_token"))
        .await
        .json()
        .await
        .unwrap();
    let logout = app
        .http
        .post(app.url("/api/logout"))
        .bearer_auth(field(&second, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(
        app.get("/api/users/me", Some(field(&first, "access_token")))
            .await
            .status(),
        401,
        "an earlier access token of the same session is refused too"
    );

    let victim = sign_in(&app, "test", "test").await;
    let stolen = field(&victim, "refresh_token").to_owned();
    let thief: Value = refresh(&app, &stolen).await.json().await.unwrap();
    assert_eq!(
        app.get("/api/users/me", Some(field(&thief, "access_token")))
            .await
            .status(),
        200
    );
    assert_eq!(
        refresh(&app, &stolen).await.status(),
        401,
        "the owner's retry reveals the theft"
    );
    assert_eq!(
        app.get("/api/users/me", Some(field(&thief, "access_token")))
            .await
            .status(),
        401,
        "the thief's access token dies with the family"
    );
    assert_eq!(
        app.get("/api/users/me", Some(field(&victim, "access_token")))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_refresh_that_fails_upstream_leaves_the_token_usable() {
    let app = spawn_app().await;
    let session = sign_in(&app, "test", "test").await;
    let config = app.data.path().join("gateway.yaml");
    let original = std::fs::read_to_string(&config).unwrap();
    let users_url = "${GATEHOUSE_USERS_URL:-http://127.0.0.1:8101}";
    // Refused for as long as the tests run: no parallel test can come to listen there.
    let dead = format!("http://{}", crate::harness::dead_address());
    std::fs::write(&config, original.replace(users_url, &dead)).unwrap();
    let access = field(&session, "access_token").to_owned();
    let token = field(&session, "refresh_token").to_owned();
    wait_until("the reloaded gateway to fail to reach users", || async {
        app.get("/api/users/me", Some(&access))
            .await
            .status()
            .is_server_error()
    })
    .await;
    assert!(
        refresh(&app, &token).await.status().is_server_error(),
        "the refresh fails upstream"
    );

    std::fs::write(&config, original).unwrap();
    wait_until("users to be reachable again", || async {
        app.get("/api/users/me", Some(field(&session, "access_token")))
            .await
            .status()
            == 200
    })
    .await;
    assert_eq!(
        refresh(&app, &token).await.status(),
        200,
        "the failed refresh did not spend the token"
    );
}

#[tokio::test]
async fn a_burst_of_concurrent_guesses_is_limited_like_a_sequence() {
    let app = spawn_app().await;
    let guesses = (0..30).map(|i| {
        let app = &app;
        async move {
            app.login("test", &format!("guess-{i}"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    assert!(
        checked <= 10,
        "{checked} of 30 concurrent guesses had their password checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "only refusals, never 5xx of ours: {statuses:?}"
    );
    assert_eq!(
        app.login("test", "test").await.status(),
        429,
        "the username stays throttled"
    );
    assert_eq!(
        app.login("admin", "a").await.status(),
        200,
        "other users sign in meanwhile (30 attempts stay under the IP limit of 50)"
    );
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap()
}
