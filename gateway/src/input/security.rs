//! What REST callers send to the security routes: API keys, tokens, capabilities, policies, the audit
//! trail and settings patches. Each error is a 400 [`Problem`] naming the field and the reason; the
//! control plane checks names, capabilities and policy paths itself (DESIGN.md section 6).

use legion_proto::v1;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{check_depth, page_size, parse_object, query_map};
use crate::problem::Problem;

/// Body of `POST /api/v1/api-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1 to 64 characters of `a-z`, `0-9`, `_`, `.` and `-`, starting with a letter or digit.
    #[schema(example = "ci-runner")]
    pub name: String,
    /// Names of existing policies the key is bound to. Without `sudo` on `api-keys/<name>` they must be
    /// among the caller's own policies.
    #[schema(example = json!(["ops"]))]
    pub policies: Vec<String>,
    /// Lifetime in seconds; absent or 0: the key does not expire.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

impl CreateApiKey {
    /// The members accepted, in documentation order.
    pub const FIELDS: &'static [&'static str] = &["name", "policies", "ttl_s"];

    /// Parses a JSON body; `name` and `policies` are required. Errors as [`parse_object`].
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        parse_object(body, Self::FIELDS, &["name", "policies"])
    }

    /// The gRPC request.
    pub fn into_request(self) -> v1::CreateApiKeyRequest {
        v1::CreateApiKeyRequest { name: self.name, policies: self.policies, ttl_s: self.ttl_s.unwrap_or(0) }
    }
}

/// Body of `POST /api/v1/auth/token`. Its `Debug` form hides the key.
#[derive(Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// An API key; the token carries its principal and policies.
    pub api_key: String,
}

impl std::fmt::Debug for IssueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueToken").field("api_key", &"[REDACTED]").finish()
    }
}

impl IssueToken {
    /// Parses a JSON body; `api_key` is required. Errors as [`parse_object`]; no error repeats the key.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        parse_object(body, &["api_key"], &["api_key"])
    }

    /// The gRPC request.
    pub fn into_request(self) -> v1::IssueTokenRequest {
        v1::IssueTokenRequest { api_key: self.api_key }
    }
}

/// Body of `POST /api/v1/auth/capabilities`, as Vault's `sys/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesBody {
    /// Resource paths to evaluate.
    #[schema(example = json!(["tasks/core/util/echo", "policies/ops"]))]
    pub paths: Vec<String>,
    /// Evaluate these named policies instead of the caller's (needs `sudo` on `policies/*`).
    #[serde(default)]
    pub policies: Option<Vec<String>>,
}

impl CapabilitiesBody {
    /// Parses a JSON body; `paths` is required. Errors as [`parse_object`].
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        parse_object(body, &["paths", "policies"], &["paths"])
    }

    /// The gRPC request.
    pub fn into_request(self) -> v1::CapabilitiesRequest {
        v1::CapabilitiesRequest { paths: self.paths, policies: self.policies.unwrap_or_default() }
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRuleBody {
    /// An exact path, a path ending in the `*` glob, or one with `+` segment wildcards (Vault's policy
    /// path syntax).
    #[schema(example = "tasks/core/*")]
    pub path: String,
    /// Any of `create`, `read`, `update`, `delete`, `list`, `execute`, `sudo`, `deny`.
    #[schema(example = json!(["create", "read", "list"]))]
    pub capabilities: Vec<String>,
}

/// Body of `PUT /api/v1/policies/{name}`, and the file `legion policy apply` reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// The policy's name; optional, and when given it must equal the name in the path.
    #[serde(default)]
    pub name: Option<String>,
    /// The rules; they replace the policy's rules as a whole.
    pub rules: Vec<PolicyRuleBody>,
}

impl PolicyBody {
    /// Parses a JSON body; `rules` is required, each rule needs `path` and `capabilities`. Errors as
    /// [`parse_object`] (`rules[1]: missing field \`path\``).
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        parse_object(body, &["name", "rules"], &["rules"])
    }

    /// The gRPC request for the policy `name`. Error: the body names another policy.
    pub fn into_request(self, name: String) -> Result<v1::PutPolicyRequest, Problem> {
        if let Some(own) = &self.name
            && *own != name
        {
            return Err(Problem::invalid("name", format!("{own:?} does not match the name in the path ({name:?})")));
        }
        let rules =
            self.rules.into_iter().map(|r| v1::PolicyRule { path: r.path, capabilities: r.capabilities }).collect();
        Ok(v1::PutPolicyRequest { name, rules })
    }
}

/// The query parameters of `GET /api/v1/api-keys`.
pub const LIST_API_KEYS_PARAMS: &[&str] = &["include_revoked"];

