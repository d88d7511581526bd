//! Extra executor certificates signed by the development CA of `legion certs init` (or
//! [`legion_common::tls::write_dev_certs`]), so that a second executor can run under its own node
//! name against the same control plane.
//!
//! The certificate matches the executor certificate of `write_dev_certs`: a URI SAN
//! `spiffe://legion/node/<name>`, client-auth usage, valid from January 1 of last year to December 31
//! of next year.

use std::path::{Path, PathBuf};

use chrono::Datelike;
use legion_common::tls::TRUST_DOMAIN;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why a node certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node name is not a valid Legion node name.
    #[error("--name {name:?}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA certificate or key could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA files do not parse, or signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the certificate or key failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Signs a certificate for executor node `name` with the CA in `dir` (`ca.pem`, `ca-key.pem`) and
/// writes it as `dir/<name>.pem` and `dir/<name>-key.pem` (PKCS#8, mode 0600). Returns both paths.
///
/// # Errors
/// [`Error::Name`] for a name the settings would refuse (1 to 64 bytes of `a-z`, `0-9`, `_`, `-`,
/// starting with a letter), [`Error::Read`], [`Error::Generate`], [`Error::Write`].
pub fn write_node_cert(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
    legion_common::function::validate_segment(&name.replace('-', "_"))
        .map_err(|reason| Error::Name { name: name.to_owned(), reason })?;
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?)?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = vec![SanType::URI(format!("spiffe://{TRUST_DOMAIN}/node/{name}").try_into()?)];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Legion");
    dn.push(DnType::CommonName, "legion executor");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let year = chrono::Utc::now().year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
    let cert = params.signed_by(&key, &issuer)?;

    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| Error::Write { path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(werr)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(werr)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use legion_common::tls::{Principal, principal_from_certs, write_dev_certs};
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn der(path: &Path) -> CertificateDer<'static> {
        let pem = std::fs::read(path).expect("read pem");
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
        CertificateDer::from(parsed.contents)
    }

    fn verifier(ca: &Path) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        legion_common::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(ca)).expect("root");
        WebPkiClientVerifier::builder(Arc::new(roots)).build().expect("verifier")
    }

    #[test]
    fn a_second_node_certificate_chains_to_the_same_ca_and_names_its_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_dev_certs(dir.path(), "exec-1").expect("dev certs");
        let (cert, key) = write_node_cert(dir.path(), "exec-2").expect("node cert");
        assert_eq!(cert, dir.path().join("exec-2.pem"));
        assert!(std::fs::read_to_string(&key).expect("key").contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777, 0o600);

        let leaf = der(&cert);
        assert_eq!(principal_from_certs(std::slice::from_ref(&leaf)), Some(Principal::Node("exec-2".into())));
        verifier(&dir.path().join("ca.pem"))
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("the new certificate chains to the dev CA");

        // A CA of another directory does not accept it.
        let other = tempfile::tempdir().expect("tempdir");
        write_dev_certs(other.path(), "exec-1").expect("other dev certs");
        assert!(verifier(&other.path().join("ca.pem")).verify_client_cert(&leaf, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn bad_names_and_missing_ca_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "Exec", "1exec", "a/b", "a.b"] {
            assert!(matches!(write_node_cert(dir.path(), bad), Err(Error::Name { .. })), "{bad:?}");
        }
        let err = write_node_cert(dir.path(), "exec-2").expect_err("no ca");
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }
}
