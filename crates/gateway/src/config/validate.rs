//! From the file as written to a [`GatewayConfig`]: every value checked, every default filled,
//! every mistake named by its field.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Uri};

use super::schema;
use super::{
    AuthEndpoints, AuthPolicy, Balance, BreakerSettings, ConfigError, GatewayConfig, HealthCheck,
    Limits, RetrySettings, RouteSettings, ServiceSettings, SigningAlgorithm, ThrottleSettings,
    TokenSettings,
};
use crate::router::RouteTable;
use crate::state::StateSettings;

/// The most retries a service may allow per request.
pub const MAX_RETRIES: u32 = 5;

/// Paths the gateway answers itself; no route may take them.
pub const RESERVED_PATHS: [&str; 3] = ["/.well-known/jwks.json", "/healthz", "/readyz"];

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        field: &str,
        raw: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(raw) = raw else { return Ok(default) };
        let value = humantime::parse_duration(raw.trim()).map_err(|e| {
            self.error(
                field,
                format!("{raw:?} is not a duration like 500ms, 5s or 15m ({e})"),
            )
        })?;
        if value.is_zero() {
            return Err(self.error(field, "must be longer than zero"));
        }
        Ok(value)
    }

    /// A path the gateway answers itself: literal, no `{param}`, `*` or `:`.
    fn literal_path(&self, field: &str, raw: &str) -> Result<(), ConfigError> {
        self.path(field, raw)?;
        if raw.contains(['{', '}', '*', ':']) || raw.contains("//") {
            return Err(self.error(
                field,
                format!("{raw:?} must be a literal path, without parameters"),
            ));
        }
        Ok(())
    }

    fn path(&self, field: &str, raw: &str) -> Result<(), ConfigError> {
        if !raw.starts_with('/') {
            return Err(self.error(field, format!("{raw:?} must start with `/`")));
        }
        if raw.contains(['?', '#', ' ']) || raw.split('/').any(|s| s == "." || s == "..") {
            return Err(self.error(field, format!("{raw:?} is not a plain path")));
        }
        Ok(())
    }
}

/// Loopback: metrics and the detailed readiness are for operators, not for the internet.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8002";

