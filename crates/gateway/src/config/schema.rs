//! The configuration file as written, typed: every value is read into a type that refuses a
//! wrong one ([`super::values`]), every struct refuses unknown fields (a typo is an error, not
//! a silently ignored setting), and every default is here, in the `Default` of its section.
//! What needs more than one value to check is left to [`super::validate`], with the positions
//! of the values it compares (`Spanned`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kit::config::{unplaced, SecretUrl, Spanned};
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;

use super::values::{
    any_duration, from_text, Claim, LiteralPath, NonEmpty, Percent, Period, RouteMethod, Size,
    Upstream, UrlPath, Watch,
};
use super::{AuthPolicy, Balance, SigningAlgorithm};

type StrDeserializer<'a> = serde::de::value::StrDeserializer<'a, serde::de::value::Error>;

/// A count known at compile time to be above zero (a zero fails the build, not the gateway).
macro_rules! at_least_one {
    ($type:ident, $n:expr) => {{
        const N: $type = match $type::new($n) {
            Some(n) => n,
            None => panic!("a default count must be at least 1"),
        };
        N
    }};
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct File {
    pub listen: SocketAddr,
    /// TLS on the public listener; absent: plain HTTP.
    pub tls: Option<Tls>,
    /// The admin listener: `/metrics` and the detailed `/readyz`; never the public one.
    pub admin_listen: SocketAddr,
    /// `stdout` (default), `stderr`, `off`, or a file path.
    #[serde(deserialize_with = "from_text")]
    pub access_log: kit::observe::AccessLogTarget,
    pub store: Store,
    pub state: State,
    pub tokens: Tokens,
    pub auth: Auth,
    pub limits: Limits,
    /// The response cache's bounds (routes opt in with their own `cache` key).
    pub cache: Cache,
    /// Required; `None` only when the file does not say.
    pub services: Option<BTreeMap<String, Service>>,
    /// Required; `None` only when the file does not say.
    pub routes: Option<Vec<Route>>,
    /// Named rate-limit policies, which routes take by name (`rate_limit: [name]`).
    pub rate_limits: BTreeMap<String, Spanned<RateLimit>>,
    /// How long requests in flight may take to finish after SIGTERM.
    pub drain_timeout: Period,
    /// After SIGTERM, how long the gateway answers not-ready while still serving, before it
    /// stops accepting and drains (zero: no delay).
    #[serde(deserialize_with = "any_duration")]
    pub shutdown_delay: std::time::Duration,
    /// How often the file is checked for changes, or `off`.
    pub watch: Watch,
    /// How long a changed file must stay unchanged before it is applied.
    pub watch_settle: Period,
    /// Span export over OTLP/HTTP; absent: off (traces are still continued and logged).
    pub telemetry: Option<Telemetry>,
}

/// `telemetry:` the collector the gateway's spans are posted to (read at start).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// `http://host:4318`: OTLP/HTTP with protobuf bodies, posted to `/v1/traces`.
    pub otlp_endpoint: kit::trace::OtlpEndpoint,
    /// The `service.name` of the gateway's spans (default `gateway`).
    #[serde(default)]
    pub service_name: Option<NonEmpty>,
    /// The share of the traces the gateway starts that are recorded, 0 to 1 (default 1); a
    /// client's `traceparent` decides for the traces it continues.
    #[serde(default)]
    pub sample_ratio: kit::trace::SampleRatio,
}

/// Loopback: metrics and the detailed readiness are for operators, not for the internet.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8002,
));

impl Default for File {
    fn default() -> Self {
        Self {
            listen: SocketAddr::V4(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::LOCALHOST,
                8001,
            )),
            tls: None,
            admin_listen: DEFAULT_ADMIN_LISTEN,
            access_log: kit::observe::AccessLogTarget::default(),
            store: Store::default(),
            state: State::Memory,
            tokens: Tokens::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            cache: Cache::default(),
            services: None,
            routes: None,
            rate_limits: BTreeMap::new(),
            drain_timeout: Period::secs(30),
            shutdown_delay: std::time::Duration::ZERO,
            watch: Watch(Some(Duration::from_secs(1))),
            watch_settle: Period::millis(200),
            telemetry: None,
        }
    }
}

