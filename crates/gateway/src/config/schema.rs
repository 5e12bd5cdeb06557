//! The configuration file as written. Every struct refuses unknown fields, so a typo is an
//! error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<String>,
    /// The admin listener: `/metrics` and the detailed `/readyz`; never the public one.
    pub admin_listen: Option<String>,
    /// `stdout` (default), `stderr`, `off`, or a file path.
    pub access_log: Option<String>,
    pub store: Option<Store>,
    pub state: Option<State>,
    #[serde(default)]
    pub tokens: Tokens,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub limits: Limits,
    #[serde(deserialize_with = "unique_keys")]
    pub services: BTreeMap<String, Service>,
    pub routes: Vec<Route>,
    /// How long requests in flight may take to finish after SIGTERM.
    pub drain_timeout: Option<String>,
    /// How often the file is checked for changes, or `off`.
    pub watch: Option<String>,
    /// How long a changed file must stay unchanged before it is applied.
    pub watch_settle: Option<String>,
}

/// `store: URL`, or `store: { url: URL, acquire_timeout: 2s }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Store {
    Url(String),
    Pool(StorePool),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorePool {
    pub url: String,
    /// How long a query waits for a connection before the request is answered 503.
    pub acquire_timeout: Option<String>,
}

/// `state: memory`, `state: redis://host:6379`, or `state: { redis: URL, prefix: NAME }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum State {
    Named(String),
    Redis(RedisState),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisState {
    pub redis: String,
    pub prefix: Option<String>,
    /// How long opening a connection to Redis may take.
    pub connect_timeout: Option<String>,
    /// How long one command may wait for its answer.
    pub command_timeout: Option<String>,
    /// While Redis is down, how often a background probe checks whether it is back.
    pub probe_interval: Option<String>,
    /// How often the store is read for revocations other replicas recorded.
    pub store_sync: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    pub access_ttl: Option<String>,
    pub refresh_ttl: Option<String>,
    pub key_activation: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithm: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub login: Option<String>,
    pub token: Option<String>,
    pub refresh: Option<String>,
    pub logout: Option<String>,
    /// How often the gateway asks the credentials service for per-user cut-offs.
    pub cutoff_poll: Option<String>,
    pub throttle: Option<Throttle>,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub per_username: Option<u64>,
    pub per_ip: Option<u64>,
    pub per_device: Option<u64>,
    pub concurrent: Option<usize>,
    pub window: Option<String>,
    pub device_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub service: String,
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body: Option<String>,
    /// How long a client may fall silent while sending a request body.
    pub body_idle_timeout: Option<String>,
    /// How long a connection may take to send a request's headers, from accept or from the end
    /// of its previous request.
    pub header_read_timeout: Option<String>,
    /// How long a connection may stay blocked writing to a client that does not read.
    pub send_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub upstreams: Vec<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    /// `round_robin` or `least_requests`.
    pub balance: Option<String>,
    pub health: Option<Health>,
    pub breaker: Option<Breaker>,
    pub retries: Option<Retries>,
    /// Whether the gateway waits for this service's first healthy check after start.
    pub required: Option<bool>,
}

/// `health: /healthz`, or `health: { path, interval, timeout, healthy, unhealthy }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Health {
    Path(String),
    Check(HealthCheck),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy: Option<u32>,
    pub unhealthy: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    pub failures: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    /// How long an instance must stay in rotation before its next ejection starts from
    /// `backoff` again; default: the back-off it last served.
    pub decay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    pub attempts: Option<u32>,
    /// A percentage of requests, such as `20%`.
    pub budget: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: String,
    pub methods: Vec<String>,
    pub service: String,
    pub to: Option<String>,
    pub auth: Option<RouteAuth>,
    pub timeout: Option<String>,
}

/// `auth: public`, `auth: authenticated`, or `auth: { roles: [...], scopes: [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RouteAuth {
    Named(String),
    Rules(AuthRules),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRules {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A map that refuses a key given twice: YAML parsers keep the last silently, which would let a
/// second `users:` replace the first without a word.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a map of services by name")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "service `{key}` is defined twice"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(UniqueKeys(std::marker::PhantomData))
}
