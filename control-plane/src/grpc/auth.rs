//! Who is calling.
//!
//! The executor service admits node certificates only: the principal comes from the verified client
//! certificate (`spiffe://legion/node/<name>`).
//!
//! The task and catalog services are where user authentication (JWT, API keys) and Vault-style policy
//! checks will go (DESIGN.md section 6). That is a later feature: until it exists, [`Authorizer`] is the
//! seam every user-facing call goes through, and the only implementation, [`NoUserAuth`], admits every
//! caller as [`Caller::Anonymous`] without pretending to check anything.

use legion_common::tls::{Principal, principal_from_certs};
use tonic::{Request, Status};

/// The authenticated caller of a user-facing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No user authentication is configured (see the module docs).
    Anonymous,
}

/// What a call does, as a resource path and capability in the policy language of DESIGN.md section 6
/// (e.g. `tasks/http/request/get` with `create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Resource path, e.g. `tasks/http/request/get`, `extensions/http`, `nodes/*`.
    pub path: String,
    /// Capability: `create`, `read`, `update`, `list`.
    pub capability: &'static str,
}

impl Access {
    /// An access to `path` with `capability`.
    pub fn new(path: impl Into<String>, capability: &'static str) -> Self {
        Self { path: path.into(), capability }
    }
}

/// Decides whether a user-facing call may proceed.
pub trait Authorizer: Send + Sync {
    /// The caller of `metadata` if it may perform `access`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a valid credential, `PERMISSION_DENIED` when policies deny it.
    fn authorize(&self, metadata: &tonic::metadata::MetadataMap, access: &Access) -> Result<Caller, Status>;
}

/// No user authentication: every call is admitted as [`Caller::Anonymous`]. Replace it when the
/// authentication feature lands.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUserAuth;

impl Authorizer for NoUserAuth {
    fn authorize(&self, _metadata: &tonic::metadata::MetadataMap, access: &Access) -> Result<Caller, Status> {
        tracing::trace!(path = %access.path, capability = access.capability, "user authentication not configured");
        Ok(Caller::Anonymous)
    }
}

/// The node name of an executor call, from its client certificate.
///
/// # Errors
/// `UNAUTHENTICATED` without a certificate naming a Legion principal, `PERMISSION_DENIED` for a
/// certificate of another kind (a gateway).
pub fn node_principal<T>(request: &Request<T>) -> Result<String, Status> {
    let certs = request.peer_certs();
    let principal = certs.as_deref().and_then(|certs| principal_from_certs(certs));
    match principal {
        Some(Principal::Node(name)) => Ok(name),
        Some(other) => {
            Err(Status::permission_denied(format!("the executor service admits node certificates only, not {other}")))
        }
        None => Err(Status::unauthenticated("the executor service requires a node client certificate")),
    }
}
