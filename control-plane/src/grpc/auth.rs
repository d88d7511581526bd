//! Who is calling the executor service: it admits node certificates only, and the principal comes from
//! the verified client certificate (`spiffe://legion/node/<name>`). User-facing services authenticate
//! and authorize through [`crate::auth::Auth`].

use legion_common::tls::{Principal, principal_from_certs};
use tonic::{Request, Status};

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
