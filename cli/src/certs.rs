//! `legion certs init`: the development certificate set.

use std::io::Write;
use std::path::{Path, PathBuf};

use legion_common::tls::{DEV_CERT_FILES, write_dev_certs};

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

#[cfg(test)]
mod tests;
