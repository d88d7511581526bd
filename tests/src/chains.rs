//! Chain helpers on a [`TestEnv`] (DESIGN.md section 4, `proto/legion/v1/chains.proto`): a
//! `ChainService` client, `ApplyChain`, a chain-run submit, and every task of a run (`ListTasks` with
//! `root_id`, all pages).

use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::{ApplyChainRequest, ApplyChainResponse, Chain, ListTasksRequest, SubmitTaskRequest, Task};
use serde_json::Value;

use crate::TestEnv;
use crate::auth::Auth;
use crate::grpc::{self, AuthChannel};

/// Client of `legion.v1.ChainService`, sending its channel's credential.
pub type ChainClient = ChainServiceClient<AuthChannel>;

/// Largest `ListTasks` page (`ListTasksRequest.page_size` accepts 1 to 1000).
pub const MAX_PAGE_SIZE: u32 = 1000;

impl TestEnv {
    /// A `ChainService` client on the shared channel, sending the bootstrap admin key.
    ///
    /// # Errors
    /// As [`TestEnv::channel_as`] (never for the admin key, which is a valid metadata value).
    pub fn chains(&self) -> Result<ChainClient, grpc::Error> {
        Ok(ChainClient::new(self.channel_as(&Auth::admin())?))
    }

    /// `ApplyChain` with `chain`, as the bootstrap admin.
    ///
    /// # Errors
    /// The control plane's status (`INVALID_ARGUMENT` naming the field for a bad definition).
    pub async fn apply_chain(&self, chain: Chain) -> Result<ApplyChainResponse, tonic::Status> {
        let mut client = self.chains().map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(client.apply_chain(grpc::request(ApplyChainRequest { chain: Some(chain) })).await?.into_inner())
    }

    /// Submits `function` with `args` as the root of a run of `chain` (`SubmitTaskRequest.chain`).
    ///
    /// # Errors
    /// The control plane's status (`INVALID_ARGUMENT` `chain: unknown chain …` for an unknown name).
    pub async fn submit_chain(&self, chain: &str, function: &str, args: Value) -> Result<Task, tonic::Status> {
        self.submit_request(SubmitTaskRequest {
            function: function.to_owned(),
            args: Some(legion_proto::json_to_value(&args)),
            chain: Some(chain.to_owned()),
            ..SubmitTaskRequest::default()
        })
        .await
    }

    /// Every task of the chain run rooted at `root_id`, the root included, sorted by id (UUIDv7, so in
    /// creation order to the millisecond): `ListTasks` with `root_id`, pages of [`MAX_PAGE_SIZE`]
    /// followed to the end.
    ///
    /// # Errors
    /// The control plane's status.
    pub async fn run_tasks(&self, root_id: &str) -> Result<Vec<Task>, tonic::Status> {
        let mut tasks = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListTasksRequest {
                root_id: Some(root_id.to_owned()),
                page_size: MAX_PAGE_SIZE,
                page_token,
                ..ListTasksRequest::default()
            };
            let page = self.tasks().list_tasks(grpc::request(request)).await?.into_inner();
            tasks.extend(page.tasks);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        // The service lists newest first; the callers want the root first.
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tasks)
    }
}
