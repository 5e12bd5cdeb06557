//! From the file as typed ([`schema`]) to a [`GatewayConfig`]: the checks that compare values
//! (a route's service is defined, no two routes take the same method and path, a back-off
//! ceiling is not below the back-off…). Each mistake is added to the same [`Mistakes`] as the
//! parser's, at the place of the value it names, and checking goes on: one run reports all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kit::config::{Mistakes, Spanned};

use super::schema::{self, DEFAULT_MAX_BACKOFF};
use super::values::Period;
use super::{
    AuthEndpoints, AuthPolicy, BreakerSettings, CacheRule, CacheSettings, GatewayConfig,
    HealthCheck, Limits, RetrySettings, RouteSettings, ServiceSettings, ThrottleSettings,
    TokenSettings,
};
use crate::limit::policy::{MAX_REQUESTS, MAX_WINDOW};
use crate::limit::RatePolicy;
use crate::router::{RouteTable, TableError};
use crate::state::{RedisOptions, StateSettings};
use crate::transform::headers::{RequestHeader, ResponseHeader};
use crate::transform::json::{Filter, Rename};
use crate::transform::path::{FieldPath, FieldSet};
use crate::transform::query::ParamName;
use crate::transform::{
    JsonRules, QueryEdits, RequestHeaderEdits, RequestRules, ResponseHeaderEdits, ResponseRules,
    RouteTransform, DEFAULT_MAX_BODY, MAX_MAX_BODY,
};

mod compose;
mod tls;
mod upstream_tls;

/// The most retries a service may allow per request.
pub const MAX_RETRIES: u32 = 5;

/// Paths the gateway answers itself; no route may take them.
pub const RESERVED_PATHS: [&str; 3] = ["/.well-known/jwks.json", "/healthz", "/readyz"];

/// The longest an access token may live: long sessions use refresh tokens.
const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);

pub fn validate(raw: schema::File, mistakes: &mut Mistakes) -> GatewayConfig {
    let tokens = tokens(raw.tokens, mistakes);
    let services = services(raw.services, &tokens.audience, mistakes);
    let rate_limits = rate_limits(raw.rate_limits, mistakes);
    let auth = auth(raw.auth, &services, &rate_limits, mistakes);
    let cache = cache(&raw.cache, mistakes);
    let tls = tls::tls(raw.tls, raw.listen, raw.admin_listen, mistakes);
    let asks_for_certificates = tls
        .as_ref()
        .is_some_and(|tls| tls.files.client_ca.is_some());
    let routes = routes(
        raw.routes,
        &services,
        &auth,
        &rate_limits,
        &cache,
        asks_for_certificates,
        mistakes,
    );
    let (store, acquire_timeout) = (raw.store.url, raw.store.acquire_timeout.0);
    GatewayConfig {
        listen: raw.listen,
        tls,
        admin_listen: raw.admin_listen,
        access_log: raw.access_log,
        store,
        store_pool: kit::db::PoolOptions { acquire_timeout },
        state: state(raw.state),
        tokens,
        auth,
        limits: limits(raw.limits),
        cache,
        services,
        rate_limits,
        routes,
        drain_timeout: raw.drain_timeout.0,
        shutdown_delay: raw.shutdown_delay,
        watch: raw.watch.0,
        watch_settle: raw.watch_settle.0,
        telemetry: raw.telemetry.map(|telemetry| kit::trace::Telemetry {
            otlp_endpoint: telemetry.otlp_endpoint,
            service_name: telemetry.service_name.map_or_else(
                || crate::pipeline::observe::SERVER.to_owned(),
                |name| name.0,
            ),
            sample_ratio: telemetry.sample_ratio,
        }),
    }
}

fn tokens(raw: schema::Tokens, mistakes: &mut Mistakes) -> TokenSettings {
    if raw.access_ttl.0 > MAX_ACCESS_TTL {
        mistakes.at(
            "tokens.access_ttl",
            &raw.access_ttl,
            "must be at most 24h; long sessions use refresh tokens",
        );
    }
    TokenSettings {
        access_ttl: raw.access_ttl.0,
        refresh_ttl: raw.refresh_ttl.0,
        key_activation: raw.key_activation,
        issuer: raw.issuer.0,
        audience: raw.audience.0,
        algorithm: raw.algorithm,
    }
}

fn limits(raw: schema::Limits) -> Limits {
    Limits {
        max_body_bytes: raw.max_body.0,
        body_idle_timeout: raw.body_idle_timeout.0,
        header_read_timeout: raw.header_read_timeout.0,
        send_timeout: raw.send_timeout.0,
        max_connections: raw.max_connections.get(),
        max_connections_per_ip: raw.max_connections_per_ip.get(),
    }
}

fn state(raw: schema::State) -> StateSettings {
    let schema::State::Redis(redis) = raw else {
        return StateSettings::Memory;
    };
    let defaults = RedisOptions::default();
    let or = |value: Option<Period>, default: Duration| value.map_or(default, |p| p.0);
    StateSettings::Redis {
        url: redis.redis.0,
        prefix: redis.prefix.0,
        options: RedisOptions {
            connect: or(redis.connect_timeout, defaults.connect),
            command: or(redis.command_timeout, defaults.command),
            probe_interval: or(redis.probe_interval, defaults.probe_interval),
            store_sync: or(redis.store_sync, defaults.store_sync),
            expected_replicas: redis
                .replicas
                .map_or(defaults.expected_replicas, std::num::NonZeroU64::get),
        },
    }
}

fn services(
    raw: Option<BTreeMap<String, schema::Service>>,
    audience: &str,
    mistakes: &mut Mistakes,
) -> BTreeMap<String, ServiceSettings> {
    let Some(raw) = raw else {
        mistakes.push(
            "services".to_owned(),
            None,
            "missing: name the services routes send requests to".to_owned(),
        );
        return BTreeMap::new();
    };
    let mut services = BTreeMap::new();
    for (name, service) in raw {
        let field = format!("services.{name}");
        if !plain_name(&name) {
            mistakes.at(
                &field,
                &service.upstreams,
                "a service name is 1 to 64 letters, digits, `-` or `_`",
            );
        }
        if name == audience {
            mistakes.at(
                &field,
                &service.upstreams,
                "a service may not be named like the access tokens' audience",
            );
        }
        let settings = service_settings(&field, &service, mistakes);
        services.insert(name, settings);
    }
    services
}

fn service_settings(
    field: &str,
    service: &schema::Service,
    mistakes: &mut Mistakes,
) -> ServiceSettings {
    if service.upstreams.is_empty() {
        mistakes.at(
            format!("{field}.upstreams"),
            &service.upstreams,
            "at least one upstream URL is needed",
        );
    }
    let mut upstreams: Vec<http::Uri> = Vec::with_capacity(service.upstreams.len());
    for (i, upstream) in service.upstreams.iter().enumerate() {
        let uri = &upstream.0;
        if let Some(first) = upstreams
            .iter()
            .position(|seen| seen.authority() == uri.authority())
        {
            mistakes.at(
                format!("{field}.upstreams[{i}]"),
                upstream,
                format!(
                    "{:?} is listed twice (also upstreams[{first}])",
                    uri.to_string()
                ),
            );
            continue;
        }
        upstreams.push(uri.clone());
    }
    let tls = upstream_tls::client(field, service, mistakes);
    ServiceSettings {
        upstreams,
        protocol: service.protocol,
        tls,
        timeout: service.timeout.0,
        connect_timeout: service.connect_timeout.0,
        balance: service.balance,
        health: service.health.as_ref().map(health),
        breaker: breaker(field, &service.breaker, mistakes),
        retries: retries(field, &service.retries, mistakes),
        required: service.required,
    }
}