/// `store: URL`, or `store: { url: URL, acquire_timeout: 2s }`.
#[derive(Debug)]
pub struct Store {
    pub url: SecretUrl,
    /// How long a query waits for a connection before the request is answered 503.
    pub acquire_timeout: Period,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("sqlite://data/gateway.db"),
            acquire_timeout: Period(kit::db::DEFAULT_ACQUIRE_TIMEOUT),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorePool {
    url: StoreUrl,
    #[serde(default)]
    acquire_timeout: Option<Period>,
}

/// A database URL the store can open: `sqlite:` or `postgres://`.
struct StoreUrl(SecretUrl);

impl<'de> Deserialize<'de> for StoreUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = SecretUrl::deserialize(deserializer)?;
        kit::db::Backend::of_url(url.expose_secret()).map_err(D::Error::custom)?;
        Ok(Self(url))
    }
}

impl<'de> Deserialize<'de> for Store {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrMap::new(
            "a database URL or { url, acquire_timeout }",
            |url: &str| -> Result<Store, serde::de::value::Error> {
                let StoreUrl(url) = StoreUrl::deserialize(StrDeserializer::new(url))?;
                Ok(Store {
                    url,
                    ..Store::default()
                })
            },
            |pool: StorePool| Store {
                url: pool.url.0,
                acquire_timeout: pool
                    .acquire_timeout
                    .unwrap_or(Store::default().acquire_timeout),
            },
        ))
    }
}

/// `state: memory`, `state: redis://host:6379`, or `state: { redis: URL, prefix: NAME, … }`.
#[derive(Debug)]
pub enum State {
    Memory,
    Redis(Redis),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub redis: RedisUrl,
    #[serde(default = "default_prefix")]
    pub prefix: Prefix,
    /// How long opening a connection to Redis may take.
    #[serde(default)]
    pub connect_timeout: Option<Period>,
    /// How long one command may wait for its answer.
    #[serde(default)]
    pub command_timeout: Option<Period>,
    /// While Redis is down, how often a background probe checks whether it is back.
    #[serde(default)]
    pub probe_interval: Option<Period>,
    /// How often the store is read for revocations other replicas recorded.
    #[serde(default)]
    pub store_sync: Option<Period>,
    /// The fleet's size, at least: while Redis is down each replica limits at its share of it.
    #[serde(default)]
    pub replicas: Option<std::num::NonZeroU64>,
}

fn default_prefix() -> Prefix {
    Prefix("gatehouse".to_owned())
}

/// The prefix of the gateway's Redis keys: one word.
#[derive(Debug)]
pub struct Prefix(pub String);

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let prefix = String::deserialize(deserializer)?;
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return Err(D::Error::custom("must be a non-empty word"));
        }
        Ok(Self(prefix))
    }
}

