//! The credential a gRPC client sends to the control plane (DESIGN.md section 6): `x-api-key: <key>` or
//! `authorization: Bearer <JWT>` metadata on every call, added by a tonic interceptor.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A credential that cannot be sent: it is not a valid metadata value (non-ASCII or control bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} is not a valid header value (printable ASCII only)")]
pub struct Invalid(pub &'static str);

/// Adds a credential to each request's metadata; [`Credential::none`] adds nothing. Its `Debug` output
/// never shows the secret.
#[derive(Clone, Default)]
pub struct Credential(Option<(&'static str, MetadataValue<Ascii>)>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some((name, _)) => write!(f, "Credential({name}: [REDACTED])"),
            None => f.write_str("Credential(none)"),
        }
    }
}

impl Credential {
    /// No credential.
    pub fn none() -> Self {
        Self(None)
    }

    /// `x-api-key: <key>`.
    ///
    /// # Errors
    /// [`Invalid`] when the key is not a valid metadata value.
    pub fn api_key(key: &str) -> Result<Self, Invalid> {
        Ok(Self(Some(("x-api-key", key.parse().map_err(|_| Invalid("API key"))?))))
    }

    /// `authorization: Bearer <token>`.
    ///
    /// # Errors
    /// [`Invalid`] when the token is not a valid metadata value.
    pub fn bearer(token: &str) -> Result<Self, Invalid> {
        Ok(Self(Some(("authorization", format!("Bearer {token}").parse().map_err(|_| Invalid("token"))?))))
    }

    /// The API key if given, else the bearer token if given, else none.
    ///
    /// # Errors
    /// [`Invalid`] as [`Credential::api_key`] and [`Credential::bearer`].
    pub fn from_options(api_key: Option<&str>, token: Option<&str>) -> Result<Self, Invalid> {
        match (api_key, token) {
            (Some(key), _) => Self::api_key(key),
            (None, Some(token)) => Self::bearer(token),
            (None, None) => Ok(Self::none()),
        }
    }

    /// Whether a credential is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl Interceptor for Credential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some((name, value)) = &self.0 {
            request.metadata_mut().insert(*name, value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a [`Credential`].
pub type AuthChannel = InterceptedService<Channel, Credential>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_wins_and_is_never_printed() {
        let mut c = Credential::from_options(Some("k1"), Some("t1")).expect("valid");
        let request = c.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()), Some("k1"));
        assert!(request.metadata().get("authorization").is_none());
        assert!(!format!("{c:?}").contains("k1"));
        let mut c = Credential::from_options(None, Some("t1")).expect("valid");
        let request = c.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(request.metadata().get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer t1"));
        assert_eq!(Credential::api_key("bad\nkey").expect_err("newline"), Invalid("API key"));
        assert!(!Credential::none().is_set());
    }
}
