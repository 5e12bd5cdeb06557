//! Signing keys: generated on first start and kept in the store. The newest key signs; every
//! stored key verifies and is published in the JWKS, so any JWT library can check our tokens.

use std::collections::HashMap;

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use kit::identity::VerifyingKey;

use crate::store::{Store, StoredKey};

const EDDSA: &str = "EdDSA";

/// The key that signs new tokens.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
}

/// Every key the gateway signs or verifies with, and their public JWKS.
pub struct KeySet {
    signing: SigningKey,
    verifying: HashMap<String, VerifyingKey>,
    jwks: JwkSet,
    jwks_json: Bytes,
}

impl KeySet {
    /// Loads the stored keys, generating the first one when the store has none.
    pub async fn load_or_create(store: &Store) -> anyhow::Result<Self> {
        let mut stored = store.signing_keys().await?;
        if stored.is_empty() {
            let key = generate_ed25519()?;
            tracing::info!(kid = %key.kid, "generated the first signing key");
            store.insert_signing_key(&key).await?;
            // Another replica may have raced us; the newest stored key wins for all.
            stored = store.signing_keys().await?;
        }
        Self::from_stored(&stored)
    }

    fn from_stored(stored: &[StoredKey]) -> anyhow::Result<Self> {
        let mut verifying = HashMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut signing = None;
        for key in stored {
            anyhow::ensure!(
                key.algorithm == EDDSA,
                "signing key {} has unsupported algorithm {}",
                key.kid,
                key.algorithm
            );
            let der = STANDARD
                .decode(&key.private_key)
                .with_context(|| format!("decoding signing key {}", key.kid))?;
            let secret = ed25519_dalek::SigningKey::from_pkcs8_der(&der).map_err(|e| {
                anyhow::anyhow!("signing key {} is not an Ed25519 PKCS#8 key: {e}", key.kid)
            })?;
            let jwk = public_jwk(&key.kid, &secret.verifying_key());
            let decoding = DecodingKey::from_jwk(&jwk).context("building a verifying key")?;
            verifying.insert(
                key.kid.clone(),
                VerifyingKey {
                    key: decoding,
                    algorithm: Algorithm::EdDSA,
                },
            );
            jwks.keys.push(jwk);
            if signing.is_none() {
                signing = Some(SigningKey {
                    kid: key.kid.clone(),
                    algorithm: Algorithm::EdDSA,
                    encoding: EncodingKey::from_ed_der(&der),
                });
            }
        }
        let signing = signing.context("the store holds no signing key")?;
        let jwks_json = Bytes::from(serde_json::to_vec(&jwks).context("serializing the JWKS")?);
        Ok(Self {
            signing,
            verifying,
            jwks,
            jwks_json,
        })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    pub fn verifying_keys(&self) -> impl Iterator<Item = (String, VerifyingKey)> + '_ {
        self.verifying
            .iter()
            .map(|(kid, key)| (kid.clone(), key.clone()))
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// The JWKS as served, serialized once.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks_json.clone()
    }
}

/// A new Ed25519 key whose `kid` is its RFC 7638 thumbprint.
pub fn generate_ed25519() -> anyhow::Result<StoredKey> {
    let secret = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = secret
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("encoding a new key: {e}"))?;
    let kid = public_jwk("", &secret.verifying_key())
        .thumbprint(ThumbprintHash::SHA256)
        .context("computing the key's thumbprint")?;
    Ok(StoredKey {
        kid,
        algorithm: EDDSA.to_owned(),
        private_key: STANDARD.encode(der.as_bytes()),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

fn public_jwk(kid: &str, public: &ed25519_dalek::VerifyingKey) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            key_id: (!kid.is_empty()).then(|| kid.to_owned()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        }),
    }
}