/// A `redis://` or `rediss://` URL, or a unix socket as `redis+unix:///path` or `unix:///path`
/// (a Redis beside the gateway, or a test's own); it may carry a password.
#[derive(Debug)]
pub struct RedisUrl(pub SecretUrl);

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let url = SecretUrl::deserialize(deserializer)?;
        let text = url.expose_secret();
        const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
        if !SCHEMES.iter().any(|scheme| text.starts_with(scheme)) {
            return Err(D::Error::custom(format!(
                "{:?}: expected `memory` or a redis:// URL",
                url.redacted()
            )));
        }
        Ok(Self(url))
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrMap::new(
            "`memory`, a redis:// URL, or { redis, prefix, … }",
            |text: &str| -> Result<State, serde::de::value::Error> {
                if text.trim() == "memory" {
                    return Ok(State::Memory);
                }
                let redis = RedisUrl::deserialize(StrDeserializer::new(text))?;
                Ok(State::Redis(Redis {
                    redis,
                    prefix: default_prefix(),
                    connect_timeout: None,
                    command_timeout: None,
                    probe_interval: None,
                    store_sync: None,
                    replicas: None,
                }))
            },
            State::Redis,
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokens {
    pub access_ttl: Spanned<Period>,
    /// How long an unused refresh token stays valid; each refresh starts it anew.
    pub refresh_ttl: Period,
    /// How long a rotated-in key is published before it signs; `0` signs at once.
    #[serde(deserialize_with = "any_duration")]
    pub key_activation: Duration,
    pub issuer: NonEmpty,
    pub audience: NonEmpty,
    pub algorithm: SigningAlgorithm,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            access_ttl: unplaced(Period::secs(15 * 60)),
            refresh_ttl: Period::secs(14 * 24 * 3600),
            key_activation: crate::auth::keys::DEFAULT_ACTIVATION,
            issuer: NonEmpty("gatehouse".to_owned()),
            audience: NonEmpty("gatehouse-api".to_owned()),
            algorithm: SigningAlgorithm::EdDSA,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub login: Spanned<LiteralPath>,
    pub token: Spanned<LiteralPath>,
    pub refresh: Spanned<LiteralPath>,
    pub logout: Spanned<LiteralPath>,
    /// How often the gateway asks the credentials service for per-user cut-offs.
    pub cutoff_poll: Period,
    pub throttle: Throttle,
    pub credentials: Credentials,
    /// Rate-limit policies the login endpoint takes (by `ip` or `route`: it has no caller yet).
    pub rate_limit: Vec<Spanned<String>>,
}

impl Default for Auth {
    fn default() -> Self {
        let path = |path: &str| unplaced(LiteralPath(path.to_owned()));
        Self {
            login: path("/api/login"),
            token: path("/api/oauth/token"),
            refresh: path("/api/token/refresh"),
            logout: path("/api/logout"),
            cutoff_poll: Period::secs(2),
            throttle: Throttle::default(),
            credentials: Credentials::default(),
            rate_limit: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Throttle {
    pub per_username: NonZeroU64,
    pub per_ip: NonZeroU64,
    pub per_device: NonZeroU64,
    pub concurrent: NonZeroUsize,
    pub window: Period,
    pub device_ttl: Period,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            per_username: at_least_one!(NonZeroU64, 10),
            per_ip: at_least_one!(NonZeroU64, 50),
            per_device: at_least_one!(NonZeroU64, 5),
            concurrent: at_least_one!(NonZeroUsize, 32),
            window: Period::secs(15 * 60),
            device_ttl: Period::secs(90 * 24 * 60 * 60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub service: Spanned<String>,
    #[serde(default = "default_credentials_path")]
    pub path: UrlPath,
}

fn default_credentials_path() -> UrlPath {
    UrlPath("/internal/credentials".to_owned())
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            service: unplaced("users".to_owned()),
            path: default_credentials_path(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body: Size,
    /// How long a client may fall silent while sending a request body.
    pub body_idle_timeout: Period,
    /// How long a connection may take to send a request's headers, from accept or from the end
    /// of its previous request.
    pub header_read_timeout: Period,
    /// How long a connection may stay blocked writing to a client that does not read.
    pub send_timeout: Period,
    pub max_connections: NonZeroUsize,
    pub max_connections_per_ip: NonZeroUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: Size(1024 * 1024),
            body_idle_timeout: Period::secs(10),
            header_read_timeout: Period::secs(10),
            send_timeout: Period::secs(30),
            max_connections: at_least_one!(NonZeroUsize, 16_384),
            max_connections_per_ip: at_least_one!(NonZeroUsize, 512),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub upstreams: Spanned<Vec<Spanned<Upstream>>>,
    #[serde(default = "default_service_timeout")]
    pub timeout: Period,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Period,
    /// Least requests by default: a frozen or slow instance gathers requests in flight and so
    /// stops being picked, where round robin would keep handing it every other request until
    /// its timeouts eject it.
    #[serde(default = "default_balance")]
    pub balance: Balance,
    #[serde(default, deserialize_with = "health")]
    pub health: Option<Health>,
    #[serde(default)]
    pub breaker: Breaker,
    #[serde(default)]
    pub retries: Retries,
    /// Whether the gateway waits for this service's first healthy check after start.
    #[serde(default = "yes")]
    pub required: bool,
    /// `http1` (the default) or `http2`.
    #[serde(default)]
    pub protocol: crate::config::UpstreamProtocol,
    /// How `https://` instances are verified and what the gateway presents to them.
    pub tls: Option<Spanned<UpstreamTls>>,
}

/// `tls: { ca, client_cert, client_key, server_name }` on a service; file paths as given
/// (relative ones from the gateway's working directory).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// A PEM bundle: the only roots trusted for this service (the system's otherwise).
    pub ca: Option<Spanned<NonEmpty>>,
    /// A PEM certificate chain the gateway presents when the instance asks (mTLS).
    pub client_cert: Option<Spanned<NonEmpty>>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<Spanned<NonEmpty>>,
    /// The name the instances' certificates must carry, when it is not their host.
    pub server_name: Option<Spanned<NonEmpty>>,
}

fn default_service_timeout() -> Period {
    Period::secs(30)
}

fn default_connect_timeout() -> Period {
    Period::secs(2)
}

fn default_balance() -> Balance {
    Balance::LeastRequests
}

fn yes() -> bool {
    true
}

/// `health: /healthz`, or `health: { path, interval, timeout, healthy, unhealthy }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    pub path: UrlPath,
    pub interval: Period,
    /// Default: the interval, at most a second — a check that waits long for a frozen instance
    /// delays the verdict the check exists for.
    pub timeout: Option<Period>,
    pub healthy: NonZeroU32,
    pub unhealthy: NonZeroU32,
}

impl Default for Health {
    fn default() -> Self {
        let two = at_least_one!(NonZeroU32, 2);
        Self {
            path: UrlPath("/healthz".to_owned()),
            interval: Period::secs(5),
            timeout: None,
            healthy: two,
            unhealthy: two,
        }
    }
}

/// `health: /path` is `health: { path: /path }`.
pub fn health<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Health>, D::Error> {
    deserializer
        .deserialize_any(TextOrMap::new(
            "a path or { path, interval, timeout, healthy, unhealthy }",
            |path: &str| -> Result<Health, serde::de::value::Error> {
                Ok(Health {
                    path: UrlPath::parse(path).map_err(serde::de::value::Error::custom)?,
                    ..Health::default()
                })
            },
            |health: Health| health,
        ))
        .map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Breaker {
    pub failures: NonZeroU32,
    pub backoff: Spanned<Period>,
    /// Default: five minutes, or the backoff when that is longer.
    pub max_backoff: Option<Spanned<Period>>,
    /// How long an instance must stay in rotation before its next ejection starts from
    /// `backoff` again; default: the back-off it last served.
    pub decay: Option<Period>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            failures: at_least_one!(NonZeroU32, 5),
            backoff: unplaced(Period::secs(10)),
            max_backoff: None,
            decay: None,
        }
    }
}

/// The ceiling of a breaker's back-off when the file gives none.
pub const DEFAULT_MAX_BACKOFF: Period = Period::secs(300);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    pub attempts: Spanned<u32>,
    /// A percentage of requests, such as `20%`.
    pub budget: Percent,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: unplaced(2),
            budget: Percent(20),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: Spanned<UrlPath>,
    pub methods: Vec<RouteMethod>,
    /// The service the route forwards to; a composition route has `compose` instead.
    #[serde(default)]
    pub service: Option<Spanned<String>>,
    /// Default: the public path.
    #[serde(default)]
    pub to: Option<Spanned<String>>,
    /// Required: a route says who may call it.
    #[serde(default)]
    pub auth: Option<RouteAuth>,
    #[serde(default)]
    pub timeout: Option<Period>,
    /// The names of the rate-limit policies the route takes.
    #[serde(default)]
    pub rate_limit: Vec<Spanned<String>>,
    /// Opt-in response cache for the route's GET and HEAD requests.
    #[serde(default)]
    pub cache: Option<Spanned<RouteCache>>,
    /// Edits to the request before it is forwarded.
    #[serde(default)]
    pub request: Option<RouteRequest>,
    /// Edits to the service's answers.
    #[serde(default)]
    pub response: Option<Spanned<RouteResponse>>,
    /// In place of `service`: one answer composed of several services' (see `crate::compose`).
    #[serde(default)]
    pub compose: Option<Spanned<BTreeMap<String, Spanned<ComposePart>>>>,
    /// The client certificate (mTLS) a request must come with; needs `tls.client_ca`.
    #[serde(default)]
    pub client_cert: Option<Spanned<ClientCertRule>>,
    /// The route lets a WebSocket upgrade through (see `crate::pipeline::upgrade`).
    #[serde(default)]
    pub websocket: Option<Spanned<RouteWebSocket>>,
}

/// A route's `websocket: { idle_timeout, max_lifetime }` (issue 16); `websocket: {}` takes the
/// defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteWebSocket {
    /// No byte either way for this long closes the socket; default 5m.
    #[serde(default)]
    pub idle_timeout: Option<Spanned<Period>>,
    /// The socket is closed this long after it opened, whatever it carries; default 24h.
    #[serde(default)]
    pub max_lifetime: Option<Spanned<Period>>,
}

// --- TLS at the entrance (issue 16) ---

/// `tls:` on the public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Chosen by SNI; the first is the default.
    pub certificates: Spanned<Vec<CertificatePair>>,
    /// `client_ca: FILE` (certificates required) or `{ file: FILE, mode: required | optional }`.
    #[serde(default)]
    pub client_ca: Option<ClientCa>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<Spanned<String>>,
    /// `Strict-Transport-Security` on every answer over TLS; absent: none.
    #[serde(default)]
    pub hsts: Option<Hsts>,
    /// A plain-HTTP listener that answers every request with a redirect to HTTPS.
    #[serde(default)]
    pub redirect_http: Option<SocketAddr>,
}

