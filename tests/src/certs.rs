//! Development certificates for a test, written with `legion_common::tls::write_dev_certs`: one CA, a
//! control-plane server certificate, an executor (node) certificate and a gateway certificate. A
//! second call into another directory mints a foreign CA with its own certificates.

use std::path::{Path, PathBuf};

use legion_common::settings::TlsSettings;

/// Which certificate a TLS client presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// No client certificate (a user, `grpcurl`).
    None,
    /// The control plane's server certificate (also usable as the control plane's own identity).
    ControlPlane,
    /// The executor node certificate (`spiffe://legion/node/<node_name>`).
    Executor,
    /// The gateway certificate (`spiffe://legion/gateway/gateway`).
    Gateway,
}

/// A certificate set in a directory.
#[derive(Debug, Clone)]
pub struct TestCerts {
    dir: PathBuf,
    node_name: String,
}

impl TestCerts {
    /// Writes a fresh CA and its certificates into `dir`; the executor certificate names `node_name`.
    ///
    /// # Errors
    /// [`legion_common::tls::Error`] when generating or writing fails.
    pub fn write(dir: &Path, node_name: &str) -> Result<Self, legion_common::tls::Error> {
        legion_common::tls::write_dev_certs(dir, node_name)?;
        Ok(Self { dir: dir.to_path_buf(), node_name: node_name.to_owned() })
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node name in the executor certificate.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The certificate and key files of `identity`; `None` for [`Identity::None`].
    pub fn pair(&self, identity: Identity) -> Option<(PathBuf, PathBuf)> {
        let stem = match identity {
            Identity::None => return None,
            Identity::ControlPlane => "control-plane",
            Identity::Executor => "executor",
            Identity::Gateway => "gateway",
        };
        Some((self.dir.join(format!("{stem}.pem")), self.dir.join(format!("{stem}-key.pem"))))
    }

    /// `tls.*` settings that trust this CA and present `identity`.
    pub fn tls(&self, identity: Identity) -> TlsSettings {
        let (cert, key) = self.pair(identity).unzip();
        TlsSettings { ca: Some(self.ca()), cert, key }
    }

    /// `tls.*` settings that trust `self`'s CA (to reach a control plane with it) but present
    /// `identity` from `other`, e.g. a certificate of a foreign CA.
    pub fn tls_with_identity_of(&self, other: &TestCerts, identity: Identity) -> TlsSettings {
        let (cert, key) = other.pair(identity).unzip();
        TlsSettings { ca: Some(self.ca()), cert, key }
    }

    /// The `tls` section of a settings file, as JSON.
    pub fn tls_json(&self, identity: Identity) -> serde_json::Value {
        let tls = self.tls(identity);
        serde_json::json!({ "ca": tls.ca, "cert": tls.cert, "key": tls.key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_map_to_the_dev_cert_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::write(dir.path(), "node-a").expect("certs");
        assert_eq!(certs.node_name(), "node-a");
        for identity in [Identity::ControlPlane, Identity::Executor, Identity::Gateway] {
            let (cert, key) = certs.pair(identity).expect("pair");
            assert!(cert.is_file() && key.is_file(), "{identity:?}");
        }
        assert!(certs.pair(Identity::None).is_none());
        let tls = certs.tls(Identity::None);
        assert_eq!((tls.ca, tls.cert, tls.key), (Some(certs.ca()), None, None));
        assert_eq!(certs.tls_json(Identity::Gateway)["cert"], serde_json::json!(dir.path().join("gateway.pem")));
    }

    #[test]
    fn a_second_set_has_its_own_ca() {
        let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let ours = TestCerts::write(a.path(), "n").expect("certs");
        let foreign = TestCerts::write(b.path(), "n").expect("certs");
        assert_ne!(std::fs::read(ours.ca()).expect("ca"), std::fs::read(foreign.ca()).expect("ca"));
        let mixed = ours.tls_with_identity_of(&foreign, Identity::Executor);
        assert_eq!(mixed.ca, Some(ours.ca()));
        assert_eq!(mixed.cert, Some(foreign.dir().join("executor.pem")));
    }
}
