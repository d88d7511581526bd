//! `legion.v1.CatalogService`: extensions, executor nodes, and the control-plane replicas with the
//! scheduler lease.

use std::sync::Arc;
use std::time::Duration;

use legion_proto::v1;
use legion_proto::v1::catalog_service_server::CatalogService;
use tonic::{Request, Response, Status};

use super::{convert, invalid, store_status};
use crate::auth::Auth;
use crate::leader::{LeaseStore, SCHEDULER_LEASE};
use crate::policy::Capability;
use crate::store::Store;
use crate::store::schedules::ScheduleStore;

/// The catalog API over the store.
pub struct CatalogApi {
    store: Arc<dyn Store>,
    auth: Auth,
    replicas: Arc<dyn ScheduleStore>,
    leases: Arc<dyn LeaseStore>,
    within: Duration,
}

impl CatalogApi {
    /// The service. `ListNodes` lists the control-plane replicas of `replicas` seen within `within`
    /// (three scheduler leases), and the scheduler lease of `leases`.
    pub fn new(
        store: Arc<dyn Store>,
        auth: Auth,
        replicas: Arc<dyn ScheduleStore>,
        leases: Arc<dyn LeaseStore>,
        within: Duration,
    ) -> Self {
        Self { store, auth, replicas, leases, within }
    }

    async fn set_disabled(
        &self,
        request: Request<v1::SetExtensionDisabledRequest>,
        disabled: bool,
    ) -> Result<Response<v1::Extension>, Status> {
        let name = request.get_ref().name.clone();
        legion_common::function::validate_segment(&name).map_err(|e| invalid("name", e))?;
        let path = format!("extensions/{name}");
        let caller = self.auth.authorize(&request, &path, Capability::Update).await?;
        let extension = self.store.set_extension_disabled(&name, disabled).await.map_err(store_status)?;
        let action = if disabled { "extension.disable" } else { "extension.enable" };
        self.auth.record_change(&caller, action, &path, serde_json::json!({})).await?;
        tracing::info!(extension = %name, disabled, "extension dispatch changed by an operator");
        Ok(Response::new(convert::extension(&extension)))
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_extensions(
        &self,
        request: Request<v1::ListExtensionsRequest>,
    ) -> Result<Response<v1::ListExtensionsResponse>, Status> {
        self.auth.authorize(&request, "extensions/", Capability::List).await?;
        let extensions = self.store.list_extensions().await.map_err(store_status)?;
        Ok(Response::new(v1::ListExtensionsResponse {
            extensions: extensions.iter().map(convert::extension).collect(),
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        self.auth.authorize(&request, "nodes/", Capability::List).await?;
        let nodes = self.store.list_nodes().await.map_err(store_status)?;
        let replicas = self.replicas.list_control_planes(self.within).await.map_err(store_status)?;
        let lease = self.leases.lease(SCHEDULER_LEASE).await.map_err(store_status)?;
        // A replica leads while it holds the lease and the lease has not lapsed (a crashed leader's row
        // stays until another replica takes it).
        let now = chrono::Utc::now();
        let leader = lease.as_ref().filter(|l| l.expires_at > now).map(|l| l.holder.as_str());
        Ok(Response::new(v1::ListNodesResponse {
            nodes: nodes.iter().map(convert::node).collect(),
            control_planes: replicas
                .iter()
                .map(|r| convert::control_plane(r, leader == Some(r.name.as_str())))
                .collect(),
            leadership: lease.as_ref().map(convert::leadership),
        }))
    }

    async fn disable_extension(
        &self,
        request: Request<v1::SetExtensionDisabledRequest>,
    ) -> Result<Response<v1::Extension>, Status> {
        self.set_disabled(request, true).await
    }

    async fn enable_extension(
        &self,
        request: Request<v1::SetExtensionDisabledRequest>,
    ) -> Result<Response<v1::Extension>, Status> {
        self.set_disabled(request, false).await
    }
}