/// `{ cert: FILE, key: FILE }`, both PEM.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug)]
pub struct ClientCa {
    pub file: Spanned<String>,
    pub mode: kit::tls::ClientAuth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientCaMap {
    file: Spanned<String>,
    #[serde(default, deserialize_with = "client_auth")]
    mode: Option<kit::tls::ClientAuth>,
}

fn client_auth<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<kit::tls::ClientAuth>, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "required" => Ok(Some(kit::tls::ClientAuth::Required)),
        "optional" => Ok(Some(kit::tls::ClientAuth::Optional)),
        other => Err(D::Error::custom(format!(
            "{other:?}: expected required or optional"
        ))),
    }
}

impl<'de> Deserialize<'de> for ClientCa {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The short form is a plain path; the place of the mapping's `file` is kept.
        let spanned = Spanned::<ClientCaOrPath>::deserialize(deserializer)?;
        let span = *spanned.span();
        Ok(match &*spanned {
            ClientCaOrPath::Path(path) => Self {
                file: Spanned::new(span, path.clone()),
                mode: kit::tls::ClientAuth::Required,
            },
            ClientCaOrPath::Map(map) => Self {
                file: map.file.clone(),
                mode: map.mode.unwrap_or(kit::tls::ClientAuth::Required),
            },
        })
    }
}

