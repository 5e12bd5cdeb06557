//! The route and policy matrix: every combination of a route's auth policy, a method and a
//! caller (none, a user, an admin, a user without the scope, an expired, revoked or malformed
//! token) answers one status for one reason, decided before any upstream is asked. The pipeline
//! is called as a `tower::Service` without a socket in front of it; behind it, one upstream
//! answers 200 to anything, so an allowed request reads as 200.

use std::net::SocketAddr;

use axum::body::Body;
use axum::response::Response;
use gateway::auth::tokens::{IssuedToken, Subject, ACCESS_TOKEN_TYPE};
use gateway::config::Vars;
use gateway::pipeline::Pipeline;
use gateway::Gateway;
use http::{Method, Request, StatusCode};
use kit::observe::Reason;
use kit::PrincipalKind;
use tokio::net::TcpListener;
use tower::{service_fn, ServiceExt};

/// The address the pipeline is told the request came from.
const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

/// One route per auth policy, all to the same upstream (which is also the login's `users`,
/// never asked here).
fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
access_log: "off"
store: "sqlite://${{DATA}}/gateway.db"
services:
  app: {{ upstreams: ["http://{upstream}"] }}
  users: {{ upstreams: ["http://{upstream}"] }}
routes:
  - {{ path: /public, methods: [GET], service: app, to: /public, auth: public }}
  - {{ path: /mine, methods: [GET, POST], service: app, to: /mine, auth: authenticated }}
  - {{ path: /admin, methods: [GET], service: app, to: /admin, auth: {{ roles: [admin] }} }}
  - {{ path: /precise, methods: [GET], service: app, to: /precise, auth: {{ scopes: ["time:precise"] }} }}
"#
    )
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Nobody,
    /// Role `user`, scope `time:read`.
    User,
    /// Role `admin`, no scope.
    Admin,
    /// Role `user`, scopes that are near `time:precise` but not it.
    WrongScope,
    /// Role `user`, scope `time:precise`.
    Precise,
    /// A user's token whose `exp` passed an hour ago, signed with the gateway's own key.
    Expired,
    /// A user's valid token, logged out (its `jti` denied).
    Revoked,
    /// Not a JWT at all.
    Malformed,
}

/// A gateway built from [`config`], its pipeline, and the tokens of each caller.
struct Matrix {
    pipeline: Pipeline,
    tokens: Vec<(Caller, String)>,
    _data: tempfile::TempDir,
}

impl Matrix {
    async fn build() -> Self {
        let upstream = spawn_upstream().await;
        let data = tempfile::tempdir().unwrap();
        let vars = Vars::new().set("DATA", data.path().join("data").display().to_string());
        let config = gateway::config::parse(&config(upstream), "policy.yaml", &vars).unwrap();
        let gateway = Gateway::build(config).await.unwrap();
        let app = gateway.app();
        let issue = |roles: &[&str], scopes: &[&str]| -> IssuedToken {
            let subject = Subject {
                id: uuid::Uuid::new_v4().to_string(),
                kind: PrincipalKind::User,
                username: Some("someone".to_owned()),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            };
            app.auth.tokens.issue(subject, None).unwrap()
        };

        let expired = {
            let mut claims = issue(&["user"], &["time:read"]).claims;
            let hour_ago = gateway::clock::unix_seconds() - 3600;
            (claims.iat, claims.nbf, claims.exp) = (hour_ago - 60, hour_ago - 60, hour_ago);
            claims.iat_ms = claims.iat * 1000;
            let keys = app.auth.keys.current();
            let key = keys.access();
            let mut header = jsonwebtoken::Header::new(key.algorithm);
            header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
            header.kid = Some(key.kid.clone());
            jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
        };
        let revoked = issue(&["user"], &["time:read"]);
        app.shared
            .deny(&revoked.claims.jti, revoked.claims.exp)
            .await
            .unwrap();

        let tokens = vec![
            (Caller::User, issue(&["user"], &["time:read"]).token),
            (Caller::Admin, issue(&["admin"], &[]).token),
            (
                Caller::WrongScope,
                issue(
                    &["user"],
                    &["time:read", "time:precise:extra", "TIME:PRECISE"],
                )
                .token,
            ),
            (Caller::Precise, issue(&["user"], &["time:precise"]).token),
            (Caller::Expired, expired),
            (Caller::Revoked, revoked.token),
            (Caller::Malformed, "not-a-jwt".to_owned()),
        ];
        Self {
            pipeline: gateway.pipeline(),
            tokens,
            _data: data,
        }
    }

