//! `legion chain …`: define chains over gRPC (`legion.v1.ChainService`). `apply` reads the REST body of
//! `POST /api/v1/chains` from a JSON or YAML file ([`legion_gateway::input::ChainBody`], so a file is
//! refused exactly as the REST API refuses the same body) and prints one line:
//! `chain NAME created|changed|unchanged, version N`. `list` prints a table, `show` the REST shape
//! ([`legion_gateway::view::Chain`]) as pretty JSON, which `apply` takes back (its output-only members
//! are ignored), `delete` nothing.

use std::io::{Read, Write};
use std::path::Path;

use chrono::SecondsFormat;
use legion_gateway::input::ChainBody;
use legion_gateway::view::Chain;
use legion_proto::v1;
use legion_proto::v1::chain_service_client::ChainServiceClient;

use crate::args::ChainCommand;
use crate::connect::AuthChannel;
use crate::error::Error;
use crate::task::print_pretty;

/// Chains per `ListChains` page for `chain list` (the API's maximum).
pub const PAGE_SIZE: u32 = 1000;

/// Runs one `chain` command with the client `connect` gives; `stdin` is read by `chain apply -`. The
/// chain file is read and checked before connecting, so a bad file is reported as such whatever the
/// connection settings.
///
/// # Errors
/// [`Error::Usage`] for an unreadable or malformed chain file (exit 64); `connect`'s error;
/// [`Error::Grpc`] when the control plane refuses a call (an invalid definition is `INVALID_ARGUMENT`
/// naming the field) or cannot be reached; [`Error::Output`].
pub async fn run(
    command: ChainCommand,
    connect: impl FnOnce() -> Result<ChainServiceClient<AuthChannel>, Error>,
    stdin: impl Read,
    out: &mut impl Write,
) -> Result<u8, Error> {
    match command {
        ChainCommand::Apply { file } => {
            let request = read_chain(&file, stdin)?.into_request();
            let response = connect()?.apply_chain(request).await?.into_inner();
            let chain = response.chain.as_ref().ok_or_else(|| missing("ApplyChainResponse.chain"))?;
            writeln!(out, "{}", applied_line(&chain.name, response.created, response.changed, chain.version))?;
            out.flush()?;
        }
        ChainCommand::List => {
            let chains = list_all(&mut connect()?).await?;
            write_table(out, &chains)?;
        }
        ChainCommand::Show { name } => {
            let chain = connect()?.get_chain(v1::GetChainRequest { name }).await?.into_inner();
            print_pretty(out, &Chain::from(&chain))?;
        }
        ChainCommand::Delete { name } => {
            connect()?.delete_chain(v1::DeleteChainRequest { name }).await?;
        }
    }
    Ok(0)
}

/// The line `chain apply` prints: `chain NAME created, version N`, `… changed, version N` (a new
/// version) or `… unchanged, version N` (the chain already had this definition).
pub fn applied_line(name: &str, created: bool, changed: bool, version: i64) -> String {
    let what = match (created, changed) {
        (true, _) => "created",
        (false, true) => "changed",
        (false, false) => "unchanged",
    };
    format!("chain {name} {what}, version {version}")
}

/// Reads a chain document from `file` (`-`: `stdin`): YAML when the file name ends in `.yaml` or
/// `.yml` (any case), else JSON, else YAML. The document has the shape of the REST body of
/// `POST /api/v1/chains` and is checked the same way ([`ChainBody::from_value`]).
///
/// # Errors
/// [`Error::Usage`] naming the file (or `standard input`): unreadable, not JSON nor YAML (both parse
/// errors are given, with their positions), or not the chain shape (the field is named, e.g.
/// `chain.yaml: relationships[0].timeout_ms: invalid value: integer \`4294967296\`, expected u32`).
pub fn read_chain(file: &Path, mut stdin: impl Read) -> Result<ChainBody, Error> {
    let from_stdin = file == Path::new("-");
    let origin = if from_stdin { "standard input".to_owned() } else { file.display().to_string() };
    let mut bytes = Vec::new();
    let read =
        if from_stdin { stdin.read_to_end(&mut bytes).map(|_| ()) } else { std::fs::read(file).map(|b| bytes = b) };
    read.map_err(|e| Error::Usage(format!("cannot read {origin}: {e}")))?;
    let document = parse_document(&bytes, is_yaml_name(file)).map_err(|e| Error::Usage(format!("{origin}: {e}")))?;
    ChainBody::from_value(&document).map_err(|p| Error::Usage(format!("{origin}: {}", p.detail)))
}

/// Whether a file name says YAML: it ends in `.yaml` or `.yml`, in any case.
pub fn is_yaml_name(file: &Path) -> bool {
    file.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Parses a document as YAML when `yaml`, else as JSON and, failing that, as YAML. The error names the
/// format(s) tried and their reasons.
pub fn parse_document(bytes: &[u8], yaml: bool) -> Result<serde_json::Value, String> {
    if yaml {
        return serde_yaml_ng::from_slice(bytes).map_err(|e| format!("not valid YAML: {e}"));
    }
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(json) => {
            serde_yaml_ng::from_slice(bytes).map_err(|yaml| format!("not valid JSON ({json}) nor YAML ({yaml})"))
        }
    }
}

/// Every chain, by name: `ListChains` page after page.
///
/// # Errors
/// [`Error::Grpc`], also when the control plane hands out the same page token twice.
pub async fn list_all(client: &mut ChainServiceClient<AuthChannel>) -> Result<Vec<Chain>, Error> {
    let mut chains = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListChainsRequest { page_size: PAGE_SIZE, page_token: page_token.clone() };
        let response = client.list_chains(request).await?.into_inner();
        chains.extend(response.chains.iter().map(Chain::from));
        if response.next_page_token.is_empty() {
            return Ok(chains);
        }
        if response.next_page_token == page_token {
            return Err(Error::Grpc(tonic::Status::internal(format!(
                "the control plane returned page token {page_token:?} twice while listing chains"
            ))));
        }
        page_token = response.next_page_token;
    }
}

/// Writes `chains` as a table with a header: `NAME  VERSION  RELATIONSHIPS  UPDATED_AT  UPDATED_BY`,
/// columns padded to their widest value, times in RFC 3339 to the second, absent values as `-`.
///
/// # Errors
/// [`Error::Output`].
pub fn write_table(out: &mut impl Write, chains: &[Chain]) -> Result<(), Error> {
    let header = ["NAME", "VERSION", "RELATIONSHIPS", "UPDATED_AT", "UPDATED_BY"].map(str::to_owned);
    let rows: Vec<[String; 5]> = chains
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.version.to_string(),
                c.relationships.len().to_string(),
                c.updated_at.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                c.updated_by.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn missing(what: &str) -> Error {
    Error::Grpc(tonic::Status::internal(format!("control plane response lacks {what}")))
}

#[cfg(test)]
mod tests;
