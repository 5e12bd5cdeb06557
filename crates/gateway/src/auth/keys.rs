//! Signing keys, kept in the store and shared by every replica.
//!
//! Access tokens are signed with the newest active key of the configured algorithm (EdDSA by
//! default, RS256 or HS256 by config); identity tokens for the services always with the newest
//! active EdDSA key, so services verify them from the JWKS whatever the access-token algorithm.
//!
//! A rotated-in key is published (and verifies) at once but signs only after `activation`:
//! whoever caches the JWKS (services, other verifiers, for its `max-age`) has fetched it by the
//! time a token signed with it arrives. A key that a newer one replaced keeps verifying for
//! `grace` (the longest a token it signed can live), then retires: it leaves the JWKS and
//! verifies nothing. HS256 secrets never enter the JWKS.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use kit::identity::VerifyingKey;
use rand::RngCore;
use rsa::pkcs1::EncodeRsaPrivateKey;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::SigningAlgorithm;
use crate::store::{Store, StoredKey};

/// A key that signs new tokens.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
}

/// The life stage of a stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// Rotated in: published and verifying, signing from `from`.
    Pending { from: DateTime<Utc> },
    /// The newest active key of its algorithm: it signs.
    Signing,
    /// Replaced, but tokens it signed may still live: it verifies until then.
    Verifying { until: DateTime<Utc> },
    /// No token it signed can still be alive.
    Retired,
}

/// One stored key and where it stands.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub algorithm: String,
    pub created_at: String,
    pub status: KeyStatus,
}

/// The keys in force at one moment.
pub struct KeySet {
    access: SigningKey,
    identity: SigningKey,
    verifying: HashMap<String, VerifyingKey>,
    jwks_json: Bytes,
}

impl KeySet {
    pub fn access(&self) -> &SigningKey {
        &self.access
    }

    pub fn identity(&self) -> &SigningKey {
        &self.identity
    }

    pub fn verifying(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// The JWKS as served, serialized once.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks_json.clone()
    }

    /// The set as it stands at `now` (the app's wall clock).
    fn build(
        stored: &[StoredKey],
        access_algorithm: SigningAlgorithm,
        timing: KeyTiming,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Self> {
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut access = None;
        let mut identity = None;
        for (key, status) in stored.iter().zip(statuses(stored, timing, now)) {
            if status == KeyStatus::Retired {
                continue;
            }
            let material = Material::decode(key)?;
            verifying.insert(key.kid.clone(), material.verifying_key()?);
            if let Some(jwk) = material.public_jwk(&key.kid)? {
                jwks.keys.push(jwk);
            }
            if status == KeyStatus::Signing {
                if key.algorithm == access_algorithm.name() {
                    access = Some(material.signing_key(&key.kid));
                }
                if key.algorithm == SigningAlgorithm::EdDSA.name() {
                    identity = Some(material.signing_key(&key.kid));
                }
            }
        }
        let jwks_json = Bytes::from(serde_json::to_vec(&jwks).context("serializing the JWKS")?);
        Ok(Self {
            access: access.context("the store holds no key for the access-token algorithm")?,
            identity: identity.context("the store holds no EdDSA key for identity tokens")?,
            verifying,
            jwks_json,
        })
    }
}

/// How keys come and go: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTiming {
    /// From a key's creation until it signs (when an older key can sign meanwhile).
    pub activation: Duration,
    /// From a key's replacement until it retires.
    pub grace: Duration,
}

impl KeyTiming {
    /// The timing of a gateway running `config`: a replaced key keeps verifying for the longest
    /// a token it signed can live, plus the time other replicas may take to pick up its successor.
    pub fn of(config: &crate::config::GatewayConfig) -> Self {
        Self {
            activation: config.tokens.key_activation,
            grace: config.tokens.access_ttl
                + kit::identity::TOKEN_TTL
                + KEY_RELOAD_INTERVAL
                + Duration::from_secs(super::tokens::LEEWAY_SECONDS),
        }
    }
}