    /// `method path` as `caller`, through the pipeline as a tower service: no socket.
    async fn call(&self, method: &Method, path: &str, caller: Caller) -> Response {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, "gateway.test");
        if let Some((_, token)) = self.tokens.iter().find(|(who, _)| *who == caller) {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let pipeline = self.pipeline.clone();
        let service = service_fn(move |request: Request<Body>| {
            let pipeline = pipeline.clone();
            async move { Ok::<_, std::convert::Infallible>(pipeline.handle(request, PEER).await) }
        });
        service
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }
}

/// An upstream that answers 200 to anything: what a request the policy allows reaches.
async fn spawn_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "served" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test]
async fn every_route_policy_method_and_caller_answers_one_status_for_one_reason() {
    use Caller::*;
    let matrix = Matrix::build().await;
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    let ok = (StatusCode::OK, None);
    let refused = |status: StatusCode, reason: &'static str| (status, Some(reason));
    let unauthorized = |reason| refused(StatusCode::UNAUTHORIZED, reason);
    let forbidden = |reason| refused(StatusCode::FORBIDDEN, reason);
    let not_allowed = refused(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    #[rustfmt::skip]
    let table = [
        // A public route asks nobody, and reads no token, however bad.
        ("/public",  &get,    Nobody,     ok,                                   "public needs nobody"),
        ("/public",  &get,    Expired,    ok,                                   "public ignores an expired token"),
        ("/public",  &get,    Malformed,  ok,                                   "public ignores a malformed token"),
        ("/public",  &delete, Nobody,     not_allowed,                          "a method the route does not list"),
        // Authenticated: any valid, unrevoked token.
        ("/mine",    &get,    Nobody,     unauthorized("token_missing"),        "no token"),
        ("/mine",    &get,    User,       ok,                                   "a user"),
        ("/mine",    &post,   Admin,      ok,                                   "an admin, another listed method"),
        ("/mine",    &get,    Expired,    unauthorized("token_expired"),        "an expired token"),
        ("/mine",    &get,    Revoked,    unauthorized("token_revoked"),        "a logged-out token"),
        ("/mine",    &get,    Malformed,  unauthorized("token_invalid"),        "not a JWT"),
        ("/mine",    &delete, User,       not_allowed,                          "the method is checked before the caller"),
        ("/mine",    &delete, Nobody,     not_allowed,                          "even for nobody"),
        // A role.
        ("/admin",   &get,    Nobody,     unauthorized("token_missing"),        "no token"),
        ("/admin",   &get,    User,       forbidden("role_missing"),            "a user is not an admin"),
        ("/admin",   &get,    Precise,    forbidden("role_missing"),            "a scope is not a role"),
        ("/admin",   &get,    Admin,      ok,                                   "an admin"),
        ("/admin",   &get,    Expired,    unauthorized("token_expired"),        "authentication before authorization"),
        ("/admin",   &get,    Revoked,    unauthorized("token_revoked"),        "a logged-out token"),
        // A scope.
        ("/precise", &get,    Nobody,     unauthorized("token_missing"),        "no token"),
        ("/precise", &get,    User,       forbidden("scope_missing"),           "another scope"),
        ("/precise", &get,    WrongScope, forbidden("scope_missing"),           "near misses and other case"),
        ("/precise", &get,    Admin,      forbidden("scope_missing"),           "a role is not a scope"),
        ("/precise", &get,    Precise,    ok,                                   "the scope"),
        ("/precise", &get,    Expired,    unauthorized("token_expired"),        "an expired token"),
        // No route.
        ("/nowhere", &get,    User,       refused(StatusCode::NOT_FOUND, "no_route"), "no route"),
        ("/nowhere", &get,    Nobody,     refused(StatusCode::NOT_FOUND, "no_route"), "no route, before any caller"),
    ];

    for (path, method, caller, (status, reason), why) in table {
        let response = matrix.call(method, path, caller).await;
        let case = format!("{method} {path} as {caller:?} ({why})");

        assert_eq!(response.status(), status, "{case}");
        assert_eq!(
            response.extensions().get::<Reason>().map(|r| r.as_str()),
            reason,
            "{case}"
        );
        if reason.is_some() {
            assert_eq!(
                response.headers()[http::header::CONTENT_TYPE],
                "application/problem+json",
                "{case}"
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                response
                    .headers()
                    .contains_key(http::header::WWW_AUTHENTICATE),
                "{case}: a 401 names its scheme"
            );
        }
    }
}
