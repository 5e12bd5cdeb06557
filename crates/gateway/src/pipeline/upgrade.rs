//! Upgrade: a WebSocket through the gateway (issue 16), on a route that says `websocket:`.
//!
//! The upgrade request takes the whole request path like any other: [`read`] checks the
//! handshake (RFC 6455 §4.2.1: GET over HTTP/1.1, `Connection: upgrade`, `Upgrade: websocket`,
//! `Sec-WebSocket-Version: 13`, a key of 16 bytes; else 400) right after the route is found,
//! then the caller is authenticated, authorized and limited as usual (401, 403, 429 at the
//! upgrade). [`open`] then sends the upgrade to an instance on a connection of its own with the
//! caller's identity (the same headers a forwarded request gets); on the instance's 101 the
//! client gets a 101 and the two connections are spliced ([`crate::proxy::splice`]), and any
//! other answer of the instance goes to the client as it is. The cache and the body checks are
//! skipped (an upgrade has neither a body nor an answer to store); the route's request edits
//! apply.
//!
//! Browsers cannot set `Authorization` on a WebSocket, so the access token may come in
//! `Sec-WebSocket-Protocol` as the pair of entries `bearer, <token>`
//! (`new WebSocket(url, ["bearer", token])`, or `["chat", "bearer", token]` with a subprotocol
//! of the application's). Both entries are removed before the upgrade goes on: the instance
//! never sees the token, and the client's 101 names only a subprotocol the instance chose among
//! those the client offered, or `bearer` when the instance chose none (browsers fail a
//! handshake that offered subprotocols and got none back). The token is never logged.
//!
//! A socket opened with a token is closed when that token is revoked (logout, its session or
//! its user cut off: the revocation wakes the socket wherever it reaches this replica's mirror,
//! so within the same delay a new request is refused) and when the token expires: a token
//! that would no longer open the socket does not keep it open. Clients reconnect with a fresh
//! token.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::{forward, prepare};
use crate::app::App;
use crate::auth::tokens::AccessClaims;
use crate::error::GatewayError;
use crate::proxy::headers;
use crate::proxy::splice::{self, Closed, Revocable, Spliced};
use crate::proxy::upstream::path_and_query_of;
use crate::proxy::websocket::{self, Opened};
use crate::router::Route;
use crate::routing::Routing;
use crate::state::watchers::Named;

/// The WebSocket version the gateway relays (RFC 6455's, the only one browsers speak).
pub const VERSION: &str = "13";

/// The `Sec-WebSocket-Protocol` entry that says the next one is the access token.
pub const BEARER: &str = "bearer";

/// A checked upgrade request, waiting for the caller's checks and the instance's answer.
pub struct Handshake {
    /// The client's connection, once the gateway has answered 101.
    on_upgrade: OnUpgrade,
    /// The subprotocols the client offered, the token's entries taken out.
    offered: Vec<String>,
    /// The token came in `Sec-WebSocket-Protocol`.
    token_in_protocol: bool,
}