pub fn validate(raw: schema::File, file: &str) -> Result<GatewayConfig, ConfigError> {
    let check = Checker { file };

    let listen_raw = raw.listen.as_deref().unwrap_or("127.0.0.1:8001");
    let listen = listen_raw.parse().map_err(|_| {
        check.error(
            "listen",
            format!("{listen_raw:?} is not an address like 127.0.0.1:8001"),
        )
    })?;

    let admin_raw = raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let admin_listen = admin_raw.parse().map_err(|_| {
        check.error(
            "admin_listen",
            format!("{admin_raw:?} is not an address like {DEFAULT_ADMIN_LISTEN}"),
        )
    })?;
    let access_log = match raw.access_log.as_deref() {
        None => kit::observe::AccessLogTarget::default(),
        Some(target) => target
            .parse()
            .map_err(|message| check.error("access_log", message))?,
    };

    let (store, store_pool) = store(&check, raw.store)?;

    let state = state(&check, raw.state)?;

    let tokens = TokenSettings {
        key_activation: match raw.tokens.key_activation.as_deref().map(str::trim) {
            None => crate::auth::keys::DEFAULT_ACTIVATION,
            Some("0" | "0s") => Duration::ZERO,
            Some(raw) => check.duration("tokens.key_activation", Some(raw), Duration::ZERO)?,
        },
        refresh_ttl: check.duration(
            "tokens.refresh_ttl",
            raw.tokens.refresh_ttl.as_deref(),
            Duration::from_secs(14 * 24 * 3600),
        )?,
        access_ttl: check.duration(
            "tokens.access_ttl",
            raw.tokens.access_ttl.as_deref(),
            Duration::from_secs(900),
        )?,
        issuer: non_empty(&check, "tokens.issuer", raw.tokens.issuer, "gatehouse")?,
        audience: non_empty(
            &check,
            "tokens.audience",
            raw.tokens.audience,
            "gatehouse-api",
        )?,
        algorithm: match raw.tokens.algorithm.as_deref() {
            None | Some("EdDSA") => SigningAlgorithm::EdDSA,
            Some("RS256") => SigningAlgorithm::RS256,
            Some("HS256") => SigningAlgorithm::HS256,
            Some(other) => {
                return Err(check.error(
                    "tokens.algorithm",
                    format!("{other:?} is not supported; use EdDSA, RS256 or HS256"),
                ))
            }
        },
    };
    if tokens.access_ttl > Duration::from_secs(24 * 3600) {
        return Err(check.error(
            "tokens.access_ttl",
            "must be at most 24h; long sessions use refresh tokens",
        ));
    }

    let limits = Limits {
        max_body_bytes: byte_size(&check, "limits.max_body", raw.limits.max_body.as_deref())?,
        body_idle_timeout: check.duration(
            "limits.body_idle_timeout",
            raw.limits.body_idle_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        header_read_timeout: check.duration(
            "limits.header_read_timeout",
            raw.limits.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        )?,
        send_timeout: check.duration(
            "limits.send_timeout",
            raw.limits.send_timeout.as_deref(),
            Duration::from_secs(30),
        )?,
        max_connections: at_least_one_connection(
            &check,
            "limits.max_connections",
            raw.limits.max_connections,
            16_384,
        )?,
        max_connections_per_ip: at_least_one_connection(
            &check,
            "limits.max_connections_per_ip",
            raw.limits.max_connections_per_ip,
            512,
        )?,
    };

    let mut services = BTreeMap::new();
    for (name, service) in raw.services {
        let field = format!("services.{name}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(check.error(
                &field,
                "a service name is 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        if name == tokens.audience {
            return Err(check.error(
                &field,
                "a service may not be named like the access tokens' audience",
            ));
        }
        if service.upstreams.is_empty() {
            return Err(check.error(
                format!("{field}.upstreams"),
                "at least one upstream URL is needed",
            ));
        }
        let mut upstreams: Vec<Uri> = Vec::with_capacity(service.upstreams.len());
        for (i, url) in service.upstreams.iter().enumerate() {
            let uri = upstream(&check, &format!("{field}.upstreams[{i}]"), url)?;
            if let Some(first) = upstreams
                .iter()
                .position(|seen| seen.authority() == uri.authority())
            {
                return Err(check.error(
                    format!("{field}.upstreams[{i}]"),
                    format!("{url:?} is listed twice (also upstreams[{first}])"),
                ));
            }
            upstreams.push(uri);
        }
        let settings = ServiceSettings {
            upstreams,
            timeout: check.duration(
                &format!("{field}.timeout"),
                service.timeout.as_deref(),
                Duration::from_secs(30),
            )?,
            connect_timeout: check.duration(
                &format!("{field}.connect_timeout"),
                service.connect_timeout.as_deref(),
                Duration::from_secs(2),
            )?,
            balance: match service.balance.as_deref() {
                // Least requests by default: a frozen or slow instance gathers requests in
                // flight and so stops being picked, where round robin would keep handing it
                // every other request until its timeouts eject it.
                None | Some("least_requests") => Balance::LeastRequests,
                Some("round_robin") => Balance::RoundRobin,
                Some(other) => {
                    return Err(check.error(
                        format!("{field}.balance"),
                        format!("{other:?}: expected round_robin or least_requests"),
                    ))
                }
            },
            health: health(&check, &field, service.health)?,
            breaker: breaker(&check, &field, service.breaker)?,
            retries: retries(&check, &field, service.retries)?,
            required: service.required.unwrap_or(true),
        };
        services.insert(name, settings);
    }

    let login_path = raw.auth.login.unwrap_or_else(|| "/api/login".to_owned());
    check.literal_path("auth.login", &login_path)?;
    let token_path = raw
        .auth
        .token
        .unwrap_or_else(|| "/api/oauth/token".to_owned());
    check.literal_path("auth.token", &token_path)?;
    let refresh_path = raw
        .auth
        .refresh
        .unwrap_or_else(|| "/api/token/refresh".to_owned());
    check.literal_path("auth.refresh", &refresh_path)?;
    let logout_path = raw.auth.logout.unwrap_or_else(|| "/api/logout".to_owned());
    check.literal_path("auth.logout", &logout_path)?;
    let own_paths = [&login_path, &token_path, &refresh_path, &logout_path];
    for (i, path) in own_paths.iter().enumerate() {
        if own_paths[..i].contains(path) {
            return Err(check.error(
                "auth",
                format!("{path:?} is given to two of login, token, refresh, logout"),
            ));
        }
    }
    let cutoff_poll = check.duration(
        "auth.cutoff_poll",
        raw.auth.cutoff_poll.as_deref(),
        Duration::from_secs(2),
    )?;
    let throttle = throttle(&check, raw.auth.throttle)?;
    let (credentials_service, credentials_path) = match raw.auth.credentials {
        Some(c) => (
            c.service,
            c.path.unwrap_or_else(|| "/internal/credentials".to_owned()),
        ),
        None => ("users".to_owned(), "/internal/credentials".to_owned()),
    };
    check.path("auth.credentials.path", &credentials_path)?;
    if !services.contains_key(&credentials_service) {
        return Err(check.error(
            "auth.credentials.service",
            format!("service `{credentials_service}` is not defined under `services` (login asks it to check passwords)"),
        ));
    }
    let auth = AuthEndpoints {
        login_path,
        token_path,
        refresh_path,
        logout_path,
        cutoff_poll,
        throttle,
        credentials_service,
        credentials_path,
    };

    let mut routes = Vec::with_capacity(raw.routes.len());
    for (index, route) in raw.routes.into_iter().enumerate() {
        let field = format!("routes[{index}]");
        check.path(&format!("{field}.path"), &route.path)?;
        let gateway_paths = [
            &auth.login_path,
            &auth.token_path,
            &auth.refresh_path,
            &auth.logout_path,
        ];
        if RESERVED_PATHS.contains(&route.path.as_str()) || gateway_paths.contains(&&route.path) {
            return Err(check.error(
                format!("{field}.path"),
                format!("{:?} is answered by the gateway itself", route.path),
            ));
        }
        if route.methods.is_empty() {
            return Err(check.error(format!("{field}.methods"), "list at least one method"));
        }
        let methods = route
            .methods
            .iter()
            .map(|m| method(&check, &format!("{field}.methods"), m))
            .collect::<Result<Vec<_>, _>>()?;
        if !services.contains_key(&route.service) {
            return Err(check.error(
                format!("{field}.service"),
                format!(
                    "unknown service `{}`; defined: {}",
                    route.service,
                    services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let to = route.to.unwrap_or_else(|| route.path.clone());
        let auth = match route.auth {
            None => {
                return Err(check.error(
                    format!("{field}.auth"),
                    "missing: say who may call the route (public, authenticated, or { roles: [...], scopes: [...] })",
                ))
            }
            Some(schema::RouteAuth::Named(name)) => match name.as_str() {
                "public" => AuthPolicy::Public,
                "authenticated" => AuthPolicy::Authenticated,
                other => {
                    return Err(check.error(
                        format!("{field}.auth"),
                        format!("{other:?}: expected public, authenticated, or {{ roles: [...], scopes: [...] }}"),
                    ))
                }
            },
            Some(schema::RouteAuth::Rules(rules)) => {
                if rules.roles.is_empty() && rules.scopes.is_empty() {
                    return Err(check.error(format!("{field}.auth"), "give roles, scopes, or both"));
                }
                // A name no token can carry would make the route refuse everyone, forever.
                for (kind, names) in [("roles", &rules.roles), ("scopes", &rules.scopes)] {
                    for (i, name) in names.iter().enumerate() {
                        let plain = !name.is_empty()
                            && name.len() <= 64
                            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b':' | b'.' | b'_' | b'-'));
                        if !plain {
                            return Err(check.error(
                                format!("{field}.auth.{kind}[{i}]"),
                                format!("{name:?} is not a {} name: 1 to 64 of a-z, 0-9, `:`, `.`, `_`, `-`", &kind[..kind.len() - 1]),
                            ));
                        }
                    }
                }
                AuthPolicy::Require { roles: rules.roles, scopes: rules.scopes }
            }
        };
        let timeout = match route.timeout.as_deref() {
            Some(raw) => {
                Some(check.duration(&format!("{field}.timeout"), Some(raw), Duration::ZERO)?)
            }
            None => None,
        };
        routes.push(RouteSettings {
            path: route.path,
            methods,
            service: route.service,
            to,
            auth,
            timeout,
        });
    }
    RouteTable::build(&routes).map_err(|e| ConfigError::Invalid {
        file: file.to_owned(),
        field: "routes".to_owned(),
        message: e.to_string(),
    })?;

    let drain_timeout = check.duration(
        "drain_timeout",
        raw.drain_timeout.as_deref(),
        Duration::from_secs(30),
    )?;
    let watch = match raw.watch.as_deref().map(str::trim) {
        Some("off") => None,
        other => Some(check.duration("watch", other, Duration::from_secs(1))?),
    };
    let watch_settle = check.duration(
        "watch_settle",
        raw.watch_settle.as_deref(),
        Duration::from_millis(200),
    )?;

    Ok(GatewayConfig {
        listen,
        admin_listen,
        access_log,
        store,
        store_pool,
        state,
        tokens,
        auth,
        limits,
        services,
        routes,
        drain_timeout,
        watch,
        watch_settle,
    })
}

fn health(
    check: &Checker<'_>,
    service: &str,
    raw: Option<schema::Health>,
) -> Result<Option<HealthCheck>, ConfigError> {
    let field = format!("{service}.health");
    let raw = match raw {
        None => return Ok(None),
        Some(schema::Health::Path(path)) => schema::HealthCheck {
            path: Some(path),
            interval: None,
            timeout: None,
            healthy: None,
            unhealthy: None,
        },
        Some(schema::Health::Check(check)) => check,
    };
    let path = raw.path.unwrap_or_else(|| "/healthz".to_owned());
    check.path(&format!("{field}.path"), &path)?;
    let interval = check.duration(
        &format!("{field}.interval"),
        raw.interval.as_deref(),
        Duration::from_secs(5),
    )?;
    let settings = HealthCheck {
        path,
        interval,
        // Short by default, and never longer than the interval unless asked: a check that
        // waits long for a frozen instance delays the verdict the check exists for.
        timeout: check.duration(
            &format!("{field}.timeout"),
            raw.timeout.as_deref(),
            interval.min(Duration::from_secs(1)),
        )?,
        healthy_threshold: at_least_one(check, &format!("{field}.healthy"), raw.healthy, 2)?,
        unhealthy_threshold: at_least_one(check, &format!("{field}.unhealthy"), raw.unhealthy, 2)?,
    };
    Ok(Some(settings))
}

fn breaker(
    check: &Checker<'_>,
    service: &str,
    raw: Option<schema::Breaker>,
) -> Result<BreakerSettings, ConfigError> {
    let field = format!("{service}.breaker");
    let raw = raw.unwrap_or(schema::Breaker {
        failures: None,
        backoff: None,
        max_backoff: None,
        decay: None,
    });
    let settings = BreakerSettings {
        failures: at_least_one(check, &format!("{field}.failures"), raw.failures, 5)?,
        backoff: check.duration(
            &format!("{field}.backoff"),
            raw.backoff.as_deref(),
            Duration::from_secs(10),
        )?,
        max_backoff: check.duration(
            &format!("{field}.max_backoff"),
            raw.max_backoff.as_deref(),
            Duration::from_secs(300),
        )?,
        decay: raw
            .decay
            .as_deref()
            .map(|decay| check.duration(&format!("{field}.decay"), Some(decay), Duration::ZERO))
            .transpose()?,
    };
    if settings.max_backoff < settings.backoff {
        // An explicit backoff above the default ceiling raises the ceiling with it.
        if raw.max_backoff.is_some() {
            return Err(check.error(
                format!("{field}.max_backoff"),
                "must not be shorter than the backoff",
            ));
        }
        return Ok(BreakerSettings {
            max_backoff: settings.backoff,
            ..settings
        });
    }
    Ok(settings)
}

fn retries(
    check: &Checker<'_>,
    service: &str,
    raw: Option<schema::Retries>,
) -> Result<RetrySettings, ConfigError> {
    let field = format!("{service}.retries");
    let raw = raw.unwrap_or(schema::Retries {
        attempts: None,
        budget: None,
    });
    let attempts = raw.attempts.unwrap_or(2);
    if attempts > MAX_RETRIES {
        return Err(check.error(
            format!("{field}.attempts"),
            format!("at most {MAX_RETRIES} retries per request"),
        ));
    }
    let budget_percent = match raw.budget.as_deref() {
        None => 20,
        Some(text) => text
            .trim()
            .strip_suffix('%')
            .and_then(|number| number.trim().parse::<u32>().ok())
            .filter(|percent| *percent <= 100)
            .ok_or_else(|| {
                check.error(
                    format!("{field}.budget"),
                    format!("{text:?} is not a percentage of requests like 20%"),
                )
            })?,
    };
    Ok(RetrySettings {
        attempts,
        budget_percent,
    })
}

fn at_least_one(
    check: &Checker<'_>,
    field: &str,
    raw: Option<u32>,
    default: u32,
) -> Result<u32, ConfigError> {
    match raw {
        None => Ok(default),
        Some(0) => Err(check.error(field, "must be at least 1")),
        Some(n) => Ok(n),
    }
}

fn at_least_one_connection(
    check: &Checker<'_>,
    field: &str,
    raw: Option<usize>,
    default: usize,
) -> Result<usize, ConfigError> {
    match raw {
        None => Ok(default),
        Some(0) => Err(check.error(field, "must be at least 1")),
        Some(n) => Ok(n),
    }
}

fn store(
    check: &Checker<'_>,
    raw: Option<schema::Store>,
) -> Result<(String, kit::db::PoolOptions), ConfigError> {
    let (url, acquire_timeout) = match raw {
        None => ("sqlite://data/gateway.db".to_owned(), None),
        Some(schema::Store::Url(url)) => (url, None),
        Some(schema::Store::Pool(pool)) => (pool.url, pool.acquire_timeout),
    };
    kit::db::Backend::of_url(&url).map_err(|e| check.error("store", e.to_string()))?;
    let pool = kit::db::PoolOptions {
        acquire_timeout: check.duration(
            "store.acquire_timeout",
            acquire_timeout.as_deref(),
            kit::db::DEFAULT_ACQUIRE_TIMEOUT,
        )?,
    };
    Ok((url, pool))
}

fn state(check: &Checker<'_>, raw: Option<schema::State>) -> Result<StateSettings, ConfigError> {
    const PREFIX: &str = "gatehouse";
    let defaults = crate::state::RedisOptions::default();
    let (url, prefix, options) = match raw {
        None => return Ok(StateSettings::Memory),
        Some(schema::State::Named(name)) if name == "memory" => return Ok(StateSettings::Memory),
        Some(schema::State::Named(url)) => (url, PREFIX.to_owned(), defaults),
        Some(schema::State::Redis(redis)) => (
            redis.redis,
            redis.prefix.unwrap_or_else(|| PREFIX.to_owned()),
            crate::state::RedisOptions {
                connect: check.duration(
                    "state.connect_timeout",
                    redis.connect_timeout.as_deref(),
                    defaults.connect,
                )?,
                command: check.duration(
                    "state.command_timeout",
                    redis.command_timeout.as_deref(),
                    defaults.command,
                )?,
                probe_interval: check.duration(
                    "state.probe_interval",
                    redis.probe_interval.as_deref(),
                    defaults.probe_interval,
                )?,
                store_sync: check.duration(
                    "state.store_sync",
                    redis.store_sync.as_deref(),
                    defaults.store_sync,
                )?,
            },
        ),
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(check.error(
            "state",
            format!(
                "{:?}: expected `memory` or a redis:// URL",
                kit::db::redact(&url)
            ),
        ));
    }
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        return Err(check.error("state.prefix", "must be a non-empty word"));
    }
    Ok(StateSettings::Redis {
        url,
        prefix,
        options,
    })
}

fn throttle(
    check: &Checker<'_>,
    raw: Option<schema::Throttle>,
) -> Result<ThrottleSettings, ConfigError> {
    let raw = raw.unwrap_or(schema::Throttle {
        per_username: None,
        per_ip: None,
        per_device: None,
        concurrent: None,
        window: None,
        device_ttl: None,
    });
    let settings = ThrottleSettings {
        per_username: raw.per_username.unwrap_or(10),
        per_ip: raw.per_ip.unwrap_or(50),
        per_device: raw.per_device.unwrap_or(5),
        concurrent: raw.concurrent.unwrap_or(32),
        window: check.duration(
            "auth.throttle.window",
            raw.window.as_deref(),
            Duration::from_secs(15 * 60),
        )?,
        device_ttl: check.duration(
            "auth.throttle.device_ttl",
            raw.device_ttl.as_deref(),
            Duration::from_secs(90 * 24 * 60 * 60),
        )?,
    };
    if settings.per_username == 0
        || settings.per_ip == 0
        || settings.per_device == 0
        || settings.concurrent == 0
    {
        return Err(check.error("auth.throttle", "limits must be at least 1"));
    }
    if settings.device_ttl.is_zero() {
        return Err(check.error("auth.throttle.device_ttl", "must be longer than zero"));
    }
    Ok(settings)
}

fn non_empty(
    check: &Checker<'_>,
    field: &str,
    raw: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    match raw {
        None => Ok(default.to_owned()),
        Some(value) if value.trim().is_empty() => Err(check.error(field, "must not be empty")),
        Some(value) => Ok(value),
    }
}

fn upstream(check: &Checker<'_>, field: &str, raw: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = raw
        .parse()
        .map_err(|_| check.error(field, format!("{raw:?} is not a URL")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(check.error(
                field,
                format!("{raw:?}: https upstreams are not supported yet"),
            ))
        }
        _ => return Err(check.error(field, format!("{raw:?} must be an http:// URL"))),
    }
    if uri.authority().is_none() {
        return Err(check.error(field, format!("{raw:?} names no host")));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(check.error(
            field,
            format!("{raw:?}: give only scheme, host and port; paths belong in routes' `to`"),
        ));
    }
    Ok(uri)
}

fn method(check: &Checker<'_>, field: &str, raw: &str) -> Result<Method, ConfigError> {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    if !KNOWN.contains(&raw) {
        return Err(check.error(field, format!("{raw:?} is not one of {}", KNOWN.join(", "))));
    }
    Method::from_bytes(raw.as_bytes())
        .map_err(|_| check.error(field, format!("{raw:?} is not a method")))
}

fn byte_size(check: &Checker<'_>, field: &str, raw: Option<&str>) -> Result<u64, ConfigError> {
    const DEFAULT: u64 = 1024 * 1024;
    let Some(raw) = raw else { return Ok(DEFAULT) };
    let text = raw.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return Err(check.error(field, format!("{raw:?} is not a size like 512KiB or 1MiB"))),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| check.error(field, format!("{raw:?} is not a size like 512KiB or 1MiB")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Vars};

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
            (", health: healthz", "", "services.users.health.path"),
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
             state: { redis: \"redis://r\", connect_timeout: 100ms, command_timeout: 50ms, probe_interval: 2s, store_sync: 10s }",
        )
        .unwrap();
        assert_eq!(set.store, "postgres://db/x");
        assert_eq!(set.store_pool.acquire_timeout, Duration::from_millis(500));
        let StateSettings::Redis { options, .. } = set.state else {
            panic!("Redis state expected");
        };
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
        ] {
            let error = config(head).unwrap_err().to_string();
            assert!(error.contains(field), "{head}: {error}");
        }
    }
}