enum ClientCaOrPath {
    Path(String),
    Map(ClientCaMap),
}

impl<'de> Deserialize<'de> for ClientCaOrPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrMap::new(
            "a CA bundle file, or { file: FILE, mode: required | optional }",
            |path: &str| Ok(Self::Path(path.to_owned())),
            Self::Map,
        ))
    }
}

/// `hsts: { max_age: 365d, include_subdomains: true, preload: false }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hsts {
    pub max_age: Spanned<Period>,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

/// A route's `client_cert:` what the verified client certificate must name; every key given
/// must match (`subject` exactly, as RFC 4514 writes it; one of `dns`, one of `uri`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientCertRule {
    pub subject: Option<NonEmpty>,
    pub dns: Vec<NonEmpty>,
    pub uri: Vec<NonEmpty>,
}

// --- end of TLS ---

// --- composition (issue 14) ---

/// One part of a composition: `{ service, to, required, timeout, max_body }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposePart {
    pub service: Spanned<String>,
    /// The path (and query) on the service: literal text with `{param}` (the route's path),
    /// `{query.name}` (the client's query) and `{part.field}` (an earlier part's answer).
    pub to: Spanned<String>,
    /// A required part that fails fails the whole answer; default true, so that a failure is
    /// never hidden unless the file says it may be.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Default: the service's timeout. Covers the whole part: headers and body.
    #[serde(default)]
    pub timeout: Option<Period>,
    /// The largest answer taken from the part; past it the part fails (502).
    #[serde(default)]
    pub max_body: Option<Spanned<Size>>,
}

fn default_required() -> bool {
    true
}

// --- end of composition ---

// ---- rate limits (issue 13) ----

/// `{ requests: 100, per: 1m, burst: 20, by: user }`: at most `requests` in any window `per`,
/// at most `burst` at once (default: `requests`, the whole window), counted per `by`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: Spanned<u64>,
    pub per: Spanned<Period>,
    #[serde(default)]
    pub burst: Option<Spanned<u64>>,
    pub by: crate::limit::LimitBy,
}

// ---- end of rate limits ----

// --- response cache (issue 13) ---

/// The top-level `cache:` section: how much memory cached answers may take (the in-memory
/// store; with `state: redis` Redis holds them, under its own `maxmemory`), and the largest
/// body stored when a route does not say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    pub memory: Spanned<Size>,
    pub max_body: Spanned<Size>,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            memory: unplaced(Size(64 * 1024 * 1024)),
            max_body: unplaced(Size(1024 * 1024)),
        }
    }
}

/// A route's `cache: { ttl, stale_if_error, stale_while_revalidate, max_body }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCache {
    /// How long an answer stays fresh, at most (the service's `max-age` wins when shorter).
    pub ttl: Spanned<Period>,
    /// How long past its freshness an answer may still stand in for a failing service.
    #[serde(default)]
    pub stale_if_error: Option<Spanned<Period>>,
    /// How long past its freshness an answer is served at once while it is refreshed in the
    /// background (the service's `stale-while-revalidate` wins when it sends one).
    #[serde(default)]
    pub stale_while_revalidate: Option<Spanned<Period>>,
    /// Bodies larger than this pass through without being stored; default `cache.max_body`.
    #[serde(default)]
    pub max_body: Option<Spanned<Size>>,
}