/// The handshake of a request on `route`, checked: `None` when the route takes no WebSocket or
/// the request asks for none (then `Upgrade` is stripped like any hop-by-hop header, whatever
/// it names: an h2c upgrade never passes). A token in `Sec-WebSocket-Protocol` is moved into
/// `Authorization` for the authenticate phase (on a public route it is dropped).
pub fn read(route: &Route, parts: &mut Parts) -> Result<Option<Handshake>, GatewayError> {
    if route.settings.websocket.is_none() || !lists(&parts.headers, &header::UPGRADE, "websocket") {
        return Ok(None);
    }
    if parts.method != Method::GET {
        return Err(GatewayError::BadHandshake(
            "A WebSocket upgrade must be a GET request.",
        ));
    }
    if parts.version != Version::HTTP_11 {
        return Err(GatewayError::BadHandshake(
            "A WebSocket upgrade needs HTTP/1.1 (HTTP/2's extended CONNECT is not supported).",
        ));
    }
    if !lists(&parts.headers, &header::CONNECTION, "upgrade") {
        return Err(GatewayError::BadHandshake(
            "A WebSocket upgrade needs `Connection: upgrade`.",
        ));
    }
    if one(&parts.headers, &header::SEC_WEBSOCKET_VERSION) != Some(VERSION.as_bytes()) {
        return Err(GatewayError::BadHandshake(
            "Only WebSocket version 13 is supported: send `Sec-WebSocket-Version: 13`.",
        ));
    }
    let key_is_valid = one(&parts.headers, &header::SEC_WEBSOCKET_KEY)
        .and_then(|key| STANDARD.decode(key).ok())
        .is_some_and(|nonce| nonce.len() == 16);
    if !key_is_valid {
        return Err(GatewayError::BadHandshake(
            "A WebSocket upgrade needs one `Sec-WebSocket-Key`: 16 random bytes in base64.",
        ));
    }
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0")
    {
        return Err(GatewayError::BadHandshake(
            "A WebSocket upgrade has no body.",
        ));
    }
    let (offered, token) = subprotocols(&parts.headers)?;
    let token_in_protocol = token.is_some();
    if let Some(token) = token {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(GatewayError::BadHandshake(
                "Send the access token once: in `Authorization` or in `Sec-WebSocket-Protocol`, not both.",
            ));
        }
        if route.settings.auth.needs_identity() {
            let credentials = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| GatewayError::InvalidToken("the token is malformed"))?;
            parts.headers.insert(header::AUTHORIZATION, credentials);
        }
    }
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(GatewayError::BadHandshake(
            "This connection cannot be upgraded.",
        ));
    };
    Ok(Some(Handshake {
        on_upgrade,
        offered,
        token_in_protocol,
    }))
}

/// The subprotocols offered, and the token when they carry one (`bearer, <token>`). Every entry
/// must be a token (RFC 9110 §5.6.2), as RFC 6455 requires.
fn subprotocols(headers: &HeaderMap) -> Result<(Vec<String>, Option<String>), GatewayError> {
    let mut entries = Vec::new();
    for line in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let line = line.to_str().map_err(|_| not_a_token())?;
        for entry in line.split(',').map(str::trim) {
            if entry.is_empty() || !entry.bytes().all(is_tchar) {
                return Err(not_a_token());
            }
            entries.push(entry.to_owned());
        }
    }
    let Some(at) = entries.iter().position(|entry| entry == BEARER) else {
        return Ok((entries, None));
    };
    if at + 1 >= entries.len() {
        return Err(GatewayError::MissingToken);
    }
    let token = entries.remove(at + 1);
    entries.remove(at);
    if entries.iter().any(|entry| entry == BEARER) {
        return Err(GatewayError::BadHandshake(
            "Send the access token once in `Sec-WebSocket-Protocol`.",
        ));
    }
    Ok((entries, Some(token)))
}

fn not_a_token() -> GatewayError {
    GatewayError::BadHandshake(
        "`Sec-WebSocket-Protocol` must list subprotocol names (tokens) separated by commas.",
    )
}

/// RFC 9110 §5.6.2's `tchar`.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether one of `name`'s lines lists `token` (case-insensitive).
fn lists(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The value of `name` when it is sent exactly once.
fn one<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value.as_bytes().trim_ascii()),
        _ => None,
    }
}

/// Sent with the 101 to the observe phase: the socket's life, once it ends, for the access log.
/// (A response's extensions must be `Clone`; the one receiver is taken out once.)
#[derive(Clone)]
pub struct SocketLife(Arc<std::sync::Mutex<Option<oneshot::Receiver<Spliced>>>>);

impl SocketLife {
    /// Resolves when the socket has ended (at once, as ended, when taken before).
    pub async fn ended(self) -> Result<Spliced, oneshot::error::RecvError> {
        let receiver = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match receiver {
            Some(receiver) => receiver.await,
            None => {
                let (_, gone) = oneshot::channel();
                gone.await
            }
        }
    }
}

