//! `legion policy|api-key|auth|audit …`: the security commands over gRPC, printing the REST shapes of
//! [`legion_gateway::view`] as pretty JSON, as the task commands do. `policy check` prints one
//! `PATH<TAB>cap,cap` line per path (the REST shape with `--json`); `policy delete` prints nothing;
//! `audit verify` exits 1 when the chain does not verify.

use std::io::{Read, Write};
use std::path::Path;

use legion_gateway::input::PolicyBody;
use legion_gateway::view::{
    ApiKey, ApiKeyList, AuditPage, AuditVerification, CapabilityMap, CreatedApiKey, Policy, PolicyList, Token, WhoAmI,
};
use legion_proto::v1;

use crate::args::{ApiKeyCommand, AuditCommand, AuditList, AuthCommand, PolicyCommand, Secret};
use crate::connect::Clients;
use crate::error::{EXIT_FAILURE, Error};
use crate::task::print_pretty;

/// Runs one `policy` command; `stdin` is read by `policy apply -`.
///
/// # Errors
/// [`Error::Usage`] for an unreadable or malformed policy file or a missing name; [`Error::Grpc`];
/// [`Error::Output`].
pub async fn policy(
    command: PolicyCommand,
    clients: &Clients,
    stdin: impl Read,
    out: &mut impl Write,
) -> Result<u8, Error> {
    match command {
        PolicyCommand::Apply { file, name } => {
            let request = read_policy(&file, name, stdin)?;
            let response = clients.policies().put_policy(request).await?.into_inner();
            let policy = response.policy.ok_or_else(|| missing("PutPolicyResponse.policy"))?;
            print_pretty(out, &Policy::from(&policy))?;
        }
        PolicyCommand::List => {
            let response = clients.policies().list_policies(v1::ListPoliciesRequest {}).await?.into_inner();
            print_pretty(out, &PolicyList::from(&response))?;
        }
        PolicyCommand::Show { name } => {
            let policy = clients.policies().get_policy(v1::GetPolicyRequest { name }).await?.into_inner();
            print_pretty(out, &Policy::from(&policy))?;
        }
        PolicyCommand::Delete { name } => {
            clients.policies().delete_policy(v1::DeletePolicyRequest { name }).await?;
        }
        PolicyCommand::Check { paths, policies, json } => {
            let request = v1::CapabilitiesRequest { paths: paths.clone(), policies };
            let response = clients.auth().capabilities(request).await?.into_inner();
            let map = CapabilityMap::from(&response);
            if json {
                print_pretty(out, &map)?;
            } else {
                write_capability_lines(out, &paths, &map)?;
            }
        }
    }
    Ok(0)
}

/// Reads a policy file (`-`: `stdin`) of the form `{"name","rules":[{"path","capabilities"}]}` into the
/// gRPC request; `name` (from `--name`) wins over the file's.
///
/// # Errors
/// [`Error::Usage`] naming the file: unreadable, not the policy shape (the field is named), or without
/// a name from either source.
pub fn read_policy(file: &Path, name: Option<String>, mut stdin: impl Read) -> Result<v1::PutPolicyRequest, Error> {
    let origin = if file == Path::new("-") { "standard input".to_owned() } else { file.display().to_string() };
    let mut text = Vec::new();
    let read = if file == Path::new("-") {
        stdin.read_to_end(&mut text).map(|_| ())
    } else {
        std::fs::read(file).map(|bytes| text = bytes)
    };
    read.map_err(|e| Error::Usage(format!("cannot read {origin}: {e}")))?;
    let mut body = PolicyBody::parse(&text).map_err(|p| Error::Usage(format!("{origin}: {}", p.detail)))?;
    let Some(name) = name.or_else(|| body.name.take()) else {
        return Err(Error::Usage(format!("--name: required, as {origin} has no \"name\"")));
    };
    body.name = None;
    body.into_request(name).map_err(|p| Error::Usage(format!("{origin}: {}", p.detail)))
}

/// Writes `PATH<TAB>cap,cap` for each of `paths` in order; a path the answer lacks shows `deny`.
///
/// # Errors
/// [`Error::Output`].
pub fn write_capability_lines(out: &mut impl Write, paths: &[String], map: &CapabilityMap) -> Result<(), Error> {
    for path in paths {
        let capabilities =
            map.capabilities.get(path).filter(|c| !c.is_empty()).map_or_else(|| "deny".to_owned(), |c| c.join(","));
        writeln!(out, "{path}\t{capabilities}")?;
    }
    out.flush()?;
    Ok(())
}

