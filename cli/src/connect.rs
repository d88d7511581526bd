//! The channel to the control plane: URL and TLS material from the flags, else from the settings; the
//! caller's credentials (`--api-key`, `--token`) on every call.

use std::time::Duration;

use legion_common::Settings;
pub use legion_common::credential::{AuthChannel, Credential};
use legion_common::settings::{Sources, TlsSettings};
use legion_proto::v1::audit_service_client::AuditServiceClient;
use legion_proto::v1::auth_service_client::AuthServiceClient;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::dead_letter_service_client::DeadLetterServiceClient;
use legion_proto::v1::policy_service_client::PolicyServiceClient;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::args::{Connection, Secret};
use crate::error::Error;

/// How long connecting (TCP and TLS) may take, in ms.
pub const CONNECT_TIMEOUT_MS: u64 = 5000;

/// Largest response accepted, in bytes (a page of 1000 tasks with results).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Where the control plane is, how to trust it and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port`.
    pub url: String,
    /// CA, and optionally the client certificate and key.
    pub tls: TlsSettings,
    /// The credential sent on every call.
    pub credential: Credential,
}

/// The caller's credential from `--api-key` and `--token`, for [`Credential`] to put on every call:
/// `x-api-key: <key>`, else `authorization: Bearer <JWT>` (the API key wins when both are given, as
/// everywhere in Legion). An empty value counts as absent; a token may be given with or without its
/// `Bearer ` prefix.
///
/// # Errors
/// [`Error::Usage`] naming the flag (never the value) when a value is not visible ASCII.
pub fn credential(api_key: Option<&Secret>, token: Option<&Secret>) -> Result<Credential, Error> {
    let check = |flag: &str, value: Option<&str>| match value {
        Some(v) if !v.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(Error::Usage(format!("{flag}: must be visible ASCII without spaces (the value is not shown)")))
        }
        _ => Ok(()),
    };
    let api_key = api_key.map(Secret::expose).map(str::trim).filter(|k| !k.is_empty());
    let token = token.map(Secret::expose).map(str::trim).map(strip_bearer).filter(|t| !t.is_empty());
    check("--api-key", api_key)?;
    check("--token", token)?;
    Credential::from_options(api_key, token).map_err(|e| Error::Usage(format!("{e} (the value is not shown)")))
}

fn strip_bearer(token: &str) -> &str {
    match token.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_start(),
        _ => token,
    }
}

/// The gRPC clients of the control plane's services, over one lazily connected TLS channel; a control
/// plane that cannot be reached shows as `UNAVAILABLE` on the first call.
#[derive(Debug, Clone)]
pub struct Clients {
    channel: Channel,
    credential: Credential,
}