/// Opens the socket: the upgrade to an instance, then a 101 to the client and the splice, or the
/// instance's own answer (see the module docs).
pub async fn open(
    app: &App,
    routing: &Routing,
    request: forward::Forwardable<'_>,
    handshake: Handshake,
    attempted: &mut crate::proxy::forward::Attempted,
) -> Result<Response, GatewayError> {
    // The body is empty: `read` refused an upgrade that declares one.
    let forward::Forwardable {
        route,
        mut target,
        mut parts,
        host,
        client_ip,
        caller,
        ..
    } = request;
    let Some(rule) = route.settings.websocket else {
        return Err(GatewayError::Internal(anyhow::anyhow!(
            "an upgrade on a route without websocket"
        )));
    };
    let upstream = forward::upstream_of(routing, route)?;
    prepare::request(route, &parts.method, &mut parts.headers, &mut target);
    let upgrade_headers = [
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ]
    .map(|name| (parts.headers.get(&name).cloned(), name));
    forward::for_service(
        app,
        upstream,
        &mut parts.headers,
        host.as_ref(),
        client_ip,
        caller.as_deref(),
    )?;
    let outgoing = &mut parts.headers;
    // Put back what the hop-by-hop rules removed: this hop is an upgrade too. The handshake's
    // own headers are restored in case the client named them in `Connection`.
    outgoing.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    outgoing.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    for (value, name) in upgrade_headers {
        if let Some(value) = value {
            outgoing.insert(name, value);
        }
    }
    outgoing.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !handshake.offered.is_empty() {
        let list =
            HeaderValue::try_from(handshake.offered.join(", ")).map_err(|_| not_a_token())?;
        outgoing.insert(header::SEC_WEBSOCKET_PROTOCOL, list);
    }
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = path_and_query_of(target)?.into();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers;

    let metrics = &app.observe.gateway;
    let timeout = route.settings.timeout.unwrap_or(upstream.timeout);
    let started = tokio::time::Instant::now();
    let opened = websocket::open(upstream, request, timeout).await;
    attempted.upstream = Some(started.elapsed());
    let (head, io, flight) = match opened {
        Err(error) => {
            metrics.websocket_upgrade("failed");
            return Err(error);
        }
        Ok(Opened::Answered { response, instance }) => {
            attempted.instance = Some(instance);
            metrics.websocket_upgrade("refused_by_upstream");
            return Ok(response);
        }
        Ok(Opened::Switched {
            head,
            io,
            flight,
            instance,
        }) => {
            attempted.instance = Some(instance);
            (head, io, flight)
        }
    };
    let answer = match switched(head, &handshake) {
        Ok(answer) => answer,
        Err(error) => {
            metrics.websocket_upgrade("failed");
            tracing::warn!(service = %upstream.name, "the instance's 101 does not answer the client's handshake");
            return Err(error.named(&upstream.name));
        }
    };
    metrics.websocket_upgrade("upgraded");

    let revocable = caller.map(|claims| revocable(app, claims));
    let (closed, life) = oneshot::channel();
    let open = metrics.websockets_open.clone();
    let closes = metrics.clone();
    open.inc();
    let on_upgrade = handshake.on_upgrade;
    tokio::spawn(async move {
        let spliced = match on_upgrade.await {
            Ok(client) => splice::run(TokioIo::new(client), io, rule, revocable).await,
            Err(error) => {
                tracing::debug!(%error, "the client's side of a WebSocket never opened");
                Spliced {
                    closed: Closed::ClientGone,
                    from_client: 0,
                    from_upstream: 0,
                }
            }
        };
        drop(flight);
        open.dec();
        closes.websocket_closed(spliced.closed.as_str());
        // The observe phase may be gone (its task ended); the socket is over either way.
        let _ = closed.send(spliced);
    });
    let mut answer = answer;
    answer
        .extensions_mut()
        .insert(SocketLife(Arc::new(std::sync::Mutex::new(Some(life)))));
    Ok(answer)
}

