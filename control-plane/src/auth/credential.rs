//! Credentials as they arrive: API keys (`x-api-key`), bearer tokens (`authorization: Bearer …`), the
//! request id and the caller's address.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

/// Prefix of the API keys Legion generates (the bootstrap key may be any string of 32+ characters).
pub const KEY_PREFIX: &str = "lgn_";

/// Longest credential accepted, in bytes; longer ones are refused before any work is done.
pub const MAX_CREDENTIAL_BYTES: usize = 8192;

/// Longest request id kept from `x-request-id`, in bytes; a longer or non-printable one is replaced.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A credential presented by a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `x-api-key`.
    ApiKey(String),
    /// `authorization: Bearer <JWT>`.
    Bearer(String),
}

/// Why no usable credential was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// Neither header is present.
    #[error("no credential: send x-api-key or authorization: Bearer <token>")]
    None,
    /// Both are present.
    #[error("send one credential, x-api-key or authorization, not both")]
    Both,
    /// A header is present but malformed.
    #[error("{0}")]
    Malformed(&'static str),
}

/// The credential in `metadata`.
///
/// # Errors
/// [`Missing`] when there is none, two, or a malformed one.
pub fn from_metadata(metadata: &MetadataMap) -> Result<Credential, Missing> {
    let text = |name: &str| metadata.get(name).map(|v| v.to_str().map(str::trim));
    let api_key = text("x-api-key");
    let authorization = text("authorization");
    match (api_key, authorization) {
        (Some(_), Some(_)) => Err(Missing::Both),
        (None, None) => Err(Missing::None),
        (Some(Err(_)), None) => Err(Missing::Malformed("x-api-key is not printable ASCII")),
        (None, Some(Err(_))) => Err(Missing::Malformed("authorization is not printable ASCII")),
        (Some(Ok(key)), None) => {
            if key.is_empty() || key.len() > MAX_CREDENTIAL_BYTES {
                return Err(Missing::Malformed("x-api-key is empty or too long"));
            }
            Ok(Credential::ApiKey(key.to_owned()))
        }
        (None, Some(Ok(value))) => {
            let (scheme, token) =
                value.split_once(' ').ok_or(Missing::Malformed("authorization: expected Bearer <token>"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Missing::Malformed("authorization: only the Bearer scheme is accepted"));
            }
            let token = token.trim();
            if token.is_empty() || token.len() > MAX_CREDENTIAL_BYTES {
                return Err(Missing::Malformed("authorization: the token is empty or too long"));
            }
            Ok(Credential::Bearer(token.to_owned()))
        }
    }
}

/// A new random API key: [`KEY_PREFIX`] and 32 random bytes, base64url (256 bits of entropy).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a key, the only form in which keys are stored. A fast hash is enough: generated
/// keys carry 256 random bits, and the bootstrap key at least 32 characters chosen by the operator.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The request id from `x-request-id` if it is 1 to [`MAX_REQUEST_ID_BYTES`] printable ASCII bytes,
/// else a new UUID.
pub fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, MetadataValue::try_from(*v).expect("ascii"));
        }
        m
    }

    #[test]
    fn one_credential_is_taken_from_either_header() {
        assert_eq!(from_metadata(&metadata(&[("x-api-key", "k1")])), Ok(Credential::ApiKey("k1".into())));
        assert_eq!(
            from_metadata(&metadata(&[("authorization", "Bearer t.t.t")])),
            Ok(Credential::Bearer("t.t.t".into()))
        );
        assert_eq!(from_metadata(&metadata(&[("authorization", "bearer  t")])), Ok(Credential::Bearer("t".into())));
        assert_eq!(from_metadata(&metadata(&[])), Err(Missing::None));
        assert_eq!(from_metadata(&metadata(&[("x-api-key", "k"), ("authorization", "Bearer t")])), Err(Missing::Both));
        assert!(matches!(from_metadata(&metadata(&[("authorization", "Basic dTpw")])), Err(Missing::Malformed(_))));
        assert!(matches!(from_metadata(&metadata(&[("authorization", "Bearer")])), Err(Missing::Malformed(_))));
        assert!(matches!(from_metadata(&metadata(&[("x-api-key", "")])), Err(Missing::Malformed(_))));
    }

    #[test]
    fn generated_keys_are_long_distinct_and_hash_stably() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43, "{a}");
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(request_id(&metadata(&[("x-request-id", "abc-1")])), "abc-1");
        let long = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        assert_ne!(request_id(&metadata(&[("x-request-id", &long)])), long);
        assert_eq!(request_id(&metadata(&[])).len(), 36);
    }
}