/// How often keys are reread from the store, so a rotation reaches every replica.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Publish-before-sign by default: the JWKS `max-age` (60 s) plus the replicas' key reload.
pub const DEFAULT_ACTIVATION: Duration = Duration::from_secs(70);

impl From<Duration> for KeyTiming {
    /// `grace`, with the default activation.
    fn from(grace: Duration) -> Self {
        Self {
            activation: DEFAULT_ACTIVATION,
            grace,
        }
    }
}

/// Each stored key's status; `stored` is newest first.
fn statuses(stored: &[StoredKey], timing: KeyTiming, now: DateTime<Utc>) -> Vec<KeyStatus> {
    let activation = chrono::Duration::from_std(timing.activation).unwrap_or(chrono::Duration::MAX);
    let grace = chrono::Duration::from_std(timing.grace).unwrap_or(chrono::Duration::MAX);
    let mut statuses = vec![KeyStatus::Retired; stored.len()];
    let mut algorithms: Vec<&str> = stored.iter().map(|key| key.algorithm.as_str()).collect();
    algorithms.dedup();
    algorithms.sort_unstable();
    algorithms.dedup();
    for algorithm in algorithms {
        let group: Vec<usize> = (0..stored.len())
            .filter(|&i| stored[i].algorithm == algorithm)
            .collect();
        let active_from = |i: usize| {
            created(&stored[i])
                .checked_add_signed(activation)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        // The newest key old enough to sign; the oldest one when none is (a first key signs at once).
        let signing = group
            .iter()
            .position(|&i| active_from(i) <= now)
            .unwrap_or(group.len() - 1);
        for (rank, &i) in group.iter().enumerate() {
            statuses[i] = if rank < signing {
                KeyStatus::Pending {
                    from: active_from(i),
                }
            } else if rank == signing {
                KeyStatus::Signing
            } else {
                // Replaced when its successor began to sign.
                let until = active_from(group[rank - 1])
                    .checked_add_signed(grace)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if now < until {
                    KeyStatus::Verifying { until }
                } else {
                    KeyStatus::Retired
                }
            }
        }
    }
    statuses
}

fn created(key: &StoredKey) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&key.created_at)
        .map_or(DateTime::<Utc>::MIN_UTC, |t| t.with_timezone(&Utc))
}

/// The shared, reloadable key set of a running gateway.
pub struct Keys {
    current: RwLock<Arc<KeySet>>,
    store: Store,
    access_algorithm: SigningAlgorithm,
    timing: KeyTiming,
    /// Decides when the set is reread and which keys sign and verify; see `Keys::load_at`.
    clock: Clock,
    /// The monotonic reading of `clock` at the last reread.
    last_reload: Mutex<u64>,
}

impl Keys {
    /// Loads the stored keys, generating the ones the configuration needs but the store lacks.
    pub async fn load(
        store: Store,
        access_algorithm: SigningAlgorithm,
        timing: impl Into<KeyTiming>,
    ) -> anyhow::Result<Self> {
        Self::load_at(store, access_algorithm, timing, Clock::System).await
    }

