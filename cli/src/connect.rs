//! The channel to the control plane: URL and TLS material from the flags, else from the settings.

use std::time::Duration;

use legion_common::Settings;
use legion_common::settings::{Sources, TlsSettings};
use legion_proto::v1::task_service_client::TaskServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::args::Connection;
use crate::error::Error;

/// How long connecting (TCP and TLS) may take, in ms.
pub const CONNECT_TIMEOUT_MS: u64 = 5000;

/// Largest response accepted, in bytes (a page of 1000 tasks with results).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Where the control plane is and how to trust it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port`.
    pub url: String,
    /// CA, and optionally the client certificate and key.
    pub tls: TlsSettings,
}

/// Resolves the target: each flag wins over its setting (`--control-plane` over `control_plane.url`,
/// `--ca` over `tls.ca`, `--cert`/`--key` over `tls.cert`/`tls.key`). `env` replaces the process
/// environment for the settings loader (tests pass their own).
///
/// # Errors
/// [`Error::Settings`] when the settings do not load; [`Error::Usage`] for a URL that is not https.
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
    Ok(Target { url, tls })
}

/// A task-service client over a lazily connected TLS channel; a control plane that cannot be reached
/// shows as `UNAVAILABLE` on the first call.
///
/// # Errors
/// [`Error::Tls`] when a PEM file cannot be read; [`Error::Usage`] for a malformed URL.
pub fn task_client(target: &Target) -> Result<TaskServiceClient<Channel>, Error> {
    let tls = legion_common::tls::client_config(&target.tls).map_err(Error::Tls)?;
    let endpoint = Endpoint::from_shared(target.url.clone())
        .map_err(|e| Error::Usage(format!("--control-plane: {:?}: {e}", target.url)))?
        .tls_config(tls)
        .map_err(|e| Error::Usage(format!("tls: {e}")))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true);
    Ok(TaskServiceClient::new(endpoint.connect_lazy()).max_decoding_message_size(MAX_RESPONSE_BYTES))
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

    #[test]
    fn unreadable_ca_is_a_tls_usage_error() {
        let target = Target {
            url: "https://localhost:1".into(),
            tls: TlsSettings { ca: Some("/nonexistent/ca.pem".into()), cert: None, key: None },
        };
        let err = task_client(&target).expect_err("refused");
        assert!(matches!(err, Error::Tls(_)) && err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert_eq!(err.exit_code(), 64);
    }
}