impl Clients {
    /// `legion.v1.TaskService`.
    pub fn tasks(&self) -> TaskServiceClient<AuthChannel> {
        TaskServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `legion.v1.DeadLetterService`.
    pub fn dead_letters(&self) -> DeadLetterServiceClient<AuthChannel> {
        DeadLetterServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `legion.v1.ChainService`.
    pub fn chains(&self) -> ChainServiceClient<AuthChannel> {
        ChainServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `legion.v1.ScheduleService`.
    pub fn schedules(&self) -> ScheduleServiceClient<AuthChannel> {
        ScheduleServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `legion.v1.AuthService`.
    pub fn auth(&self) -> AuthServiceClient<AuthChannel> {
        AuthServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `legion.v1.PolicyService`.
    pub fn policies(&self) -> PolicyServiceClient<AuthChannel> {
        PolicyServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `legion.v1.AuditService`.
    pub fn audit(&self) -> AuditServiceClient<AuthChannel> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.credential.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
}

/// Resolves the target: each flag wins over its setting (`--control-plane` over `control_plane.url`,
/// `--ca` over `tls.ca`, `--cert`/`--key` over `tls.cert`/`tls.key`); the credentials come from
/// `--api-key` and `--token` ([`credential`]). `env` replaces the process environment for the
/// settings loader (tests pass their own).
///
/// # Errors
/// [`Error::Settings`] when the settings do not load; [`Error::Usage`] for a URL that is not https or an
/// unusable credential.
pub fn resolve(
    connection: &Connection,
    env: Option<std::collections::BTreeMap<String, String>>,
    skip_standard_dirs: bool,
) -> Result<Target, Error> {
    let sources = Sources {
        dirs: connection.settings_dirs.clone(),
        files: connection.settings_files.clone(),
        skip_standard_dirs,
        env,
    };
    let settings = Settings::load(&sources)?;
    let url = connection.control_plane.clone().unwrap_or(settings.control_plane.url);
    if !url.starts_with("https://") {
        return Err(Error::Usage(format!(
            "--control-plane: {url:?} must start with https:// (the control plane serves TLS only)"
        )));
    }
    let (cert, key) = match (&connection.cert, &connection.key) {
        (Some(cert), Some(key)) => (Some(cert.clone()), Some(key.clone())),
        _ => (settings.tls.cert, settings.tls.key),
    };
    let tls = TlsSettings { ca: connection.ca.clone().or(settings.tls.ca), cert, key };
    if tls.ca.is_none() {
        return Err(Error::Usage("--ca: required (or set tls.ca in the settings)".into()));
    }
    let credential = credential(connection.api_key.as_ref(), connection.token.as_ref())?;
    Ok(Target { url, tls, credential })
}

/// The clients over a lazily connected TLS channel to `target`.
///
/// # Errors
/// [`Error::Tls`] when a PEM file cannot be read; [`Error::Usage`] for a malformed URL.
pub fn clients(target: &Target) -> Result<Clients, Error> {
    let tls = legion_common::tls::client_config(&target.tls).map_err(Error::Tls)?;
    let endpoint = Endpoint::from_shared(target.url.clone())
        .map_err(|e| Error::Usage(format!("--control-plane: {:?}: {e}", target.url)))?
        .tls_config(tls)
        .map_err(|e| Error::Usage(format!("tls: {e}")))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    Ok(Clients { channel: endpoint.connect_lazy(), credential: target.credential.clone() })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    fn connection(dir: &std::path::Path) -> Connection {
        Connection { settings_dirs: vec![dir.to_path_buf()], ..Connection::default() }
    }

    #[test]
    fn flags_win_over_settings() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"control_plane":{"url":"https://cp:1"},"tls":{"ca":"/s/ca.pem","cert":"/s/c.pem","key":"/s/k.pem"}}"#,
        )
        .expect("write");
        let target = resolve(&connection(dir.path()), Some(BTreeMap::new()), true).expect("resolves");
        assert_eq!(target.url, "https://cp:1");
        assert_eq!(target.tls.ca, Some(PathBuf::from("/s/ca.pem")));
        assert_eq!(target.tls.cert, Some(PathBuf::from("/s/c.pem")));

        let flags = Connection {
            control_plane: Some("https://other:2".into()),
            ca: Some("/f/ca.pem".into()),
            cert: Some("/f/c.pem".into()),
            key: Some("/f/k.pem".into()),
            ..connection(dir.path())
        };
        let target = resolve(&flags, Some(BTreeMap::new()), true).expect("resolves");
        assert_eq!(target.url, "https://other:2");
        assert_eq!(target.tls.ca, Some(PathBuf::from("/f/ca.pem")));
        assert_eq!(target.tls.key, Some(PathBuf::from("/f/k.pem")));
    }

    #[test]
    fn plain_http_and_a_missing_ca_are_usage_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags = Connection { control_plane: Some("http://cp:1".into()), ..connection(dir.path()) };
        let err = resolve(&flags, Some(BTreeMap::new()), true).expect_err("refused");
        assert!(err.to_string().starts_with("--control-plane:"), "{err}");
        assert_eq!(err.exit_code(), 64);
        let err = resolve(&connection(dir.path()), Some(BTreeMap::new()), true).expect_err("refused");
        assert!(err.to_string().starts_with("--ca: required"), "{err}");
    }

    #[test]
    fn settings_come_from_the_environment_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: BTreeMap<String, String> = [
            ("LEGION_CONTROL_PLANE__URL".to_owned(), "https://env:3".to_owned()),
            ("LEGION_TLS__CA".to_owned(), "/e/ca.pem".to_owned()),
        ]
        .into_iter()
        .collect();
        let target = resolve(&connection(dir.path()), Some(env), true).expect("resolves");
        assert_eq!((target.url.as_str(), target.tls.ca), ("https://env:3", Some(PathBuf::from("/e/ca.pem"))));
    }

    fn secret(value: &str) -> Secret {
        Secret::new(value)
    }

    #[test]
    fn the_credential_goes_on_every_call() {
        use tonic::service::Interceptor;
        let call = |mut credential: Credential| credential.call(tonic::Request::new(())).expect("intercepted");
        let request = call(credential(Some(&secret("lgn_abc")), None).expect("valid"));
        assert_eq!(request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()), Some("lgn_abc"));
        let request = call(credential(Some(&secret(" lgn_abc ")), Some(&secret("eyJ.x.y"))).expect("valid"));
        assert_eq!(request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()), Some("lgn_abc"));
        assert!(request.metadata().get("authorization").is_none(), "the API key wins");
        for token in ["eyJ.x.y", "Bearer eyJ.x.y", "bearer  eyJ.x.y"] {
            let request = call(credential(None, Some(&secret(token))).expect("valid"));
            let value = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
            assert_eq!(value, Some("Bearer eyJ.x.y"), "{token}");
        }
        let request = call(credential(Some(&secret("")), Some(&secret("  "))).expect("empty is absent"));
        assert!(request.metadata().is_empty());
    }

    #[test]
    fn credentials_are_never_shown() {
        let credential = credential(Some(&secret("lgn_topsecret")), None).expect("valid");
        let debug = format!("{credential:?} {:?}", secret("lgn_topsecret"));
        assert!(!debug.contains("topsecret"), "{debug}");
        for (key, token, flag) in [
            (Some("k\u{e9}y-topsecret"), None, "--api-key"),
            (Some("a topsecret"), None, "--api-key"),
            (None, Some("Bearer a\ttopsecret"), "--token"),
        ] {
            let err = super::credential(key.map(secret).as_ref(), token.map(secret).as_ref()).expect_err("refused");
            let text = err.to_string();
            assert!(text.starts_with(flag) && !text.contains("topsecret"), "{text}");
            assert_eq!(err.exit_code(), 64);
        }
    }

    #[test]
    fn unreadable_ca_is_a_tls_usage_error() {
        let target = Target {
            url: "https://localhost:1".into(),
            tls: TlsSettings { ca: Some("/nonexistent/ca.pem".into()), cert: None, key: None },
            credential: Credential::none(),
        };
        let err = clients(&target).expect_err("refused");
        assert!(matches!(err, Error::Tls(_)) && err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert_eq!(err.exit_code(), 64);
    }
}