    /// As [`Keys::load`], on `clock`: a key's status (pending, signing, verifying, retired) is
    /// decided on its wall reading, how long ago the set was reread on its monotonic one.
    pub async fn load_at(
        store: Store,
        access_algorithm: SigningAlgorithm,
        timing: impl Into<KeyTiming>,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let timing = timing.into();
        ensure_keys(&store, access_algorithm).await?;
        let set = KeySet::build(
            &store.signing_keys().await?,
            access_algorithm,
            timing,
            wall_time(&clock),
        )?;
        Ok(Self {
            current: RwLock::new(Arc::new(set)),
            store,
            access_algorithm,
            timing,
            last_reload: Mutex::new(clock.monotonic_ms()),
            clock,
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Rereads the store: a key rotated by any replica or by `gatehouse keys rotate` is picked up.
    pub async fn reload(&self) -> anyhow::Result<()> {
        *self.last_reload.lock().await = self.clock.monotonic_ms();
        let set = KeySet::build(
            &self.store.signing_keys().await?,
            self.access_algorithm,
            self.timing,
            wall_time(&self.clock),
        )?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// Reloads unless the last reload is more recent than `interval`: a token naming an unknown
    /// key may come from a replica that rotated, but random kids must not hammer the store.
    pub async fn reload_if_older_than(&self, interval: Duration) -> anyhow::Result<bool> {
        {
            let last = *self.last_reload.lock().await;
            let elapsed = Duration::from_millis(self.clock.monotonic_ms().saturating_sub(last));
            if elapsed < interval {
                return Ok(false);
            }
        }
        self.reload().await?;
        Ok(true)
    }
}

/// `clock`'s wall reading as the stored keys' `created_at` is compared with.
fn wall_time(clock: &Clock) -> DateTime<Utc> {
    i64::try_from(clock.unix_ms())
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

async fn ensure_keys(store: &Store, access_algorithm: SigningAlgorithm) -> anyhow::Result<()> {
    let mut present: Vec<String> = store
        .signing_keys()
        .await?
        .into_iter()
        .map(|key| key.algorithm)
        .collect();
    // Access tokens need a key of their algorithm; identity tokens an EdDSA key (often the same).
    for algorithm in [access_algorithm, SigningAlgorithm::EdDSA] {
        if !present.iter().any(|name| name == algorithm.name()) {
            let key = generate(algorithm)?;
            tracing::info!(kid = %key.kid, algorithm = algorithm.name(), "generated a signing key");
            store.insert_signing_key(&key).await?;
            present.push(key.algorithm);
        }
    }
    Ok(())
}

/// `gatehouse keys rotate`: a new key for the access-token algorithm (and a new EdDSA key for
/// identity tokens when that is another), signing after `timing.activation`; retired keys are
/// deleted.
pub async fn rotate(
    store: &Store,
    access_algorithm: SigningAlgorithm,
    timing: impl Into<KeyTiming>,
) -> anyhow::Result<Vec<StoredKey>> {
    let timing = timing.into();
    let mut algorithms = vec![access_algorithm];
    if access_algorithm != SigningAlgorithm::EdDSA {
        algorithms.push(SigningAlgorithm::EdDSA);
    }
    let mut added = Vec::new();
    for algorithm in algorithms {
        let key = generate(algorithm)?;
        store.insert_signing_key(&key).await?;
        added.push(key);
    }
    for info in describe(&store.signing_keys().await?, timing) {
        if info.status == KeyStatus::Retired {
            store.delete_signing_key(&info.kid).await?;
        }
    }
    Ok(added)
}

/// Every stored key with its status, newest first.
pub fn describe(stored: &[StoredKey], timing: KeyTiming) -> Vec<KeyInfo> {
    stored
        .iter()
        .zip(statuses(stored, timing, Utc::now()))
        .map(|(key, status)| KeyInfo {
            kid: key.kid.clone(),
            algorithm: key.algorithm.clone(),
            created_at: key.created_at.clone(),
            status,
        })
        .collect()
}

impl SigningAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::RS256 => Algorithm::RS256,
            Self::HS256 => Algorithm::HS256,
        }
    }
}

/// A key's secret material, decoded.
enum Material {
    Ed25519 {
        der: Vec<u8>,
        public: ed25519_dalek::VerifyingKey,
    },
    Rsa {
        der: Vec<u8>,
    },
    Hmac {
        secret: Vec<u8>,
    },
}

impl Material {
    fn decode(key: &StoredKey) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(&key.private_key)
            .with_context(|| format!("decoding key {}", key.kid))?;
        match key.algorithm.as_str() {
            "EdDSA" => {
                let secret = ed25519_dalek::SigningKey::from_pkcs8_der(&bytes).map_err(|e| {
                    anyhow::anyhow!("key {} is not an Ed25519 PKCS#8 key: {e}", key.kid)
                })?;
                Ok(Self::Ed25519 {
                    public: secret.verifying_key(),
                    der: bytes,
                })
            }
            "RS256" => Ok(Self::Rsa { der: bytes }),
            "HS256" => Ok(Self::Hmac { secret: bytes }),
            other => anyhow::bail!("key {} has unsupported algorithm {other}", key.kid),
        }
    }

    fn algorithm(&self) -> SigningAlgorithm {
        match self {
            Self::Ed25519 { .. } => SigningAlgorithm::EdDSA,
            Self::Rsa { .. } => SigningAlgorithm::RS256,
            Self::Hmac { .. } => SigningAlgorithm::HS256,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self {
            Self::Ed25519 { der, .. } => EncodingKey::from_ed_der(der),
            Self::Rsa { der } => EncodingKey::from_rsa_der(der),
            Self::Hmac { secret } => EncodingKey::from_secret(secret),
        }
    }

    fn signing_key(&self, kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.to_owned(),
            algorithm: self.algorithm().jwt(),
            encoding: self.encoding_key(),
        }
    }

    fn verifying_key(&self) -> anyhow::Result<VerifyingKey> {
        let key = match self {
            Self::Hmac { secret } => DecodingKey::from_secret(secret),
            other => DecodingKey::from_jwk(&other.public_jwk("")?.context("a public key")?)
                .context("building a verifying key")?,
        };
        Ok(VerifyingKey {
            key,
            algorithm: self.algorithm().jwt(),
        })
    }

    /// The public JWK; `None` for a shared secret, which must never be published.
    fn public_jwk(&self, kid: &str) -> anyhow::Result<Option<Jwk>> {
        let common = CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_id: (!kid.is_empty()).then(|| kid.to_owned()),
            ..CommonParameters::default()
        };
        match self {
            Self::Ed25519 { public, .. } => Ok(Some(Jwk {
                common: CommonParameters {
                    key_algorithm: Some(KeyAlgorithm::EdDSA),
                    ..common
                },
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(public.as_bytes()),
                }),
            })),
            Self::Rsa { der } => {
                let derived =
                    Jwk::from_encoding_key(&EncodingKey::from_rsa_der(der), Algorithm::RS256)
                        .context("deriving the RSA public key")?;
                Ok(Some(Jwk {
                    common: CommonParameters {
                        key_algorithm: Some(KeyAlgorithm::RS256),
                        ..common
                    },
                    ..derived
                }))
            }
            Self::Hmac { .. } => Ok(None),
        }
    }
}

