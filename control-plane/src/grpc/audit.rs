//! `legion.v1.AuditService`: pages of the audit trail and its verification (capability `read` on
//! `audit`).

use legion_common::ErrorCode;
use legion_proto::v1;
use legion_proto::v1::audit_service_server::AuditService;
use prost_types::Struct;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use super::{invalid, status};
use crate::audit::{self, AuditFilter, Decision, Record};
use crate::auth::Auth;
use crate::policy::Capability;

/// The resource path of the audit trail.
pub const AUDIT_PATH: &str = "audit";

/// The audit API over the database.
pub struct AuditApi {
    pool: PgPool,
    auth: Auth,
}

impl AuditApi {
    /// The service.
    pub fn new(pool: PgPool, auth: Auth) -> Self {
        Self { pool, auth }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit(
        &self,
        request: Request<v1::ListAuditRequest>,
    ) -> Result<Response<v1::ListAuditResponse>, Status> {
        let filter = filter(request.get_ref())?;
        self.auth.authorize(&request, AUDIT_PATH, Capability::Read).await?;
        let page = audit::list(&self.pool, &filter).await.map_err(audit_status)?;
        Ok(Response::new(v1::ListAuditResponse {
            records: page.records.iter().map(record).collect(),
            next_page_token: page.next_before.map(audit::encode_page_token).unwrap_or_default(),
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<v1::VerifyAuditRequest>,
    ) -> Result<Response<v1::VerifyAuditResponse>, Status> {
        self.auth.authorize(&request, AUDIT_PATH, Capability::Read).await?;
        let verification = audit::verify(&self.pool).await.map_err(audit_status)?;
        if !verification.valid {
            tracing::warn!(
                first_broken = ?verification.first_broken,
                reason = %verification.reason,
                "the audit trail does not verify"
            );
        }
        Ok(Response::new(v1::VerifyAuditResponse {
            valid: verification.valid,
            checked: verification.checked,
            first_broken: verification.first_broken,
            reason: verification.reason,
        }))
    }
}

/// The filter of a `ListAudit` request.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field: `decision` other than `allow`, `deny`, `error`; `limit` over
/// 1000; a `page_token` not from a previous response; `since`/`until` out of range; `until` before
/// `since`.
pub fn filter(req: &v1::ListAuditRequest) -> Result<AuditFilter, Status> {
    let decision = match req.decision.as_str() {
        "" => None,
        name => {
            Some(Decision::parse(name).ok_or_else(|| invalid("decision", "must be allow, deny or error (or empty)"))?)
        }
    };
    let limit = audit::page_limit(req.limit).map_err(|e| invalid("limit", e))?;
    let before = audit::decode_page_token(&req.page_token).map_err(|e| invalid("page_token", e))?;
    let time = |field: &str, ts: &Option<prost_types::Timestamp>| {
        ts.as_ref()
            .map(|ts| legion_proto::timestamp_to_chrono(ts).ok_or_else(|| invalid(field, "timestamp out of range")))
            .transpose()
    };
    let since = time("since", &req.since)?;
    let until = time("until", &req.until)?;
    if let (Some(since), Some(until)) = (since, until)
        && until < since
    {
        return Err(invalid("until", "must not be before since"));
    }
    let text = |value: &String| (!value.is_empty()).then(|| value.clone());
    Ok(AuditFilter {
        principal: text(&req.principal),
        action: text(&req.action),
        decision,
        resource_prefix: text(&req.resource_prefix),
        since,
        until,
        before,
        limit,
    })
}

/// A record as `legion.v1.AuditRecord`, hashes in lowercase hex.
pub fn record(record: &Record) -> v1::AuditRecord {
    v1::AuditRecord {
        id: record.id,
        at: Some(legion_proto::timestamp(record.at)),
        action: record.action.clone(),
        principal: record.principal.clone(),
        resource: record.resource.clone(),
        capability: record.capability.clone(),
        decision: record.decision.clone(),
        request_id: record.request_id.clone(),
        source: record.source.clone(),
        detail: Some(detail(&record.detail)),
        hash: hex::encode(&record.hash),
        prev_hash: hex::encode(&record.prev_hash),
    }
}

/// The stored `detail` text as a `Struct`. The writer stores JSON objects only; text altered into
/// anything else is shown rather than hidden: a non-object value as `{"value": …}`, text that is not
/// JSON as `{"unparsed": "<text>"}`.
fn detail(text: &str) -> Struct {
    let object = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(other) => serde_json::Map::from_iter([("value".to_owned(), other)]),
        Err(_) => serde_json::Map::from_iter([("unparsed".to_owned(), serde_json::Value::String(text.to_owned()))]),
    };
    Struct { fields: object.iter().map(|(k, v)| (k.clone(), legion_proto::json_to_value(v))).collect() }
}

/// The status of an audit error. Internal details are logged, not returned.
fn audit_status(error: audit::Error) -> Status {
    let code = error.code();
    match code {
        ErrorCode::Internal => {
            tracing::error!(error = %error, "reading the audit trail failed");
            status(code, "internal error")
        }
        ErrorCode::Unavailable => {
            tracing::warn!(error = %error, "audit trail unavailable");
            status(code, "the database is unavailable, retry later")
        }
        _ => status(code, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn message(result: Result<AuditFilter, Status>) -> String {
        let status = result.expect_err("invalid");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn an_empty_request_lists_everything() {
        let filter = filter(&v1::ListAuditRequest::default()).expect("valid");
        assert_eq!(filter, AuditFilter::default());
    }

    #[test]
    fn filters_are_converted() {
        let req = v1::ListAuditRequest {
            principal: "jwt/alice".into(),
            action: "authorize".into(),
            decision: "deny".into(),
            resource_prefix: "tasks/".into(),
            since: Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            until: Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            limit: 5,
            page_token: audit::encode_page_token(42),
        };
        let filter = filter(&req).expect("valid");
        assert_eq!(filter.principal.as_deref(), Some("jwt/alice"));
        assert_eq!(filter.action.as_deref(), Some("authorize"));
        assert_eq!(filter.decision, Some(Decision::Deny));
        assert_eq!(filter.resource_prefix.as_deref(), Some("tasks/"));
        assert_eq!(filter.since, filter.until);
        assert_eq!(filter.since.map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!((filter.before, filter.limit), (Some(42), 5));
    }

    #[test]
    fn invalid_requests_name_the_field() {
        let bad = |f: fn(&mut v1::ListAuditRequest)| {
            let mut req = v1::ListAuditRequest::default();
            f(&mut req);
            message(filter(&req))
        };
        assert!(bad(|r| r.limit = 1001).starts_with("limit: "));
        assert!(bad(|r| r.page_token = "nope".into()).starts_with("page_token: "));
        assert!(bad(|r| r.decision = "maybe".into()).starts_with("decision: "));
        assert!(bad(|r| r.since = Some(Timestamp { seconds: 0, nanos: -1 })).starts_with("since: "));
        assert!(bad(|r| r.until = Some(Timestamp { seconds: i64::MAX, nanos: 0 })).starts_with("until: "));
        assert_eq!(
            bad(|r| {
                r.since = Some(Timestamp { seconds: 10, nanos: 0 });
                r.until = Some(Timestamp { seconds: 9, nanos: 0 });
            }),
            "until: must not be before since"
        );
    }

    #[test]
    fn records_carry_hex_hashes_and_structured_detail() {
        let r = Record {
            id: 7,
            at: chrono::DateTime::from_timestamp(1_700_000_000, 5_000).expect("time"),
            action: "authorize".into(),
            principal: "jwt/alice".into(),
            resource: "audit".into(),
            capability: "read".into(),
            decision: "allow".into(),
            request_id: "r-1".into(),
            source: "127.0.0.1:1".into(),
            detail: r#"{"policies":["ops"],"n":3}"#.into(),
            prev_hash: vec![0; 32],
            hash: vec![0xab; 32],
        };
        let v = record(&r);
        assert_eq!(v.hash, "ab".repeat(32));
        assert_eq!(v.prev_hash, "00".repeat(32));
        assert_eq!(v.at, Some(Timestamp { seconds: 1_700_000_000, nanos: 5_000 }));
        let detail = v.detail.expect("detail");
        let json: serde_json::Map<String, serde_json::Value> =
            detail.fields.iter().map(|(k, v)| (k.clone(), legion_proto::value_to_json(v))).collect();
        assert_eq!(serde_json::Value::Object(json), serde_json::json!({"policies": ["ops"], "n": 3}));
        assert!(self::detail("[1]").fields.contains_key("value"));
        assert!(self::detail("not json").fields.contains_key("unparsed"));
    }
}