fn health(raw: &schema::Health) -> HealthCheck {
    HealthCheck {
        path: raw.path.0.clone(),
        interval: raw.interval.0,
        timeout: raw
            .timeout
            .map_or_else(|| raw.interval.0.min(Duration::from_secs(1)), |t| t.0),
        healthy_threshold: raw.healthy.get(),
        unhealthy_threshold: raw.unhealthy.get(),
    }
}

fn breaker(service: &str, raw: &schema::Breaker, mistakes: &mut Mistakes) -> BreakerSettings {
    let backoff = raw.backoff.0;
    let max_backoff = match &raw.max_backoff {
        Some(max) if max.0 < backoff => {
            mistakes.at(
                format!("{service}.breaker.max_backoff"),
                max,
                "must not be shorter than the backoff",
            );
            backoff
        }
        Some(max) => max.0,
        // An explicit backoff above the default ceiling raises the ceiling with it.
        None => DEFAULT_MAX_BACKOFF.0.max(backoff),
    };
    BreakerSettings {
        failures: raw.failures.get(),
        backoff,
        max_backoff,
        decay: raw.decay.map(|decay| decay.0),
    }
}

fn retries(service: &str, raw: &schema::Retries, mistakes: &mut Mistakes) -> RetrySettings {
    if *raw.attempts > MAX_RETRIES {
        mistakes.at(
            format!("{service}.retries.attempts"),
            &raw.attempts,
            format!("at most {MAX_RETRIES} retries per request"),
        );
    }
    RetrySettings {
        attempts: (*raw.attempts).min(MAX_RETRIES),
        budget_percent: raw.budget.0,
    }
}

fn auth(
    raw: schema::Auth,
    services: &BTreeMap<String, ServiceSettings>,
    rate_limits: &BTreeMap<String, Arc<RatePolicy>>,
    mistakes: &mut Mistakes,
) -> AuthEndpoints {
    let own = [
        ("auth.login", &raw.login),
        ("auth.token", &raw.token),
        ("auth.refresh", &raw.refresh),
        ("auth.logout", &raw.logout),
    ];
    for (i, (field, path)) in own.iter().enumerate() {
        if let Some((first, _)) = own[..i].iter().find(|(_, seen)| seen.0 == path.0) {
            mistakes.at(
                *field,
                path,
                format!("{:?} is already the path of {first}", path.0),
            );
        }
    }
    let credentials = raw.credentials;
    if !services.contains_key(credentials.service.as_str()) {
        mistakes.at(
            "auth.credentials.service",
            &credentials.service,
            format!(
                "service `{}` is not defined under `services` (login asks it to check passwords)",
                *credentials.service
            ),
        );
    }
    let throttle = raw.throttle;
    AuthEndpoints {
        login_path: raw.login.0.clone(),
        token_path: raw.token.0.clone(),
        refresh_path: raw.refresh.0.clone(),
        logout_path: raw.logout.0.clone(),
        cutoff_poll: raw.cutoff_poll.0,
        throttle: ThrottleSettings {
            per_username: throttle.per_username.get(),
            per_ip: throttle.per_ip.get(),
            per_device: throttle.per_device.get(),
            concurrent: throttle.concurrent.get(),
            window: throttle.window.0,
            device_ttl: throttle.device_ttl.0,
        },
        credentials_service: (*credentials.service).clone(),
        credentials_path: credentials.path.0,
        // Nobody is signed in yet: only policies counting by address or route make sense.
        login_rate_limit: taken_policies(
            "auth",
            &raw.rate_limit,
            &AuthPolicy::Public,
            rate_limits,
            mistakes,
        ),
    }
}

fn routes(
    raw: Option<Vec<schema::Route>>,
    services: &BTreeMap<String, ServiceSettings>,
    auth: &AuthEndpoints,
    rate_limits: &BTreeMap<String, Arc<RatePolicy>>,
    cache: &CacheSettings,
    asks_for_certificates: bool,
    mistakes: &mut Mistakes,
) -> Vec<RouteSettings> {
    let Some(raw) = raw else {
        mistakes.push(
            "routes".to_owned(),
            None,
            "missing: list the routes (`routes: []` for none)".to_owned(),
        );
        return Vec::new();
    };
    let gateway_paths = [
        &auth.login_path,
        &auth.token_path,
        &auth.refresh_path,
        &auth.logout_path,
    ];
    // Every route, with its index in the file: one refused for its own sake (an unknown
    // service…) still takes its method and path, so a later duplicate of it is named too.
    // When anything was refused the configuration is not used, so the stand-in policy of a
    // route without `auth` never serves.
    let mut all: Vec<(usize, RouteSettings, &schema::Route)> = Vec::new();
    for (index, route) in raw.iter().enumerate() {
        let field = format!("routes[{index}]");
        let path = &route.path.0;
        if RESERVED_PATHS.contains(&path.as_str()) || gateway_paths.contains(&path) {
            mistakes.at(
                format!("{field}.path"),
                &route.path,
                format!("{path:?} is answered by the gateway itself"),
            );
        }
        if route.methods.is_empty() {
            mistakes.at(
                format!("{field}.methods"),
                &route.path,
                "list at least one method",
            );
        }
        let compose = compose::route(&field, route, services, mistakes);
        if let Some(service) = &route.service {
            if !services.contains_key(service.as_str()) {
                mistakes.at(
                    format!("{field}.service"),
                    service,
                    unknown_service(service, services),
                );
            }
        }
        let policy = match &route.auth {
            Some(schema::RouteAuth(policy)) => policy.clone(),
            None => {
                mistakes.at(
                    format!("{field}.auth"),
                    &route.path,
                    "missing: say who may call the route (public, authenticated, or { roles: [...], scopes: [...] })",
                );
                AuthPolicy::Authenticated
            }
        };
        let settings = RouteSettings {
            path: path.clone(),
            methods: route.methods.iter().map(|m| m.0.clone()).collect(),
            service: route
                .service
                .as_ref()
                .map_or_else(String::new, |service| (**service).clone()),
            to: route
                .to
                .as_ref()
                .map_or_else(|| path.clone(), |to| (**to).clone()),
            rate_limit: taken_policies(&field, &route.rate_limit, &policy, rate_limits, mistakes),
            auth: policy,
            timeout: route.timeout.map(|t| t.0),
            cache: route
                .cache
                .as_ref()
                .map(|rule| route_cache(&field, route, rule, cache, mistakes)),
            request_checks: crate::config::RequestChecks {
                validate_body: route.request.as_ref().is_some_and(|r| r.validate_body),
            },
            transform: route_transform(&field, route, mistakes),
            websocket: route
                .websocket
                .as_ref()
                .map(|rule| route_websocket(&field, route, rule, mistakes)),
            compose,
            client_cert: tls::client_cert(
                &field,
                route.client_cert.as_ref(),
                asks_for_certificates,
                mistakes,
            ),
        };
        all.push((index, settings, route));
    }
    table_mistakes(&all, mistakes);
    all.into_iter().map(|(_, settings, _)| settings).collect()
}

// ---- rate limits (issue 13) ----