/// A new key of `algorithm`; its `kid` is the RFC 7638 thumbprint of its public key (a random
/// id for HS256, whose secret must not be derivable from the id).
pub fn generate(algorithm: SigningAlgorithm) -> anyhow::Result<StoredKey> {
    let bytes = match algorithm {
        SigningAlgorithm::EdDSA => {
            let secret = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            secret
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("encoding a new key: {e}"))?
                .as_bytes()
                .to_vec()
        }
        SigningAlgorithm::RS256 => {
            let secret = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .context("generating an RSA key")?;
            secret
                .to_pkcs1_der()
                .map_err(|e| anyhow::anyhow!("encoding a new key: {e}"))?
                .as_bytes()
                .to_vec()
        }
        SigningAlgorithm::HS256 => {
            let mut secret = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            secret
        }
    };
    let stored = StoredKey {
        kid: String::new(),
        algorithm: algorithm.name().to_owned(),
        private_key: STANDARD.encode(&bytes),
        created_at: kit::time::now_text(),
    };
    let kid = match Material::decode(&stored)?.public_jwk("")? {
        Some(jwk) => jwk
            .thumbprint(ThumbprintHash::SHA256)
            .context("computing the key's thumbprint")?,
        None => format!("hs-{}", uuid::Uuid::new_v4().simple()),
    };
    Ok(StoredKey { kid, ..stored })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(algorithm: &str, created_at: &str) -> StoredKey {
        StoredKey {
            kid: format!("{algorithm}-{created_at}"),
            algorithm: algorithm.into(),
            private_key: String::new(),
            created_at: created_at.into(),
        }
    }

    #[test]
    fn a_replaced_key_verifies_for_the_grace_period_then_retires() {
        let now = Utc::now();
        let at = |minutes_ago: i64| (now - chrono::Duration::minutes(minutes_ago)).to_rfc3339();
        let stored = [
            key("EdDSA", &at(5)),
            key("EdDSA", &at(60)),
            key("EdDSA", &at(120)),
        ];
        let timing = KeyTiming {
            activation: Duration::ZERO,
            grace: Duration::from_secs(30 * 60),
        };
        let statuses = statuses(&stored, timing, now);
        assert_eq!(statuses[0], KeyStatus::Signing);
        assert!(
            matches!(statuses[1], KeyStatus::Verifying { .. }),
            "replaced 5 minutes ago"
        );
        assert_eq!(statuses[2], KeyStatus::Retired, "replaced 60 minutes ago");
    }

    #[test]
    fn a_new_key_is_published_before_it_signs_unless_it_is_the_first() {
        let now = Utc::now();
        let at = |seconds_ago: i64| (now - chrono::Duration::seconds(seconds_ago)).to_rfc3339();
        let timing = KeyTiming {
            activation: Duration::from_secs(70),
            grace: Duration::from_secs(600),
        };

        let rotated = [key("EdDSA", &at(10)), key("EdDSA", &at(3600))];
        let statuses_now = statuses(&rotated, timing, now);
        assert!(
            matches!(statuses_now[0], KeyStatus::Pending { .. }),
            "{statuses_now:?}"
        );
        assert_eq!(
            statuses_now[1],
            KeyStatus::Signing,
            "the old key signs until the new one is active"
        );

        let later = statuses(&rotated, timing, now + chrono::Duration::seconds(61));
        assert_eq!(later[0], KeyStatus::Signing);
        assert!(matches!(later[1], KeyStatus::Verifying { .. }), "{later:?}");

        assert_eq!(
            statuses(&[key("EdDSA", &at(1))], timing, now),
            [KeyStatus::Signing],
            "a first key signs at once"
        );
    }

    #[test]
    fn each_algorithm_has_its_own_signing_key() {
        let now = Utc::now();
        let stored = [
            key("RS256", &now.to_rfc3339()),
            key("EdDSA", &now.to_rfc3339()),
        ];
        assert_eq!(
            statuses(&stored, KeyTiming::from(Duration::ZERO), now),
            [KeyStatus::Signing, KeyStatus::Signing]
        );
    }

    #[test]
    fn every_algorithm_signs_what_it_verifies() {
        for algorithm in [
            SigningAlgorithm::EdDSA,
            SigningAlgorithm::RS256,
            SigningAlgorithm::HS256,
        ] {
            let stored = generate(algorithm).unwrap();
            let material = Material::decode(&stored).unwrap();
            let signing = material.signing_key(&stored.kid);
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(signing.algorithm),
                &serde_json::json!({"exp": u64::MAX / 2}),
                &signing.encoding,
            )
            .unwrap();
            let verifying = material.verifying_key().unwrap();
            let validation = jsonwebtoken::Validation::new(verifying.algorithm);
            assert!(
                jsonwebtoken::decode::<serde_json::Value>(&token, &verifying.key, &validation)
                    .is_ok(),
                "{algorithm:?}"
            );
            assert_eq!(
                material.public_jwk(&stored.kid).unwrap().is_none(),
                algorithm == SigningAlgorithm::HS256
            );
        }
    }
}