// --- end of response cache ---

// --- request and response transforms (issue 14) ---
//
// Names, values and paths are read as text and checked in `validate`, each at its place: a
// value refused while the file is read would end the reading of its list or map there.

/// `name: value` entries as written (`{X-Tenant: acme}`), in no order: `validate` sorts them.
pub type Entries = std::collections::HashMap<Spanned<String>, Spanned<String>>;

/// A route's `request: { headers, query, validate_body }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteRequest {
    pub headers: RequestEdits,
    pub query: RequestEdits,
    /// JSON bodies are checked against the service's OpenAPI schema for the operation before
    /// they are forwarded (see `crate::openapi::body`).
    pub validate_body: bool,
}

/// `{ set: {name: value}, add: {name: value}, remove: [name], rename: {old: new} }`, for the
/// request's headers and its query alike.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestEdits {
    pub set: Entries,
    pub add: Entries,
    pub remove: Vec<Spanned<String>>,
    pub rename: Entries,
}

/// A route's `response: { headers, json, max_body }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteResponse {
    pub headers: ResponseHeaders,
    pub json: Option<Spanned<ResponseJson>>,
    /// Larger bodies (as they come, or decoded) pass through untouched.
    pub max_body: Option<Spanned<Size>>,
}

/// `headers: { set: {Name: value}, remove: [Name] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseHeaders {
    pub set: Entries,
    pub remove: Vec<Spanned<String>>,
}

/// `json: { allow: [path], deny: [path], rename: {path: name} }`; `allow` and `deny` exclude
/// each other.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseJson {
    pub allow: Vec<Spanned<String>>,
    pub deny: Vec<Spanned<String>>,
    pub rename: Entries,
}

// --- end of request and response transforms ---

/// `auth: public`, `auth: authenticated`, or `auth: { roles: [...], scopes: [...] }`.
#[derive(Debug)]
pub struct RouteAuth(pub AuthPolicy);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRules {
    #[serde(default)]
    roles: Vec<Claim>,
    #[serde(default)]
    scopes: Vec<Claim>,
}

impl<'de> Deserialize<'de> for RouteAuth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rules = deserializer.deserialize_any(TextOrMap::new(
            "public, authenticated, or { roles: [...], scopes: [...] }",
            |name: &str| -> Result<Result<AuthPolicy, AuthRules>, serde::de::value::Error> {
                match name {
                    "public" => Ok(Ok(AuthPolicy::Public)),
                    "authenticated" => Ok(Ok(AuthPolicy::Authenticated)),
                    other => Err(serde::de::value::Error::custom(format!(
                        "{other:?}: expected public, authenticated, or {{ roles: [...], scopes: [...] }}"
                    ))),
                }
            },
            Err,
        ))?;
        match rules {
            Ok(policy) => Ok(Self(policy)),
            Err(rules) if rules.roles.is_empty() && rules.scopes.is_empty() => {
                Err(D::Error::custom("give roles, scopes, or both"))
            }
            Err(rules) => Ok(Self(AuthPolicy::Require {
                roles: rules.roles.into_iter().map(|c| c.0).collect(),
                scopes: rules.scopes.into_iter().map(|c| c.0).collect(),
            })),
        }
    }
}

/// A setting written either as one string or as a mapping of its parts: the visitor takes
/// both, so the mapping's own fields keep their paths and positions (serde's `untagged` would
/// buffer the value and lose them, and answer only "did not match any variant").
struct TextOrMap<T, M, FT, FM> {
    expecting: &'static str,
    from_text: FT,
    from_map: FM,
    marker: std::marker::PhantomData<(T, M)>,
}

impl<T, M, FT, FM> TextOrMap<T, M, FT, FM> {
    fn new(expecting: &'static str, from_text: FT, from_map: FM) -> Self {
        Self {
            expecting,
            from_text,
            from_map,
            marker: std::marker::PhantomData,
        }
    }
}

impl<'de, T, M, FT, FM> Visitor<'de> for TextOrMap<T, M, FT, FM>
where
    M: Deserialize<'de>,
    FT: FnOnce(&str) -> Result<T, serde::de::value::Error>,
    FM: FnOnce(M) -> T,
{
    type Value = T;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.from_text)(text).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        M::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(self.from_map)
    }
}