/// Why the instance's 101 cannot be passed on.
enum Mismatch {
    NoAccept,
    UnofferedSubprotocol,
}

impl Mismatch {
    fn named(self, service: &str) -> GatewayError {
        match self {
            Self::NoAccept | Self::UnofferedSubprotocol => GatewayError::BadGateway {
                service: service.to_owned(),
            },
        }
    }
}

/// The client's 101, from the instance's: its headers (the hop-by-hop ones stripped), the
/// upgrade, and a subprotocol only when it is one the client offered (or `bearer`, see the
/// module docs).
fn switched(head: http::response::Parts, handshake: &Handshake) -> Result<Response, Mismatch> {
    let mut outgoing = head.headers;
    headers::sanitize_response(&mut outgoing);
    if !outgoing.contains_key(header::SEC_WEBSOCKET_ACCEPT) {
        return Err(Mismatch::NoAccept);
    }
    let chosen = outgoing.remove(header::SEC_WEBSOCKET_PROTOCOL);
    match chosen {
        Some(chosen) => {
            let offered = chosen
                .to_str()
                .is_ok_and(|name| handshake.offered.iter().any(|o| o == name.trim()));
            if !offered {
                return Err(Mismatch::UnofferedSubprotocol);
            }
            outgoing.insert(header::SEC_WEBSOCKET_PROTOCOL, chosen);
        }
        None if handshake.token_in_protocol => {
            outgoing.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(BEARER),
            );
        }
        None => {}
    }
    outgoing.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    outgoing.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = outgoing;
    Ok(answer)
}

/// What closes a socket opened by `claims`: revocations naming its token, session or subject,
/// confirmed by the mirror, and its expiry.
fn revocable(app: &App, claims: Arc<AccessClaims>) -> Revocable {
    let mirror = app.shared.mirror();
    let mut names = vec![
        Named::Token(claims.jti.clone()),
        Named::Subject(claims.sub.clone()),
    ];
    if let Some(sid) = &claims.sid {
        names.push(Named::Session(sid.clone()));
    }
    let watch = mirror.watchers().watch(names);
    let left = claims.exp.saturating_sub(app.clock.unix_seconds());
    let expires = tokio::time::Instant::now() + std::time::Duration::from_secs(left);
    let app = Arc::clone(app);
    Revocable {
        watch,
        is_revoked: Box::new(move || {
            app.shared.mirror().is_revoked(
                &claims.jti,
                claims.sid.as_deref(),
                &claims.sub,
                claims.issued_ms(),
            )
        }),
        expires,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocols(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(line).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_token_pair_is_taken_out_of_the_offered_subprotocols() {
        let (offered, token) = subprotocols(&protocols(&["chat, bearer", "eyJ.a-b_c.d"])).unwrap();
        assert_eq!(offered, vec!["chat".to_owned()]);
        assert_eq!(token.as_deref(), Some("eyJ.a-b_c.d"));
    }

    #[test]
    fn offered_subprotocols_without_a_token_pass_untouched() {
        let (offered, token) = subprotocols(&protocols(&["chat", "superchat"])).unwrap();
        assert_eq!(offered, vec!["chat".to_owned(), "superchat".to_owned()]);
        assert_eq!(token, None);
    }

    #[test]
    fn malformed_subprotocol_lists_are_refused() {
        let cases: &[(&[&str], &str)] = &[
            (&["chat, bearer"], "bearer with no token after it"),
            (&["chat,,x"], "an empty entry"),
            (&["a b"], "a space inside a name"),
            (&["bearer, t1, bearer, t2"], "two tokens"),
            (&["ch\"at"], "a quote"),
        ];
        for (lines, why) in cases {
            assert!(subprotocols(&protocols(lines)).is_err(), "{why}");
        }
    }
}
