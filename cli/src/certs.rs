//! `legion certs init` (the development certificate set) and `legion certs node` (one more executor).

use std::io::Write;
use std::path::{Path, PathBuf};

use legion_common::tls::{DEV_CERT_FILES, write_dev_certs, write_node_cert};

use crate::error::Error;

/// Writes the development CA and certificates into `dir` (see [`write_dev_certs`]) and prints the path
/// of each file written, one per line. Returns the paths.
///
/// # Errors
/// [`Error::Certs`] when generating or writing fails; [`Error::Output`].
pub fn init(dir: &Path, executor_name: &str, out: &mut impl Write) -> Result<Vec<PathBuf>, Error> {
    write_dev_certs(dir, executor_name).map_err(Error::Certs)?;
    let files: Vec<PathBuf> = DEV_CERT_FILES.iter().map(|f| dir.join(f)).collect();
    for file in &files {
        writeln!(out, "{}", file.display())?;
    }
    out.flush()?;
    Ok(files)
}

/// Signs a certificate for executor node `name` with the CA in `dir` (see [`write_node_cert`]) and
/// prints the two files written. Returns their paths.
///
/// # Errors
/// [`Error::Certs`] when the CA is missing, the name is invalid, or signing or writing fails;
/// [`Error::Output`].
pub fn node(dir: &Path, name: &str, out: &mut impl Write) -> Result<(PathBuf, PathBuf), Error> {
    let (cert, key) = write_node_cert(dir, name).map_err(Error::Certs)?;
    writeln!(out, "{}", cert.display())?;
    writeln!(out, "{}", key.display())?;
    out.flush()?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests;
