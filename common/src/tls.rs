//! TLS for Legion's gRPC: server and client configs from PEM files, the mapping of a client
//! certificate to a principal, and the development certificate set of `legion certs init`.
//!
//! A Legion certificate names its principal in a URI subject alternative name, in the SPIFFE ID form
//! (`spiffe://legion/node/<name>` for an executor, `spiffe://legion/gateway/<name>` for a gateway).

use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::settings::TlsSettings;

/// Trust domain of Legion's SPIFFE IDs.
pub const TRUST_DOMAIN: &str = "legion";

/// TLS setup failures; each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required setting is not set.
    #[error("settings key {0} is required")]
    Missing(&'static str),
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A setting names a file whose content is unusable.
    #[error("settings key {key}: {reason}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong with the file.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a generated file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Who is on the other end of a TLS connection, from its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An executor node (`spiffe://legion/node/<name>`).
    Node(String),
    /// A gateway (`spiffe://legion/gateway/<name>`).
    Gateway(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(name) => write!(f, "node/{name}"),
            Self::Gateway(name) => write!(f, "gateway/{name}"),
        }
    }
}

/// Reads the file a setting names; the error names the setting.
fn read_setting(key: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Invalid { key, reason: format!("cannot read {}: {e}", path.display()) })
}

/// Checks that `tls.cert` and `tls.key` are readable PEM, that the certificate chain is not empty and
/// that the key belongs to the leaf certificate, so a process refuses to start (exit 64) instead of
/// failing its first handshake. Also checks that `tls.ca` holds at least one certificate.
///
/// # Errors
/// [`Error::Missing`] or [`Error::Invalid`], naming the setting.
pub fn check_identity(tls: &TlsSettings) -> Result<(), Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let ca_path = tls.ca.as_deref().ok_or(Error::Missing("tls.ca"))?;
    let ca = read_setting("tls.ca", ca_path)?;
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca).filter_map(Result::ok).collect();
    if ca_certs.is_empty() {
        return Err(Error::Invalid {
            key: "tls.ca",
            reason: format!("{} holds no PEM certificate", ca_path.display()),
        });
    }
    let cert_path = tls.cert.as_deref().ok_or(Error::Missing("tls.cert"))?;
    let key_path = tls.key.as_deref().ok_or(Error::Missing("tls.key"))?;
    let cert = read_setting("tls.cert", cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(Error::Invalid {
            key: "tls.cert",
            reason: format!("{} holds no PEM certificate", cert_path.display()),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read_setting("tls.key", key_path)?).map_err(|e| Error::Invalid {
        key: "tls.key",
        reason: format!("{} holds no usable PEM private key: {e}", key_path.display()),
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::Invalid { key: "tls.key", reason: format!("unsupported private key: {e}") })?;
    rustls::sign::CertifiedKey::new(certs, signing_key).keys_match().map_err(|e| Error::Invalid {
        key: "tls.key",
        reason: format!("{} does not belong to the certificate {}: {e}", key_path.display(), cert_path.display()),
    })
}

/// The control plane's server config: its identity (`tls.cert`, `tls.key`) and client certificates
/// verified against `tls.ca`. A client certificate is optional at the TLS layer (users authenticate
/// with tokens); services that need one (the executor service) refuse calls without it. A certificate
/// that does not chain to `tls.ca` fails the handshake.
///
/// # Errors
/// [`Error::Missing`], or [`Error::Invalid`] naming the setting whose file cannot be read.
pub fn server_config(tls: &TlsSettings) -> Result<ServerTlsConfig, Error> {
    let cert = read_setting("tls.cert", tls.cert.as_deref().ok_or(Error::Missing("tls.cert"))?)?;
    let key = read_setting("tls.key", tls.key.as_deref().ok_or(Error::Missing("tls.key"))?)?;
    let ca = read_setting("tls.ca", tls.ca.as_deref().ok_or(Error::Missing("tls.ca"))?)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(true))
}

/// A client config that trusts `tls.ca` and, when `tls.cert` and `tls.key` are set, presents them.
///
/// # Errors
/// [`Error::Missing`] when `tls.ca` is unset, [`Error::Invalid`] naming a setting whose file cannot be read.
pub fn client_config(tls: &TlsSettings) -> Result<ClientTlsConfig, Error> {
    let ca = read_setting("tls.ca", tls.ca.as_deref().ok_or(Error::Missing("tls.ca"))?)?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(read_setting("tls.cert", cert)?, read_setting("tls.key", key)?));
    }
    Ok(config)
}