/// Runs one `api-key` command.
///
/// # Errors
/// [`Error::Grpc`]; [`Error::Output`].
pub async fn api_key(command: ApiKeyCommand, clients: &Clients, out: &mut impl Write) -> Result<u8, Error> {
    match command {
        ApiKeyCommand::Create { name, policies, ttl_s } => {
            let request = v1::CreateApiKeyRequest { name, policies, ttl_s: ttl_s.unwrap_or(0) };
            let response = clients.auth().create_api_key(request).await?.into_inner();
            let key = response.api_key.ok_or_else(|| missing("CreateApiKeyResponse.api_key"))?;
            print_pretty(out, &CreatedApiKey::new(&key, response.key))?;
        }
        ApiKeyCommand::List { include_revoked } => {
            let response = clients.auth().list_api_keys(v1::ListApiKeysRequest { include_revoked }).await?.into_inner();
            print_pretty(out, &ApiKeyList::from(&response))?;
        }
        ApiKeyCommand::Revoke { id } => {
            let response = clients.auth().revoke_api_key(v1::RevokeApiKeyRequest { id }).await?.into_inner();
            let key = response.api_key.ok_or_else(|| missing("RevokeApiKeyResponse.api_key"))?;
            print_pretty(out, &ApiKey::from(&key))?;
        }
    }
    Ok(0)
}

/// Runs one `auth` command; `api_key` is `--api-key` (`auth token` exchanges it).
///
/// # Errors
/// [`Error::Usage`] for `auth token` without an API key; [`Error::Grpc`]; [`Error::Output`].
pub async fn auth(
    command: AuthCommand,
    clients: &Clients,
    api_key: Option<&Secret>,
    out: &mut impl Write,
) -> Result<u8, Error> {
    match command {
        AuthCommand::Token => {
            let Some(api_key) = api_key.map(|k| k.expose().trim()).filter(|k| !k.is_empty()) else {
                return Err(Error::Usage(
                    "--api-key: required (or LEGION_API_KEY): the key to exchange for a token".into(),
                ));
            };
            let request = v1::IssueTokenRequest { api_key: api_key.to_owned() };
            let response = clients.auth().issue_token(request).await?.into_inner();
            print_pretty(out, &Token::from(&response))?;
        }
        AuthCommand::Whoami => {
            let response = clients.auth().who_am_i(v1::WhoAmIRequest {}).await?.into_inner();
            print_pretty(out, &WhoAmI::from(&response))?;
        }
    }
    Ok(0)
}

/// Runs one `audit` command. Returns 1 when `audit verify` finds the chain broken.
///
/// # Errors
/// [`Error::Grpc`]; [`Error::Output`].
pub async fn audit(command: AuditCommand, clients: &Clients, out: &mut impl Write) -> Result<u8, Error> {
    match command {
        AuditCommand::List(list) => {
            let response = clients.audit().list_audit(audit_request(list)).await?.into_inner();
            print_pretty(out, &AuditPage::from(&response))?;
            Ok(0)
        }
        AuditCommand::Verify => {
            let response = clients.audit().verify_audit(v1::VerifyAuditRequest {}).await?.into_inner();
            let verification = AuditVerification::from(&response);
            print_pretty(out, &verification)?;
            Ok(if verification.valid { 0 } else { EXIT_FAILURE })
        }
    }
}

/// The gRPC request of `audit list`.
pub fn audit_request(list: AuditList) -> v1::ListAuditRequest {
    v1::ListAuditRequest {
        principal: list.principal.unwrap_or_default(),
        action: list.action.unwrap_or_default(),
        decision: list.decision.unwrap_or_default(),
        resource_prefix: list.resource_prefix.unwrap_or_default(),
        since: list.since,
        until: list.until,
        limit: list.limit.unwrap_or(0),
        page_token: list.page_token.unwrap_or_default(),
    }
}

fn missing(field: &str) -> Error {
    Error::Grpc(tonic::Status::internal(format!("control plane response lacks {field}")))
}

#[cfg(test)]
mod tests;