/// Query parameters of `GET /api/v1/api-keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListApiKeysQuery {
    /// `true` to list revoked keys too; default `false`.
    #[param(value_type = Option<bool>)]
    pub include_revoked: Option<String>,
}

impl ListApiKeysQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut map = query_map(pairs, LIST_API_KEYS_PARAMS)?;
        Ok(Self { include_revoked: map.remove("include_revoked") })
    }

    /// The gRPC request. Error: `include_revoked` other than `true` or `false`.
    pub fn into_request(self) -> Result<v1::ListApiKeysRequest, Problem> {
        let include_revoked = match self.include_revoked.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Problem::invalid("include_revoked", format!("must be true or false, got {other:?}")));
            }
        };
        Ok(v1::ListApiKeysRequest { include_revoked })
    }
}

/// The decisions an audit record holds: `allow`, `deny`, or `error` (authentication failed).
pub const AUDIT_DECISIONS: &[&str] = &["allow", "deny", "error"];

/// The query parameters of `GET /api/v1/audit`.
pub const AUDIT_PARAMS: &[&str] =
    &["principal", "action", "decision", "resource_prefix", "since", "until", "limit", "page_token"];

/// Query parameters of `GET /api/v1/audit`. All are optional; an empty value counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAuditQuery {
    /// Only records of this principal (`api-key/<id>`, `jwt/<sub>`, `node/<name>`, `anonymous`).
    pub principal: Option<String>,
    /// Only records of this action (`authorize`, `policy.put`, `api_key.create`, …).
    pub action: Option<String>,
    /// Only records with this decision: `allow`, `deny` or `error`.
    pub decision: Option<String>,
    /// Only records whose resource path starts with this prefix (`tasks/`).
    pub resource_prefix: Option<String>,
    /// Only records at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only records before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Records per page, 1 to 1000; default 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

impl ListAuditQuery {
    /// Collects decoded `name=value` pairs. Errors: an unknown parameter or one given twice.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Problem> {
        let mut map = query_map(pairs, AUDIT_PARAMS)?;
        Ok(Self {
            principal: map.remove("principal"),
            action: map.remove("action"),
            decision: map.remove("decision"),
            resource_prefix: map.remove("resource_prefix"),
            since: map.remove("since"),
            until: map.remove("until"),
            limit: map.remove("limit"),
            page_token: map.remove("page_token"),
        })
    }

    /// The gRPC request. Errors: a `decision` other than [`AUDIT_DECISIONS`], a `since` or `until`
    /// that is not RFC 3339, a `limit` that is not an integer from 1 to 1000.
    pub fn into_request(self) -> Result<v1::ListAuditRequest, Problem> {
        if let Some(decision) = self.decision.as_deref().filter(|d| !AUDIT_DECISIONS.contains(d)) {
            return Err(Problem::invalid(
                "decision",
                format!("must be one of {}, got {decision:?}", AUDIT_DECISIONS.join(", ")),
            ));
        }
        let limit = page_size(self.limit.as_deref())?;
        Ok(v1::ListAuditRequest {
            principal: self.principal.unwrap_or_default(),
            action: self.action.unwrap_or_default(),
            decision: self.decision.unwrap_or_default(),
            resource_prefix: self.resource_prefix.unwrap_or_default(),
            since: self.since.as_deref().map(|s| parse_time("since", s)).transpose()?,
            until: self.until.as_deref().map(|s| parse_time("until", s)).transpose()?,
            limit,
            page_token: self.page_token.unwrap_or_default(),
        })
    }
}

/// Parses an RFC 3339 time (`2026-01-01T00:00:00Z`, any offset) into a protobuf timestamp. Errors
/// name `field`.
pub fn parse_time(field: &str, value: &str) -> Result<prost_types::Timestamp, Problem> {
    chrono::DateTime::parse_from_rfc3339(value).map(|t| legion_proto::timestamp(t.with_timezone(&chrono::Utc))).map_err(
        |e| Problem::invalid(field, format!("must be an RFC 3339 time like 2026-01-01T00:00:00Z, got {value:?}: {e}")),
    )
}

/// Parses the body of `PATCH /api/v1/config/{section}`: a JSON merge patch (RFC 7396) of the section,
/// which must be an object (a patch that replaces a whole section is refused) no deeper than protobuf
/// carries. `null` members remove keys.
pub fn config_patch(body: &[u8]) -> Result<prost_types::Struct, Problem> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Problem::invalid("body", format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(members) = &value else {
        return Err(Problem::invalid("body", "must be a JSON object: a merge patch of the section's keys"));
    };
    check_depth("body", &value)?;
    Ok(prost_types::Struct {
        fields: members.iter().map(|(k, v)| (k.clone(), legion_proto::json_to_value(v))).collect(),
    })
}