/// The named policies, each checked: a plain name, 1 to [`MAX_REQUESTS`] requests, a window of
/// whole seconds up to a year, a burst from 1 to `requests`. A refused policy is left out
/// (routes naming it say so too).
fn rate_limits(
    raw: BTreeMap<String, Spanned<schema::RateLimit>>,
    mistakes: &mut Mistakes,
) -> BTreeMap<String, Arc<RatePolicy>> {
    let mut policies = BTreeMap::new();
    for (name, policy) in raw {
        let field = format!("rate_limits.{name}");
        let before = mistakes.len();
        if !plain_name(&name) {
            mistakes.at(
                &field,
                &policy,
                "a policy name is 1 to 64 letters, digits, `-` or `_`",
            );
        }
        let requests = *policy.requests;
        let per = policy.per.0;
        if requests == 0 {
            mistakes.at(
                format!("{field}.requests"),
                &policy.requests,
                "must be at least 1 (a route that takes no request needs no route)",
            );
        } else if requests > MAX_REQUESTS {
            mistakes.at(
                format!("{field}.requests"),
                &policy.requests,
                format!(
                    "at most {MAX_REQUESTS} per window: the limiter keeps the time of every request \
                     admitted in the window, so this is what one caller's count may weigh; for a \
                     higher rate, say the same over a shorter window (e.g. 1000 per 1s, not \
                     3600000 per 1h)"
                ),
            );
        }
        if per.subsec_nanos() != 0 {
            mistakes.at(
                format!("{field}.per"),
                &policy.per,
                "must be whole seconds (the RateLimit-Policy header's window has no fractions)",
            );
        } else if per > MAX_WINDOW {
            mistakes.at(
                format!("{field}.per"),
                &policy.per,
                "must be at most a year",
            );
        }
        let burst = match &policy.burst {
            Some(burst) if **burst == 0 => {
                mistakes.at(
                    format!("{field}.burst"),
                    burst,
                    "must be at least 1 (or leave it out: the burst is then `requests`)",
                );
                1
            }
            Some(burst) if **burst > requests => {
                mistakes.at(
                    format!("{field}.burst"),
                    burst,
                    format!(
                        "at most `requests` ({requests}): no window lets more than `requests` \
                         through, so a larger burst would promise what is never allowed \
                         (leave it out for the whole window at once)"
                    ),
                );
                1
            }
            Some(burst) => **burst,
            None => requests,
        };
        if mistakes.len() > before {
            continue;
        }
        let policy = RatePolicy {
            name: Arc::from(name.as_str()),
            requests,
            per,
            burst,
            by: policy.by,
        };
        policies.insert(name, Arc::new(policy));
    }
    policies
}

