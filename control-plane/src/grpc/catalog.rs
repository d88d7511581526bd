//! `legion.v1.CatalogService`.

use std::sync::Arc;

use legion_proto::v1;
use legion_proto::v1::catalog_service_server::CatalogService;
use tonic::{Request, Response, Status};

use super::auth::{Access, Authorizer};
use super::{convert, invalid, store_status};
use crate::store::Store;

/// The catalog API over the store.
pub struct CatalogApi {
    store: Arc<dyn Store>,
    authorizer: Arc<dyn Authorizer>,
}

impl CatalogApi {
    /// The service.
    pub fn new(store: Arc<dyn Store>, authorizer: Arc<dyn Authorizer>) -> Self {
        Self { store, authorizer }
    }

    fn authorize<T>(&self, request: &Request<T>, path: String, capability: &'static str) -> Result<(), Status> {
        self.authorizer.authorize(request.metadata(), &Access::new(path, capability)).map(|_| ())
    }

    async fn set_disabled(
        &self,
        request: Request<v1::SetExtensionDisabledRequest>,
        disabled: bool,
    ) -> Result<Response<v1::Extension>, Status> {
        let name = request.get_ref().name.clone();
        legion_common::function::validate_segment(&name).map_err(|e| invalid("name", e))?;
        self.authorize(&request, format!("extensions/{name}"), "update")?;
        let extension = self.store.set_extension_disabled(&name, disabled).await.map_err(store_status)?;
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
        self.authorize(&request, "extensions".into(), "list")?;
        let extensions = self.store.list_extensions().await.map_err(store_status)?;
        Ok(Response::new(v1::ListExtensionsResponse {
            extensions: extensions.iter().map(convert::extension).collect(),
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        self.authorize(&request, "nodes".into(), "list")?;
        let nodes = self.store.list_nodes().await.map_err(store_status)?;
        Ok(Response::new(v1::ListNodesResponse { nodes: nodes.iter().map(convert::node).collect() }))
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