/// Maps a verified client certificate chain (leaf first, DER) to a principal. `None` when there is
/// no certificate or its leaf names no Legion principal.
pub fn principal_from_certs<C: AsRef<[u8]>>(certs: &[C]) -> Option<Principal> {
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => principal_from_spiffe_id(uri),
        _ => None,
    })
}

/// Parses `spiffe://legion/<kind>/<name>`.
pub fn principal_from_spiffe_id(uri: &str) -> Option<Principal> {
    let path = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?.strip_prefix('/')?;
    let (kind, name) = path.split_once('/')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    match kind {
        "node" => Some(Principal::Node(name.to_owned())),
        "gateway" => Some(Principal::Gateway(name.to_owned())),
        _ => None,
    }
}

/// Files written by [`write_dev_certs`].
pub const DEV_CERT_FILES: &[&str] = &[
    "ca.pem",
    "ca-key.pem",
    "control-plane.pem",
    "control-plane-key.pem",
    "executor.pem",
    "executor-key.pem",
    "gateway.pem",
    "gateway-key.pem",
];

/// Writes a development CA and certificates into `dir`: `ca.pem`; `control-plane.pem` (server, valid for
/// `localhost`, `127.0.0.1` and `::1`); `executor.pem` (`spiffe://legion/node/<executor_name>`);
/// `gateway.pem` (`spiffe://legion/gateway/gateway`); each with its `-key.pem` (PKCS#8, mode 0600).
/// Certificates are valid for one year. For development and tests; production uses its own PKI.
///
/// # Errors
/// [`Error::Generate`] or [`Error::Write`].
pub fn write_dev_certs(dir: &Path, executor_name: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_path_buf(), source })?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = dn("Legion development CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(dir, "ca.pem", &ca_cert.pem(), false)?;
    write(dir, "ca-key.pem", &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaves: [(&str, Vec<SanType>, &str, ExtendedKeyUsagePurpose); 3] = [
        (
            "control-plane",
            vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
            ],
            "legion control plane",
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "executor",
            vec![SanType::URI(format!("spiffe://{TRUST_DOMAIN}/node/{executor_name}").try_into()?)],
            "legion executor",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
        (
            "gateway",
            vec![SanType::URI(format!("spiffe://{TRUST_DOMAIN}/gateway/gateway").try_into()?)],
            "legion gateway",
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ];
    for (file, sans, cn, usage) in leaves {
        write_leaf(dir, file, sans, cn, usage, &issuer)?;
    }
    Ok(())
}

/// Signs a certificate for executor node `name` with the CA in `dir` (`ca.pem` and `ca-key.pem`, as
/// written by [`write_dev_certs`]) and writes it as `dir/node-<name>.pem` and `dir/node-<name>-key.pem`
/// (PKCS#8, mode 0600), so that more executors, each under its own node name, can join the same
/// control plane. Returns both paths. For development and tests, like [`write_dev_certs`].
///
/// # Errors
/// [`Error::Invalid`] for a name the settings would refuse (`executor.name`: 1 to 64 bytes of a-z,
/// 0-9, `_` and `-`, starting with a letter); [`Error::Read`] when the CA files are missing;
/// [`Error::Generate`]; [`Error::Write`].
pub fn write_node_cert(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
    crate::function::validate_segment(&name.replace('-', "_"))
        .map_err(|reason| Error::Invalid { key: "executor.name", reason })?;
    let read = |file: &str| -> Result<String, Error> {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?)?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key)?;
    let file = format!("node-{name}");
    let san = SanType::URI(format!("spiffe://{TRUST_DOMAIN}/node/{name}").try_into()?);
    write_leaf(dir, &file, vec![san], "legion executor", ExtendedKeyUsagePurpose::ClientAuth, &issuer)?;
    Ok((dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem"))))
}

/// Signs one leaf certificate (valid from January 1 of last year to December 31 of next year) and
/// writes `dir/<file>.pem` and `dir/<file>-key.pem`.
fn write_leaf(
    dir: &Path,
    file: &str,
    sans: Vec<SanType>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = sans;
    params.distinguished_name = dn(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let cert = params.signed_by(&key, issuer)?;
    write(dir, &format!("{file}.pem"), &cert.pem(), false)?;
    write(dir, &format!("{file}-key.pem"), &key.serialize_pem(), true)
}

fn validity(params: &mut CertificateParams) {
    let year = chrono::Utc::now().year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Legion");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let werr = |source| Error::Write { path: path.clone(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(&path).map_err(werr)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_map_to_principals() {
        assert_eq!(principal_from_spiffe_id("spiffe://legion/node/exec-1"), Some(Principal::Node("exec-1".into())));
        assert_eq!(principal_from_spiffe_id("spiffe://legion/gateway/gw"), Some(Principal::Gateway("gw".into())));
        for bad in [
            "spiffe://other/node/x",
            "spiffe://legion/user/x",
            "spiffe://legion/node/",
            "spiffe://legion/node/a/b",
            "https://legion/node/x",
        ] {
            assert_eq!(principal_from_spiffe_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn dev_certs_carry_their_principals() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_dev_certs(dir.path(), "exec-7").expect("certs");
        for file in DEV_CERT_FILES {
            assert!(dir.path().join(file).is_file(), "{file}");
        }
        let der = |name: &str| {
            let pem = std::fs::read(dir.path().join(name)).expect("read");
            let (_, p) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
            p.contents
        };
        assert_eq!(principal_from_certs(&[der("executor.pem")]), Some(Principal::Node("exec-7".into())));
        assert_eq!(principal_from_certs(&[der("gateway.pem")]), Some(Principal::Gateway("gateway".into())));
        assert_eq!(principal_from_certs(&[der("control-plane.pem")]), None);
        let empty: [Vec<u8>; 0] = [];
        assert_eq!(principal_from_certs(&empty), None);
    }

    #[test]
    fn node_certificates_chain_to_the_dev_ca_and_name_their_node() {
        use std::os::unix::fs::PermissionsExt;
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_dev_certs(dir.path(), "exec-1").expect("dev certs");
        let (cert, key) = write_node_cert(dir.path(), "exec-2").expect("node cert");
        assert_eq!(cert, dir.path().join("node-exec-2.pem"));
        assert_eq!(std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777, 0o600);
        let settings = TlsSettings { ca: Some(dir.path().join("ca.pem")), cert: Some(cert.clone()), key: Some(key) };
        check_identity(&settings).expect("key matches certificate");

        let der = |path: &Path| {
            let pem = std::fs::read(path).expect("read");
            let (_, p) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
            rustls::pki_types::CertificateDer::from(p.contents)
        };
        let leaf = der(&cert);
        assert_eq!(principal_from_certs(std::slice::from_ref(&leaf)), Some(Principal::Node("exec-2".into())));
        let verifier = |ca: &Path| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der(ca)).expect("root");
            rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots)).build().expect("verifier")
        };
        let now = rustls::pki_types::UnixTime::now();
        verifier(&dir.path().join("ca.pem")).verify_client_cert(&leaf, &[], now).expect("chains to the dev CA");
        let other = tempfile::tempdir().expect("tempdir");
        write_dev_certs(other.path(), "exec-1").expect("other dev certs");
        assert!(verifier(&other.path().join("ca.pem")).verify_client_cert(&leaf, &[], now).is_err());
    }

    #[test]
    fn node_certificates_refuse_bad_names_and_a_missing_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "Exec", "1exec", "a/b", "a.b"] {
            assert!(matches!(write_node_cert(dir.path(), bad), Err(Error::Invalid { .. })), "{bad:?}");
        }
        let err = write_node_cert(dir.path(), "exec-2").expect_err("no ca").to_string();
        assert!(err.contains("ca-key.pem"), "{err}");
    }

    #[test]
    fn identity_check_names_the_bad_setting() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_dev_certs(dir.path(), "executor").expect("certs");
        let p = |f: &str| Some(dir.path().join(f));
        let good = TlsSettings { ca: p("ca.pem"), cert: p("executor.pem"), key: p("executor-key.pem") };
        check_identity(&good).expect("matching pair");

        let mismatch = TlsSettings { key: p("gateway-key.pem"), ..good.clone() };
        let err = check_identity(&mismatch).expect_err("mismatch").to_string();
        assert!(err.contains("tls.key"), "{err}");

        let not_pem = TlsSettings { cert: p("ca-key.pem"), ..good.clone() };
        let err = check_identity(&not_pem).expect_err("not a certificate").to_string();
        assert!(err.contains("tls.cert"), "{err}");

        let absent_file = TlsSettings { ca: p("nope.pem"), ..good.clone() };
        let err = check_identity(&absent_file).expect_err("no such file").to_string();
        assert!(err.contains("tls.ca") && err.contains("nope.pem"), "{err}");

        let missing = TlsSettings { cert: None, ..good };
        assert!(matches!(check_identity(&missing), Err(Error::Missing("tls.cert"))));
    }
}