/// The policies a route (or the login, as a public endpoint) takes under `field.rate_limit`:
/// each defined, none twice, none counting by a caller that a public route never has.
fn taken_policies(
    field: &str,
    names: &[Spanned<String>],
    auth: &AuthPolicy,
    rate_limits: &BTreeMap<String, Arc<RatePolicy>>,
    mistakes: &mut Mistakes,
) -> Vec<Arc<RatePolicy>> {
    let mut taken: Vec<Arc<RatePolicy>> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let at = format!("{field}.rate_limit[{i}]");
        let Some(policy) = rate_limits.get(name.as_str()) else {
            mistakes.at(
                at,
                name,
                format!(
                    "unknown rate-limit policy `{}`; defined: {}",
                    name.as_str(),
                    if rate_limits.is_empty() {
                        "none (add it under `rate_limits`)".to_owned()
                    } else {
                        rate_limits.keys().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            );
            continue;
        };
        if taken.iter().any(|seen| seen.name == policy.name) {
            mistakes.at(at, name, format!("`{}` is listed twice", name.as_str()));
            continue;
        }
        if policy.by.needs_caller() && !auth.needs_identity() {
            mistakes.at(
                at,
                name,
                format!(
                    "`{}` counts by {}, but nobody is signed in there (a public route, or the login): count by ip or route",
                    name.as_str(),
                    policy.by.as_str()
                ),
            );
            continue;
        }
        taken.push(Arc::clone(policy));
    }
    taken
}

// ---- end of rate limits ----

/// Why a route (or a composition's part) cannot name `service`.
fn unknown_service(service: &str, services: &BTreeMap<String, ServiceSettings>) -> String {
    format!(
        "unknown service `{service}`; defined: {}",
        services.keys().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// A name for a service, a policy or a composition's part: 1 to 64 letters, digits, `-` or `_`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

// --- response cache (issue 13) ---

/// The longest a cached answer may stay fresh, and the longest it may stand in for a failing
/// service after that: the in-memory store keeps its invalidation marks this long.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_STALE_IF_ERROR: Duration = Duration::from_secs(24 * 3600);

fn cache(raw: &schema::Cache, mistakes: &mut Mistakes) -> CacheSettings {
    if raw.max_body.0 > raw.memory.0 {
        mistakes.at(
            "cache.max_body",
            &raw.max_body,
            "must not be larger than cache.memory (such a body could never be stored)",
        );
    }
    CacheSettings {
        memory_bytes: raw.memory.0,
        max_body_bytes: raw.max_body.0,
    }
}

/// A route's `cache`: only for a route that serves GET or HEAD, within the caps.
fn route_cache(
    field: &str,
    route: &schema::Route,
    rule: &kit::config::Spanned<schema::RouteCache>,
    cache: &CacheSettings,
    mistakes: &mut Mistakes,
) -> CacheRule {
    let field = format!("{field}.cache");
    // Entries are only ever filled by a GET (a HEAD answer has no body to store): a route
    // without GET could never store anything, whatever else it lists.
    let fillable = route.methods.iter().any(|m| m.0 == http::Method::GET);
    if !fillable {
        mistakes.at(
            &field,
            rule,
            "only GET answers are stored (HEAD is answered from them): list GET in methods, or drop `cache`",
        );
    }
    if rule.ttl.0 > MAX_CACHE_TTL {
        mistakes.at(format!("{field}.ttl"), &rule.ttl, "must be at most 24h");
    }
    let mut window = |name: &str, value: &Option<Spanned<Period>>| {
        value.as_ref().map_or(Duration::ZERO, |s| {
            if s.0 > MAX_STALE_IF_ERROR {
                mistakes.at(format!("{field}.{name}"), s, "must be at most 24h");
            }
            s.0.min(MAX_STALE_IF_ERROR)
        })
    };
    let stale = window("stale_if_error", &rule.stale_if_error);
    let revalidate = window("stale_while_revalidate", &rule.stale_while_revalidate);
    let max_body = rule.max_body.as_ref().map_or(cache.max_body_bytes, |m| {
        if m.0 > cache.memory_bytes {
            mistakes.at(
                format!("{field}.max_body"),
                m,
                "must not be larger than cache.memory (such a body could never be stored)",
            );
        }
        m.0
    });
    CacheRule {
        ttl: rule.ttl.0.min(MAX_CACHE_TTL),
        stale_if_error: stale,
        stale_while_revalidate: revalidate,
        max_body_bytes: max_body,
    }
}

// --- end of response cache ---

// --- WebSocket (issue 16) ---

/// The idle timeout of a route that does not name one: long enough for a quiet chat between
/// pings (browsers send none of their own; servers commonly ping every 30 to 60 s).
pub const DEFAULT_WEBSOCKET_IDLE: Duration = Duration::from_secs(5 * 60);
/// The lifetime of a route that does not name one; an access token expires long before.
pub const DEFAULT_WEBSOCKET_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The longest either may be: a socket nobody can close for longer is an operator's mistake.
pub const MAX_WEBSOCKET_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// A route's `websocket`: only on a route that takes GET (the upgrade is a GET) and forwards to
/// one service (a composition has no single connection to splice), within the caps.
fn route_websocket(
    field: &str,
    route: &schema::Route,
    rule: &Spanned<schema::RouteWebSocket>,
    mistakes: &mut Mistakes,
) -> crate::config::WebSocketRule {
    let field = format!("{field}.websocket");
    if !route.methods.iter().any(|m| m.0 == http::Method::GET) {
        mistakes.at(
            &field,
            rule,
            "a WebSocket upgrade is a GET request: list GET in methods, or drop `websocket`",
        );
    }
    if route.compose.is_some() {
        mistakes.at(
            &field,
            rule,
            "a composition route has no single service to open a WebSocket to",
        );
    }
    let mut period = |name: &str, value: &Option<Spanned<Period>>, default: Duration| {
        let Some(value) = value else { return default };
        if value.0.is_zero() {
            mistakes.at(format!("{field}.{name}"), value, "must be longer than zero");
            return default;
        }
        if value.0 > MAX_WEBSOCKET_PERIOD {
            mistakes.at(format!("{field}.{name}"), value, "must be at most 7d");
        }
        value.0.min(MAX_WEBSOCKET_PERIOD)
    };
    let idle_timeout = period("idle_timeout", &rule.idle_timeout, DEFAULT_WEBSOCKET_IDLE);
    let max_lifetime = period(
        "max_lifetime",
        &rule.max_lifetime,
        DEFAULT_WEBSOCKET_LIFETIME,
    );
    crate::config::WebSocketRule {
        idle_timeout,
        max_lifetime,
    }
}

// --- end of WebSocket ---

// --- request and response transforms (issue 14) ---

/// A route's `request` and `response` edits, every name, value and path checked at its place;
/// sections that edit nothing leave the route without transforms, so it pays nothing.
fn route_transform(field: &str, route: &schema::Route, mistakes: &mut Mistakes) -> RouteTransform {
    let request = route.request.as_ref().map(|request| {
        let field = format!("{field}.request");
        let headers = &request.headers;
        let query = &request.query;
        let header = |text: &str| RequestHeader::parse(text).map(RequestHeader::into_name);
        let param = |text: &str| ParamName::parse(text).map(|name| name.0);
        let text = |text: &str| Ok::<_, String>(text.to_owned());
        let at = |part: &str| format!("{field}.{part}");
        RequestRules {
            headers: RequestHeaderEdits {
                remove: each_parsed(&at("headers.remove"), &headers.remove, header, mistakes),
                rename: each_entry(
                    &at("headers.rename"),
                    &headers.rename,
                    header,
                    header,
                    mistakes,
                ),
                set: each_entry(
                    &at("headers.set"),
                    &headers.set,
                    header,
                    header_value,
                    mistakes,
                ),
                add: each_entry(
                    &at("headers.add"),
                    &headers.add,
                    header,
                    header_value,
                    mistakes,
                ),
            },
            query: QueryEdits {
                remove: each_parsed(&at("query.remove"), &query.remove, param, mistakes),
                rename: each_entry(&at("query.rename"), &query.rename, param, param, mistakes),
                set: each_entry(&at("query.set"), &query.set, param, text, mistakes),
                add: each_entry(&at("query.add"), &query.add, param, text, mistakes),
            },
        }
    });
    let response = route.response.as_ref().map(|response| {
        let field = format!("{field}.response");
        let at = |part: &str| format!("{field}.{part}");
        let json = response.json.as_ref().map(|json| {
            let allow = each_parsed(&at("json.allow"), &json.allow, FieldPath::parse, mistakes);
            let deny = each_parsed(&at("json.deny"), &json.deny, FieldPath::parse, mistakes);
            if !json.allow.is_empty() && !json.deny.is_empty() {
                mistakes.at(
                    at("json"),
                    json,
                    "give `allow` or `deny`, not both: which would win is a guess",
                );
            }
            let filter = if !allow.is_empty() {
                Some(Filter::Allow(FieldSet::new(&allow)))
            } else if !deny.is_empty() {
                Some(Filter::Deny(FieldSet::new(&deny)))
            } else {
                None
            };
            let rename = each_entry(
                &at("json.rename"),
                &json.rename,
                Rename::source,
                Rename::target,
                mistakes,
            );
            JsonRules {
                filter,
                rename: rename
                    .into_iter()
                    .map(|(from, to)| Rename { from, to })
                    .collect(),
            }
        });
        let max_body = response.max_body.as_ref().map_or(DEFAULT_MAX_BODY, |max| {
            if max.0 > MAX_MAX_BODY {
                mistakes.at(
                    at("max_body"),
                    max,
                    format!("must be at most {MAX_MAX_BODY} bytes (16MiB): each body rewritten is held whole"),
                );
            }
            max.0.min(MAX_MAX_BODY)
        });
        let header = |text: &str| ResponseHeader::parse(text).map(ResponseHeader::into_name);
        ResponseRules {
            headers: ResponseHeaderEdits {
                remove: each_parsed(&at("headers.remove"), &response.headers.remove, header, mistakes),
                set: each_entry(&at("headers.set"), &response.headers.set, header, header_value, mistakes),
            },
            json: json.filter(|json| json.filter.is_some() || !json.rename.is_empty()),
            max_body,
        }
    });
    RouteTransform {
        request: request
            .filter(|rules| !rules.headers.is_empty() || !rules.query.is_empty())
            .map(Arc::new),
        response: response
            .filter(|rules| !rules.headers.is_empty() || rules.json.is_some())
            .map(Arc::new),
    }
}

fn header_value(text: &str) -> Result<http::HeaderValue, String> {
    http::HeaderValue::from_str(text)
        .map_err(|_| "not a header value (line breaks or control characters)".to_owned())
}

/// Each item of a list read with `parse`; a refused one is a mistake at its place.
fn each_parsed<T>(
    field: &str,
    items: &[Spanned<String>],
    parse: impl Fn(&str) -> Result<T, String>,
    mistakes: &mut Mistakes,
) -> Vec<T> {
    let mut parsed = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match parse(item) {
            Ok(value) => parsed.push(value),
            Err(message) => mistakes.at(format!("{field}[{index}]"), item, message),
        }
    }
    parsed
}

/// Each entry of a map read with `key` and `value`, in the order of the keys' text; a refused
/// key or value is a mistake at its place.
fn each_entry<K, V>(
    field: &str,
    entries: &schema::Entries,
    key: impl Fn(&str) -> Result<K, String>,
    value: impl Fn(&str) -> Result<V, String>,
    mistakes: &mut Mistakes,
) -> Vec<(K, V)> {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
    let mut parsed = Vec::with_capacity(sorted.len());
    for (name, text) in sorted {
        let field = format!("{field}.{}", name.as_str());
        let name = key(name).map_err(|message| mistakes.at(&field, name, message));
        let text = value(text).map_err(|message| mistakes.at(&field, text, message));
        if let (Ok(name), Ok(text)) = (name, text) {
            parsed.push((name, text));
        }
    }
    parsed
}

// --- end of request and response transforms ---

/// The routes a table cannot hold (a method and path taken twice, a path the router refuses, a
/// target naming a parameter the path lacks): the table is built route by route, so every
/// such route is named, by its index in the file.
fn table_mistakes(routes: &[(usize, RouteSettings, &schema::Route)], mistakes: &mut Mistakes) {
    let settings: Vec<RouteSettings> = routes.iter().map(|(_, s, _)| s.clone()).collect();
    if RouteTable::build(&settings).is_ok() {
        // The usual case, in one pass; route by route only to name every culprit.
        return;
    }
    let mut accepted: Vec<RouteSettings> = Vec::with_capacity(routes.len());
    let mut index_of: Vec<usize> = Vec::with_capacity(routes.len());
    for (index, settings, route) in routes {
        accepted.push(settings.clone());
        let Err(error) = RouteTable::build(&accepted) else {
            index_of.push(*index);
            continue;
        };
        accepted.pop();
        let field = format!("routes[{index}]");
        match error {
            TableError::Duplicate {
                first,
                method,
                path,
                ..
            } => mistakes.at(
                field,
                &route.path,
                format!(
                    "{method} {path} is already routed by routes[{}]",
                    index_of.get(first).copied().unwrap_or(first)
                ),
            ),
            TableError::Conflict { path, reason, .. } => mistakes.at(
                format!("{field}.path"),
                &route.path,
                format!("{path:?} cannot be routed: {reason}"),
            ),
            TableError::Target { reason, .. } => match &route.to {
                Some(to) => mistakes.at(format!("{field}.to"), to, reason),
                None => mistakes.at(format!("{field}.to"), &route.path, reason),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Vars};
    use crate::config::{Balance, ConfigError};

    fn config(service: &str, extra: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "{extra}\nservices:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\", \"http://127.0.0.1:8111\"]{service} }}\n\
             routes:\n  - {{ path: /api/users, methods: [GET], service: users, auth: public }}\n"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    #[test]
    fn resilience_settings_have_defaults() {
        let config = config("", "").unwrap();
        let users = &config.services["users"];
        assert_eq!(users.balance, Balance::LeastRequests);
        assert_eq!(users.health, None, "no active checks unless asked for");
        assert_eq!(users.breaker.failures, 5);
        assert_eq!(users.breaker.backoff, Duration::from_secs(10));
        assert_eq!(users.retries.attempts, 2);
        assert_eq!(users.retries.budget_percent, 20);
        assert!(users.required);
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert_eq!(config.watch, Some(Duration::from_secs(1)));
        assert_eq!(config.watch_settle, Duration::from_millis(200));
    }

    #[test]
    fn resilience_settings_are_read_in_both_forms() {
        let short = config(", health: /ready, balance: round_robin", "watch: off").unwrap();
        let users = &short.services["users"];
        assert_eq!(users.balance, Balance::RoundRobin);
        assert_eq!(users.health.as_ref().unwrap().path, "/ready");
        assert_eq!(
            users.health.as_ref().unwrap().timeout,
            Duration::from_secs(1),
            "a health check waits a second at most by default"
        );
        assert_eq!(users.breaker.decay, None, "decays after the last back-off");
        assert_eq!(short.watch, None);

        let often = config(", health: { interval: 300ms }, breaker: { decay: 2m }", "").unwrap();
        let users = &often.services["users"];
        assert_eq!(
            users.health.as_ref().unwrap().timeout,
            Duration::from_millis(300),
            "nor longer than the interval"
        );
        assert_eq!(users.breaker.decay, Some(Duration::from_secs(120)));

        let long = config(
            ", health: { interval: 2s, timeout: 500ms, healthy: 1, unhealthy: 4 }, breaker: { failures: 2, backoff: 1s, max_backoff: 1m }, retries: { attempts: 0, budget: 5% }, required: false",
            "drain_timeout: 5s",
        )
        .unwrap();
        let users = &long.services["users"];
        let health = users.health.as_ref().unwrap();
        assert_eq!(health.path, "/healthz");
        assert_eq!(health.interval, Duration::from_secs(2));
        assert_eq!(
            (health.healthy_threshold, health.unhealthy_threshold),
            (1, 4)
        );
        assert_eq!(users.breaker.max_backoff, Duration::from_secs(60));
        assert_eq!(users.retries.attempts, 0);
        assert_eq!(users.retries.budget_percent, 5);
        assert!(!users.required);
        assert_eq!(long.drain_timeout, Duration::from_secs(5));
    }

    #[test]
    fn each_bad_resilience_setting_is_refused_naming_its_field() {
        let cases = [
            (", balance: random", "", "services.users.balance"),
            (", health: healthz", "", "services.users.health"),
            (
                ", health: { interval: often }",
                "",
                "services.users.health.interval",
            ),
            (
                ", health: { healthy: 0 }",
                "",
                "services.users.health.healthy",
            ),
            (
                ", breaker: { failures: 0 }",
                "",
                "services.users.breaker.failures",
            ),
            (
                ", breaker: { backoff: 1m, max_backoff: 10s }",
                "",
                "services.users.breaker.max_backoff",
            ),
            (
                ", retries: { attempts: 9 }",
                "",
                "services.users.retries.attempts",
            ),
            (
                ", retries: { budget: lots }",
                "",
                "services.users.retries.budget",
            ),
            (
                ", retries: { budget: 120% }",
                "",
                "services.users.retries.budget",
            ),
            ("", "drain_timeout: 0s", "drain_timeout"),
            ("", "watch: sometimes", "watch"),
            ("", "watch_settle: 0s", "watch_settle"),
        ];
        for (service, extra, field) in cases {
            let error = config(service, extra).unwrap_err().to_string();
            assert!(error.contains(field), "{service} {extra}: {error}");
        }
    }

    #[test]
    fn connection_and_body_limits_have_defaults_and_are_read() {
        let defaults = config("", "").unwrap().limits;
        assert_eq!(defaults.body_idle_timeout, Duration::from_secs(10));
        assert_eq!(defaults.header_read_timeout, Duration::from_secs(10));
        assert_eq!(defaults.send_timeout, Duration::from_secs(30));
        assert_eq!(defaults.max_connections, 16_384);
        assert_eq!(defaults.max_connections_per_ip, 512);

        let set = config(
            "",
            "limits: { max_body: 4KiB, body_idle_timeout: 2s, header_read_timeout: 500ms, send_timeout: 5s, max_connections: 100, max_connections_per_ip: 10 }",
        )
        .unwrap()
        .limits;
        assert_eq!(set.max_body_bytes, 4096);
        assert_eq!(set.body_idle_timeout, Duration::from_secs(2));
        assert_eq!(set.header_read_timeout, Duration::from_millis(500));
        assert_eq!(set.send_timeout, Duration::from_secs(5));
        assert_eq!((set.max_connections, set.max_connections_per_ip), (100, 10));

        for (extra, field) in [
            (
                "limits: { body_idle_timeout: 0s }",
                "limits.body_idle_timeout",
            ),
            (
                "limits: { header_read_timeout: soon }",
                "limits.header_read_timeout",
            ),
            ("limits: { send_timeout: 0s }", "limits.send_timeout"),
            ("limits: { max_connections: 0 }", "limits.max_connections"),
            (
                "limits: { max_connections_per_ip: 0 }",
                "limits.max_connections_per_ip",
            ),
        ] {
            let error = config("", extra).unwrap_err().to_string();
            assert!(error.contains(field), "{extra}: {error}");
        }
    }

    #[test]
    fn an_instance_listed_twice_is_refused() {
        let text = "services:\n  users: { upstreams: [\"http://127.0.0.1:8101\", \"http://127.0.0.1:8101/\"] }\n\
                    routes: []\n";
        let error = parse(text, "gateway.yaml", &Vars::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("services.users.upstreams[1]"), "{error}");
    }
}

#[cfg(test)]
mod outage_settings_tests {
    use std::time::Duration;

    use crate::config::{parse, ConfigError, GatewayConfig, Vars};
    use crate::state::{RedisOptions, StateSettings};

    fn config(head: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "{head}\nservices:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\n\
             routes:\n  - {{ path: /api/users, methods: [GET], service: users, auth: public }}\n"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    #[test]
    fn the_store_waits_two_seconds_by_default_and_redis_a_quarter_second() {
        let defaults = config("store: \"sqlite://x.db\"\nstate: redis://127.0.0.1:6379").unwrap();
        assert_eq!(defaults.store_pool.acquire_timeout, Duration::from_secs(2));
        let StateSettings::Redis { options, .. } = defaults.state else {
            panic!("Redis state expected");
        };
        assert_eq!(options, RedisOptions::default());
        assert_eq!(options.command, Duration::from_millis(250));
        assert_eq!(options.connect, Duration::from_millis(250));
    }

    #[test]
    fn outage_settings_are_read_and_bad_ones_named() {
        let set = config(
            "store: { url: \"postgres://db/x\", acquire_timeout: 500ms }\n\
             state: { redis: \"redis://r\", connect_timeout: 100ms, command_timeout: 50ms, probe_interval: 2s, store_sync: 10s, replicas: 3 }",
        )
        .unwrap();
        assert_eq!(set.store.expose_secret(), "postgres://db/x");
        assert_eq!(set.store_pool.acquire_timeout, Duration::from_millis(500));
        let StateSettings::Redis { options, .. } = set.state else {
            panic!("Redis state expected");
        };
        assert_eq!(options.expected_replicas, 3);
        assert_eq!(
            (
                options.connect,
                options.command,
                options.probe_interval,
                options.store_sync
            ),
            (
                Duration::from_millis(100),
                Duration::from_millis(50),
                Duration::from_secs(2),
                Duration::from_secs(10)
            )
        );
        for (head, field) in [
            (
                "store: { url: \"sqlite://x.db\", acquire_timeout: 0s }",
                "store.acquire_timeout",
            ),
            ("store: { url: \"mysql://x\" }", "store"),
            (
                "state: { redis: \"redis://r\", command_timeout: soon }",
                "state.command_timeout",
            ),
            (
                "state: { redis: \"redis://r\", replicas: 0 }",
                "state.replicas",
            ),
        ] {
            let error = config(head).unwrap_err().to_string();
            assert!(error.contains(field), "{head}: {error}");
        }
    }

    #[test]
    fn redis_is_reached_over_tcp_tls_or_a_unix_socket_and_nothing_else() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://cache:6380",
            "redis+unix:///run/redis/redis.sock",
            "unix:///run/redis/redis.sock",
        ] {
            let set = config(&format!("state: \"{url}\""))
                .unwrap_or_else(|error| panic!("{url} is a Redis address: {error}"));
            let StateSettings::Redis { url: read, .. } = set.state else {
                panic!("{url}: Redis state expected");
            };
            assert_eq!(read.expose_secret(), url);
        }
        for url in ["http://127.0.0.1:6379", "/run/redis/redis.sock", "unix:"] {
            let error = config(&format!("state: {{ redis: \"{url}\" }}"))
                .expect_err(url)
                .to_string();
            assert!(error.contains("state"), "{url}: {error}");
        }
    }
}

#[cfg(test)]
mod rate_limit_tests {
    use std::time::Duration;

    use crate::config::{parse, ConfigError, GatewayConfig, Vars};
    use crate::limit::LimitBy;

    fn config(policies: &str, route: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "services:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\n\
             rate_limits:\n{policies}\n\
             routes:\n  - {{ path: /api/users, methods: [GET], service: users, {route} }}\n"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    #[test]
    fn a_policy_is_read_with_the_burst_defaulting_to_the_requests() {
        let config = config(
            "  per-user: { requests: 100, per: 1m, by: user }\n  login-ip: { requests: 30, per: 1m, burst: 5, by: ip }",
            "auth: authenticated, rate_limit: [per-user, login-ip]",
        )
        .unwrap();
        let route = &config.routes[0];
        let names: Vec<&str> = route.rate_limit.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["per-user", "login-ip"], "in the route's order");
        let per_user = &route.rate_limit[0];
        assert_eq!(
            (per_user.requests, per_user.per, per_user.burst, per_user.by),
            (100, Duration::from_secs(60), 100, LimitBy::User)
        );
        assert_eq!(route.rate_limit[1].burst, 5);
        assert_eq!(
            per_user.limit().smoothing,
            None,
            "the burst is the whole window"
        );
        let login = route.rate_limit[1].limit();
        assert_eq!((login.requests, login.window_us), (30, 60_000_000));
        assert_eq!(
            login.smoothing.map(|rate| rate.emission_us),
            Some(2_000_000)
        );
    }

    #[test]
    fn each_bad_policy_or_reference_is_refused_at_its_place() {
        let cases = [
            (
                "  p: { requests: 0, per: 1s, by: route }",
                "auth: public, rate_limit: [p]",
                "gateway.yaml:4:",
                "rate_limits.p.requests: must be at least 1",
            ),
            (
                "  p: { requests: 10, per: 0s, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.per: must be longer than zero",
            ),
            (
                "  p: { requests: 10, per: 1500ms, by: route }",
                "auth: public",
                "",
                "rate_limits.p.per: must be whole seconds",
            ),
            (
                "  p: { requests: 10, per: 400d, by: route }",
                "auth: public",
                "",
                "rate_limits.p.per: must be at most a year",
            ),
            (
                "  p: { requests: 100001, per: 1h, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.requests: at most 100000 per window: the limiter keeps the time",
            ),
            (
                "  p: { requests: -5, per: 1s, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.requests",
            ),
            (
                "  p: { requests: 2.5, per: 1s, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.requests",
            ),
            (
                "  p: { requests: ten, per: 1s, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.requests",
            ),
            (
                "  p: { requests: 10, per: -1s, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.per",
            ),
            (
                "  p: { requests: 10, per: 1s, burst: 11, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.burst: at most `requests` (10): no window lets more",
            ),
            (
                "  p: { requests: 10, per: 1s, burst: -1, by: route }",
                "auth: public",
                "gateway.yaml:4:",
                "rate_limits.p.burst",
            ),
            (
                "  p: { requests: 99999999999999999999999, per: 1s, by: route }",
                "auth: public",
                "",
                "rate_limits.p.requests",
            ),
            (
                "  p: { requests: 10, per: 1s, burst: 0, by: route }",
                "auth: public",
                "",
                "rate_limits.p.burst: must be at least 1",
            ),
            (
                "  p: { requests: 10, per: 1s, by: everyone }",
                "auth: public",
                "",
                "rate_limits.p.by",
            ),
            (
                "  p: { requests: 10, per: 1s, by: ip, window: 1s }",
                "auth: public",
                "",
                "rate_limits.p",
            ),
            (
                "  \"a:b\": { requests: 10, per: 1s, by: ip }",
                "auth: public",
                "",
                "a policy name is 1 to 64 letters",
            ),
            (
                "  p: { requests: 10, per: 1s, by: ip }",
                "auth: public, rate_limit: [q]",
                "gateway.yaml:6:",
                "routes[0].rate_limit[0]: unknown rate-limit policy `q`; defined: p",
            ),
            (
                "  p: { requests: 10, per: 1s, by: ip }",
                "auth: public, rate_limit: [p, p]",
                "",
                "routes[0].rate_limit[1]: `p` is listed twice",
            ),
            (
                "  p: { requests: 10, per: 1s, by: user }",
                "auth: public, rate_limit: [p]",
                "",
                "routes[0].rate_limit[0]: `p` counts by user, but nobody is signed in there",
            ),
            (
                "  p: { requests: 10, per: 1s, by: client }",
                "auth: public, rate_limit: [p]",
                "",
                "counts by client, but nobody is signed in there",
            ),
        ];
        for (policies, route, place, expected) in cases {
            let error = config(policies, route).unwrap_err().to_string();
            assert!(error.contains(expected), "{policies} / {route}: {error}");
            assert!(error.contains(place), "{policies}: not at {place}: {error}");
        }
    }

    #[test]
    fn the_login_takes_policies_counting_addresses_never_callers() {
        let ok = config(
            "  login-ip: { requests: 30, per: 1m, by: ip }\nauth: { rate_limit: [login-ip] }",
            "auth: public",
        )
        .unwrap();
        assert_eq!(&*ok.auth.login_rate_limit[0].name, "login-ip");
        let error = config(
            "  per-user: { requests: 30, per: 1m, by: user }\nauth: { rate_limit: [per-user, nope] }",
            "auth: public",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "auth.rate_limit[0]: `per-user` counts by user, but nobody is signed in there"
            ),
            "{error}"
        );
        assert!(
            error.contains("auth.rate_limit[1]: unknown rate-limit policy `nope`"),
            "{error}"
        );
    }

    #[test]
    fn every_rate_limit_mistake_is_reported_at_once() {
        let error = config(
            "  a: { requests: 0, per: 1s, by: ip }\n  b: { requests: 5, per: 1s, burst: 0, by: user }",
            "auth: public, rate_limit: [a, b, c]",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "rate_limits.a.requests",
            "rate_limits.b.burst",
            "routes[0].rate_limit[2]",
        ] {
            assert!(error.contains(expected), "{expected} missing: {error}");
        }
    }
}

#[cfg(test)]
mod cache_settings_tests {
    use std::time::Duration;

    use crate::config::{parse, CacheRule, ConfigError, GatewayConfig, Vars};

    fn config(head: &str, route: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "{head}\nservices:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\n\
             routes:\n  - {{ path: /api/users, methods: [GET, POST], service: users, auth: public{route} }}\n  \
             - {{ path: /api/write, methods: [POST], service: users, auth: public{route} }}\n"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    #[test]
    fn the_cache_is_bounded_by_default_and_a_route_opts_in_with_its_ttl() {
        let defaults = config("", "").unwrap();
        assert_eq!(defaults.cache.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(defaults.cache.max_body_bytes, 1024 * 1024);
        assert!(defaults.routes.iter().all(|r| r.cache.is_none()), "opt-in");

        let text = "cache: { memory: 8MiB, max_body: 64KiB }\nservices:\n  users: { upstreams: [\"http://127.0.0.1:8101\"] }\n\
                    routes:\n  - { path: /a, methods: [GET], service: users, auth: public, cache: { ttl: 30s, stale_if_error: 5m, stale_while_revalidate: 10s } }\n  \
                    - { path: /b, methods: [GET, HEAD], service: users, auth: authenticated, cache: { ttl: 1s, max_body: 1KiB } }\n";
        let set = parse(text, "gateway.yaml", &Vars::new()).unwrap();
        assert_eq!(set.cache.memory_bytes, 8 * 1024 * 1024);
        assert_eq!(
            set.routes[0].cache,
            Some(CacheRule {
                ttl: Duration::from_secs(30),
                stale_if_error: Duration::from_secs(300),
                stale_while_revalidate: Duration::from_secs(10),
                max_body_bytes: 64 * 1024,
            })
        );
        assert_eq!(
            set.routes[1].cache,
            Some(CacheRule {
                ttl: Duration::from_secs(1),
                stale_if_error: Duration::ZERO,
                stale_while_revalidate: Duration::ZERO,
                max_body_bytes: 1024,
            })
        );
    }

    #[test]
    fn every_cache_mistake_is_named_in_one_run() {
        let text = "cache: { memory: 1MiB, max_body: 2MiB }\nservices:\n  users: { upstreams: [\"http://127.0.0.1:8101\"] }\n\
                    routes:\n  - { path: /a, methods: [GET], service: users, auth: public, cache: { ttl: 2d, stale_if_error: 3d, stale_while_revalidate: 25h } }\n  \
                    - { path: /b, methods: [GET], service: users, auth: public, cache: { ttl: 1s, max_body: lots } }\n  \
                    - { path: /c, methods: [POST], service: users, auth: public, cache: { ttl: 1s } }\n  \
                    - { path: /d, methods: [HEAD], service: users, auth: public, cache: { ttl: 1s } }\n";
        let error = parse(text, "gateway.yaml", &Vars::new())
            .unwrap_err()
            .to_string();
        for field in [
            "cache.max_body",
            "routes[0].cache.ttl",
            "routes[0].cache.stale_if_error",
            "routes[0].cache.stale_while_revalidate",
            "routes[1].cache.max_body",
            "routes[2].cache",
            "routes[3].cache",
        ] {
            assert!(error.contains(field), "{field} is named: {error}");
        }

        let refusals = [
            (
                ", cache: { ttl: 10s }",
                "routes[1].cache",
                "a POST-only route cannot cache",
            ),
            (", cache: { ttl: 0s }", "routes[0].cache.ttl", "a zero ttl"),
            (
                ", cache: { ttl: 10s, vary: all }",
                "routes[0].cache",
                "an unknown key",
            ),
            (", cache: 10s", "routes[0].cache", "not a mapping"),
            (
                ", cache: { ttl: 10s, stale_while_revalidate: soon }",
                "routes[0].cache.stale_while_revalidate",
                "not a period",
            ),
            (", cache: {}", "routes[0].cache", "no ttl"),
        ];
        for (route, field, why) in refusals {
            let error = config("", route).unwrap_err().to_string();
            assert!(error.contains(field), "{why}: {error}");
        }
    }

    #[test]
    fn the_memory_bound_needs_a_restart_while_route_rules_reload() {
        let file = |memory: &str, ttl: &str| {
            let text = format!(
                "cache: {{ memory: {memory} }}\nservices:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\n\
                 routes:\n  - {{ path: /a, methods: [GET], service: users, auth: public, cache: {{ ttl: {ttl} }} }}\n"
            );
            parse(&text, "gateway.yaml", &Vars::new()).unwrap()
        };
        let running = file("8MiB", "10s");
        let next = file("16MiB", "20s");
        assert_eq!(next.needs_restart(&running), vec!["cache.memory"]);
        let applied = next.keeping_start_settings_of(&running);
        assert_eq!(
            applied.cache.memory_bytes,
            8 * 1024 * 1024,
            "kept until a restart"
        );
        assert_eq!(
            applied.routes[0].cache.map(|rule| rule.ttl),
            Some(Duration::from_secs(20)),
            "a route's rule changes live"
        );
    }

    #[test]
    fn a_route_body_limit_above_the_memory_bound_is_refused() {
        let error = config(
            "cache: { memory: 1MiB }",
            ", cache: { ttl: 1s, max_body: 2MiB }",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("routes[0].cache.max_body"), "{error}");
    }
}

#[cfg(test)]
mod transform_settings_tests {
    use crate::config::{parse, ConfigError, GatewayConfig, Vars};
    use crate::transform::DEFAULT_MAX_BODY;

    fn config(route: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "services:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\n\
             routes:\n  - path: /api/items\n    methods: [GET]\n    service: users\n    to: /items\n    auth: public\n{route}"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    #[test]
    fn the_issues_example_is_read_into_rules() {
        let set = config(
            "    request:  { headers: { set: {X-A: b}, add: {}, remove: [X-Debug], rename: {X-Old: X-New} },\n\
             \x20               query: { add: {v: \"2\"}, remove: [debug], rename: {q: search} } }\n\
             \x20   response: { headers: { set: {}, remove: [Server] },\n\
             \x20               json: { deny: [\"items[*].secret\", \"*.owner.email\"], allow: [], rename: {old: new} },\n\
             \x20               max_body: 2MiB }\n",
        )
        .unwrap();
        let transform = &set.routes[0].transform;
        let request = transform.request.as_deref().unwrap();
        assert_eq!(request.headers.set[0].0, "x-a");
        assert_eq!(request.headers.rename[0].1, "x-new");
        assert_eq!(request.query.add, [("v".to_owned(), "2".to_owned())]);
        let response = transform.response.as_deref().unwrap();
        assert_eq!(response.headers.remove, [http::header::SERVER]);
        assert_eq!(response.max_body, 2 * 1024 * 1024);
        let json = response.json.as_ref().unwrap();
        assert!(matches!(
            json.filter,
            Some(crate::transform::json::Filter::Deny(_))
        ));
        assert_eq!(json.rename[0].to, "new");
    }

    #[test]
    fn a_route_without_edits_has_no_transforms_to_pay_for() {
        let plain = config("").unwrap();
        assert!(plain.routes[0].transform.request.is_none());
        assert!(plain.routes[0].transform.response.is_none());
        let empty = config("    request: { headers: {}, query: {} }\n    response: { json: {} }\n")
            .unwrap();
        assert!(empty.routes[0].transform.request.is_none());
        assert!(empty.routes[0].transform.response.is_none());
        let headers_only = config("    response: { headers: { remove: [Server] } }\n").unwrap();
        let response = headers_only.routes[0]
            .transform
            .response
            .as_deref()
            .unwrap();
        assert!(response.json.is_none(), "bodies are never read");
        assert_eq!(response.max_body, DEFAULT_MAX_BODY);
    }

    #[test]
    fn every_transform_mistake_is_named_at_its_place_in_one_run() {
        let error = config(
            "    request:\n\
             \x20     headers: { set: { X-Gatehouse-Identity: forged }, add: { Host: evil }, remove: [Connection, \"bad name\"], rename: { X-A: X-Forwarded-For } }\n\
             \x20     query: { remove: [\"\"] }\n\
             \x20   response:\n\
             \x20     headers: { set: { Content-Encoding: gzip }, remove: [Transfer-Encoding] }\n\
             \x20     json: { allow: [id], deny: [secret], rename: { \"items[*]\": x } }\n\
             \x20     max_body: 1GiB\n",
        )
        .unwrap_err()
        .to_string();
        for (field, why) in [
            ("routes[0].request.headers.set", "the identity header"),
            ("routes[0].request.headers.add", "Host"),
            (
                "routes[0].request.headers.remove",
                "a hop-by-hop header, a bad name",
            ),
            (
                "routes[0].request.headers.rename",
                "onto a forwarding header",
            ),
            ("routes[0].request.query.remove", "an empty parameter"),
            ("routes[0].response.headers.set", "the coding"),
            ("routes[0].response.headers.remove", "the framing"),
            ("routes[0].response.json.rename", "a rename from an element"),
            ("routes[0].response.max_body", "above 16MiB"),
        ] {
            assert!(error.contains(field), "{why}: {field} is named in\n{error}");
        }
        assert!(error.contains("gateway.yaml:"), "{error}");
    }

    #[test]
    fn allow_and_deny_together_and_bad_paths_are_refused() {
        let cases = [
            ("json: { allow: [a], deny: [b] }", "not both"),
            ("json: { deny: [\"items[\"] }", "not closed"),
            ("json: { deny: [\"a..b\"] }", "empty"),
            ("json: { allow: [\"items[x]\"] }", "neither"),
            ("json: { rename: { \"a.*\": b } }", "member name"),
            ("json: { rename: { a: \"\" } }", "needs a name"),
            ("json: { select: [a] }", "unknown field"),
            (
                "headers: { set: { X-A: \"line\\r\\nbreak\" } }",
                "header value",
            ),
        ];
        for (response, why) in cases {
            let error = config(&format!("    response: {{ {response} }}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains("routes[0].response"), "{response}: {error}");
            assert!(
                error.contains(why),
                "{response}: expected {why:?} in {error}"
            );
        }
    }
}

#[cfg(test)]
mod websocket_tests {
    use std::time::Duration;

    use crate::config::{parse, Vars, WebSocketRule};

    fn routes(routes: &str) -> Result<crate::config::GatewayConfig, crate::config::ConfigError> {
        let text = format!(
            "services:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\nroutes:\n{routes}"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    #[test]
    fn a_route_takes_websockets_with_its_limits_or_the_defaults() {
        let config = routes(
            "  - { path: /a, methods: [GET], service: users, auth: authenticated, websocket: { idle_timeout: 30s, max_lifetime: 1h } }\n  \
             - { path: /b, methods: [GET], service: users, auth: public, websocket: {} }\n  \
             - { path: /c, methods: [GET], service: users, auth: public }\n",
        )
        .unwrap();
        let rules: Vec<_> = config.routes.iter().map(|r| r.websocket).collect();
        assert_eq!(
            rules,
            [
                Some(WebSocketRule {
                    idle_timeout: Duration::from_secs(30),
                    max_lifetime: Duration::from_secs(3600),
                }),
                Some(WebSocketRule {
                    idle_timeout: Duration::from_secs(300),
                    max_lifetime: Duration::from_secs(24 * 3600),
                }),
                None,
            ]
        );
    }

    #[test]
    fn every_websocket_mistake_is_named_at_its_place() {
        let cases = [
            (
                "methods: [POST], service: users, websocket: {}",
                "routes[0].websocket",
                "list GET",
                "a route without GET",
            ),
            (
                "methods: [GET], service: users, websocket: { idle_timeout: 0s }",
                "routes[0].websocket.idle_timeout",
                "longer than zero",
                "a zero idle timeout",
            ),
            (
                "methods: [GET], service: users, websocket: { max_lifetime: 30d }",
                "routes[0].websocket.max_lifetime",
                "at most 7d",
                "a lifetime over the cap",
            ),
            (
                "methods: [GET], service: users, websocket: { idle: 1s }",
                "routes[0].websocket",
                "idle",
                "an unknown key",
            ),
            (
                "methods: [GET], service: users, websocket: true",
                "routes[0].websocket",
                "",
                "not a mapping",
            ),
            (
                "methods: [GET], service: users, websocket: { idle_timeout: soon }",
                "routes[0].websocket.idle_timeout",
                "",
                "not a duration",
            ),
            (
                "methods: [GET], compose: { a: { service: users, to: /a } }, websocket: {}",
                "routes[0].websocket",
                "composition",
                "a composition route",
            ),
        ];
        for (route, place, expected, why) in cases {
            let text = format!("  - {{ path: /a, auth: public, {route} }}\n");
            let error = routes(&text).unwrap_err().to_string();
            assert!(error.contains(place), "{why}: not at {place}: {error}");
            assert!(error.contains(expected), "{why}: {error}");
            assert!(
                error.contains("gateway.yaml:"),
                "{why}: positioned: {error}"
            );
        }
    }
}
