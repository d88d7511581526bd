//! `legion.v1.CatalogService`.

use std::sync::Arc;

use legion_proto::v1;
use legion_proto::v1::catalog_service_server::CatalogService;
use tonic::{Request, Response, Status};

use super::{convert, invalid, store_status};
use crate::auth::Auth;
use crate::policy::Capability;
use crate::store::Store;

/// The catalog API over the store.
pub struct CatalogApi {
    store: Arc<dyn Store>,
    auth: Auth,
}

impl CatalogApi {
    /// The service.
    pub fn new(store: Arc<dyn Store>, auth: Auth) -> Self {
        Self { store, auth }
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
        Ok(Response::new(v1::ListNodesResponse {
            nodes: nodes.iter().map(convert::node).collect(),
            ..Default::default()
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
