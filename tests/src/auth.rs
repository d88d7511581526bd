//! The credentials the harness's clients send (DESIGN.md section 6): an API key (`x-api-key`) or a
//! JWT (`authorization: Bearer …`), the same over gRPC, REST and the CLI.
//!
//! Every control plane the harness starts creates the API key [`ADMIN_KEY`] at start
//! (`auth.bootstrap_admin_key`, bound to the built-in `admin` policy: every capability on `*`), and
//! every client the harness hands out sends it by default. Security tests choose another credential,
//! or none, with [`Auth`].

use legion_common::credential::{Credential, Invalid};

/// `auth.bootstrap_admin_key` of every control plane the harness starts: an API key with the `admin`
/// policy. At least 32 characters, as the settings loader requires.
pub const ADMIN_KEY: &str = "legion-e2e-bootstrap-admin-key-0123456789abcdef";

/// What a client sends to prove who it is. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Nothing: an anonymous call, which every user-facing call refuses (`UNAUTHENTICATED`, REST 401).
    None,
    /// An API key: gRPC metadata `x-api-key`, REST header `X-API-Key`, CLI `--api-key`.
    ApiKey(String),
    /// A JWT: gRPC metadata and REST header `authorization: Bearer <token>`, CLI `--token`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("Auth::None"),
            Self::ApiKey(key) if key == ADMIN_KEY => f.write_str("Auth::ApiKey(ADMIN_KEY)"),
            Self::ApiKey(_) => f.write_str("Auth::ApiKey([REDACTED])"),
            Self::Bearer(_) => f.write_str("Auth::Bearer([REDACTED])"),
        }
    }
}

impl Auth {
    /// The bootstrap admin key, [`ADMIN_KEY`]: what the harness's clients send by default.
    pub fn admin() -> Self {
        Self::ApiKey(ADMIN_KEY.to_owned())
    }

    /// An API key.
    pub fn api_key(key: impl Into<String>) -> Self {
        Self::ApiKey(key.into())
    }

    /// A bearer token (a JWT, e.g. from `POST /api/v1/auth/token`).
    pub fn bearer(token: impl Into<String>) -> Self {
        Self::Bearer(token.into())
    }

    /// The gRPC interceptor that puts this credential on every call.
    ///
    /// # Errors
    /// [`Invalid`] when the secret is not a valid metadata value (non-ASCII or control bytes); to
    /// send such a value on purpose, use REST or raw metadata.
    pub fn credential(&self) -> Result<Credential, Invalid> {
        match self {
            Self::None => Ok(Credential::none()),
            Self::ApiKey(key) => Credential::api_key(key),
            Self::Bearer(token) => Credential::bearer(token),
        }
    }

    /// The REST header `(name, value)` carrying this credential; `None` for [`Auth::None`].
    pub fn header(&self) -> Option<(&'static str, String)> {
        match self {
            Self::None => None,
            Self::ApiKey(key) => Some(("X-API-Key", key.clone())),
            Self::Bearer(token) => Some(("Authorization", format!("Bearer {token}"))),
        }
    }

    /// The `legion` CLI's global arguments for this credential (`--api-key KEY`, `--token JWT`, or
    /// none).
    pub fn cli_args(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::ApiKey(key) => vec!["--api-key".to_owned(), key.clone()],
            Self::Bearer(token) => vec!["--token".to_owned(), token.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn the_admin_key_is_a_valid_bootstrap_key_and_metadata_value() {
        assert!(ADMIN_KEY.chars().count() >= 32, "auth.bootstrap_admin_key needs at least 32 characters");
        let mut credential = Auth::admin().credential().expect("valid metadata");
        let request = credential.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()), Some(ADMIN_KEY));
    }

    #[test]
    fn each_kind_maps_to_its_header_and_cli_flag_and_hides_its_secret() {
        assert_eq!(Auth::None.header(), None);
        assert!(Auth::None.cli_args().is_empty());
        assert!(!Auth::None.credential().expect("none").is_set());
        assert_eq!(Auth::api_key("k1").header(), Some(("X-API-Key", "k1".to_owned())));
        assert_eq!(Auth::api_key("k1").cli_args(), ["--api-key", "k1"]);
        assert_eq!(Auth::bearer("t1").header(), Some(("Authorization", "Bearer t1".to_owned())));
        assert_eq!(Auth::bearer("t1").cli_args(), ["--token", "t1"]);
        let printed = format!("{:?} {:?} {:?}", Auth::admin(), Auth::api_key("k1"), Auth::bearer("t1"));
        assert!(!printed.contains("k1") && !printed.contains("t1") && !printed.contains(ADMIN_KEY), "{printed}");
        assert!(Auth::api_key("bad\nkey").credential().is_err());
    }
}
