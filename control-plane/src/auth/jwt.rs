//! JSON Web Tokens: signing the tokens the control plane issues and verifying bearer tokens (RFC 7519;
//! JWS RFC 7515; HS256 and RS256 from RFC 7518 section 3; JWKS RFC 7517).
//!
//! Verification reads the header's `alg` and accepts it only if it is in the allow-list
//! ([`legion_common::settings::JwtSettings::accepted_algorithms`]); the key is then chosen by that
//! algorithm's family, so an HS256 token is only ever checked against the HS secret and an RS256 token
//! against the RSA public key (no algorithm confusion), and `none` is not an algorithm at all. `exp`,
//! `iss`, `aud` are required and checked, and `nbf` when present, with `leeway_s` of clock skew.

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use legion_common::settings::JwtSettings;
use serde::{Deserialize, Serialize};

/// Why the JWT settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A key file cannot be read.
    #[error("settings key {key}: cannot read {path}: {source}")]
    Read {
        /// The settings key.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key does not parse.
    #[error("settings key {key}: {reason}")]
    Key {
        /// The settings key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The claims of a Legion token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the principal the token stands for (`api-key/<id>` for exchanged keys).
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: i64,
    /// Token id.
    #[serde(default)]
    pub jti: String,
    /// Names of the policies the token carries.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// The configured keys.
pub struct JwtKeys {
    settings: JwtSettings,
    accepted: Vec<Algorithm>,
    hs: Option<(EncodingKey, DecodingKey)>,
    rs: Option<(EncodingKey, DecodingKey, String)>,
    jwks: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("accepted", &self.accepted).finish_non_exhaustive()
    }
}

/// Why a token was refused. The messages are safe to return to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The header's `alg` is not accepted.
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    /// Malformed, bad signature, expired, not yet valid, or wrong issuer or audience.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// No JWT keys are configured.
    #[error("bearer tokens are not enabled (crypt.jwt)")]
    Disabled,
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, SettingsError> {
    std::fs::read(path).map_err(|source| SettingsError::Read { key, path: path.to_path_buf(), source })
}

impl JwtKeys {
    /// Loads the keys of `settings` (validated by `Settings::validate`).
    ///
    /// # Errors
    /// [`SettingsError`] naming the key at fault.
    pub fn load(settings: &JwtSettings) -> Result<Self, SettingsError> {
        let bad =
            |key: &'static str| move |e: jsonwebtoken::errors::Error| SettingsError::Key { key, reason: e.to_string() };
        let hs = match &settings.hs_secret {
            Some(secret) => Some((
                EncodingKey::from_secret(secret.as_bytes()).map_err(bad("crypt.jwt.hs_secret"))?,
                DecodingKey::from_secret(secret.as_bytes()).map_err(bad("crypt.jwt.hs_secret"))?,
            )),
            None => None,
        };
        let rs = match (&settings.rs_private_key, &settings.rs_public_key) {
            (Some(private), Some(public)) => {
                let encoding = EncodingKey::from_rsa_pem(&read("crypt.jwt.rs_private_key", private)?)
                    .map_err(bad("crypt.jwt.rs_private_key"))?;
                let decoding = DecodingKey::from_rsa_pem(&read("crypt.jwt.rs_public_key", public)?)
                    .map_err(bad("crypt.jwt.rs_public_key"))?;
                let jwk = Jwk::from_decoding_key(&decoding, Some(Algorithm::RS256))
                    .map_err(bad("crypt.jwt.rs_public_key"))?;
                let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(bad("crypt.jwt.rs_public_key"))?;
                // The pair must match, or tokens signed here would never verify.
                let probe =
                    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &serde_json::json!({"probe": 1}), &encoding)
                        .map_err(bad("crypt.jwt.rs_private_key"))?;
                let mut validation = Validation::new(Algorithm::RS256);
                validation.required_spec_claims.clear();
                validation.validate_exp = false;
                validation.validate_aud = false;
                jsonwebtoken::decode::<serde_json::Value>(&probe, &decoding, &validation).map_err(|_| {
                    SettingsError::Key {
                        key: "crypt.jwt.rs_public_key",
                        reason: "does not match crypt.jwt.rs_private_key".into(),
                    }
                })?;
                Some((encoding, decoding, kid))
            }
            _ => None,
        };
        let accepted = settings
            .accepted_algorithms()
            .iter()
            .filter_map(|a| match a.as_str() {
                "HS256" => Some(Algorithm::HS256),
                "RS256" => Some(Algorithm::RS256),
                _ => None,
            })
            .collect();
        let mut set = JwkSet { keys: Vec::new() };
        if let Some((_, decoding, kid)) = &rs {
            let mut jwk =
                Jwk::from_decoding_key(decoding, Some(Algorithm::RS256)).map_err(bad("crypt.jwt.rs_public_key"))?;
            jwk.common.key_id = Some(kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            set.keys.push(jwk);
        }
        let jwks =
            serde_json::to_string(&set).map_err(|e| SettingsError::Key { key: "crypt.jwt", reason: e.to_string() })?;
        Ok(Self { settings: settings.clone(), accepted, hs, rs, jwks })
    }

    /// Whether tokens can be issued (a signing key is configured).
    pub fn can_sign(&self) -> bool {
        self.rs.is_some() || self.hs.is_some()
    }

    /// The JWKS document (`{"keys":[…]}`): the RS256 public key, if any. Never an HS secret.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Signs a token for `sub` with `policies`, valid from `now` until `now + ttl_s`, but never past
    /// `not_after`. RS256 when an RSA key is configured, else HS256.
    ///
    /// # Errors
    /// [`Refused::Disabled`] without a signing key.
    pub fn issue(
        &self,
        sub: &str,
        policies: &[String],
        now: DateTime<Utc>,
        not_after: Option<DateTime<Utc>>,
    ) -> Result<(String, DateTime<Utc>), Refused> {
        let ttl = i64::try_from(self.settings.ttl_s).unwrap_or(i64::MAX);
        let mut exp = now.timestamp().saturating_add(ttl);
        if let Some(limit) = not_after {
            exp = exp.min(limit.timestamp());
        }
        let claims = Claims {
            sub: sub.to_owned(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            exp,
            nbf: Some(now.timestamp()),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            policies: policies.to_vec(),
        };
        let (header, key) = match (&self.rs, &self.hs) {
            (Some((key, _, kid)), _) => {
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(kid.clone());
                (header, key)
            }
            (None, Some((key, _))) => (Header::new(Algorithm::HS256), key),
            (None, None) => return Err(Refused::Disabled),
        };
        let token = jsonwebtoken::encode(&header, &claims, key).map_err(|e| Refused::Invalid(e.to_string()))?;
        let expires_at = DateTime::from_timestamp(exp, 0).unwrap_or(now);
        Ok((token, expires_at))
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    /// [`Refused`]: no JWT key is configured ([`Refused::Disabled`]), the algorithm is not accepted, or
    /// the token does not verify.
    pub fn verify(&self, token: &str) -> Result<Claims, Refused> {
        if self.hs.is_none() && self.rs.is_none() {
            return Err(Refused::Disabled);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refused::Invalid(e.to_string()))?;
        if !self.accepted.contains(&header.alg) {
            return Err(Refused::Algorithm(format!("{:?}", header.alg)));
        }
        let key = match header.alg {
            Algorithm::HS256 => self.hs.as_ref().map(|(_, d)| d),
            Algorithm::RS256 => self.rs.as_ref().map(|(_, d, _)| d),
            _ => None,
        }
        .ok_or_else(|| Refused::Algorithm(format!("{:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.settings.leeway_s;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| Refused::Invalid(e.to_string()))?;
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests;
