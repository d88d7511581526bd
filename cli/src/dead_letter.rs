//! `legion dead-letter …`: list dead-lettered tasks and replay them over gRPC, printing the REST shapes
//! of [`legion_gateway::view`] (`list` as `GET /api/v1/dead-letters` answers, `replay` the task as
//! `legion task get` prints it).

use std::io::Write;

use legion_gateway::view::{DeadLetterPage, Task};
use legion_proto::v1;
use legion_proto::v1::dead_letter_service_client::DeadLetterServiceClient;

use crate::args::{DeadLetterCommand, DeadLetterList};
use crate::connect::AuthChannel;
use crate::error::Error;
use crate::task::print_pretty;

/// Runs one dead-letter command, writing its output to `out`. Returns the exit code (0).
///
/// # Errors
/// [`Error::Grpc`] when the control plane refuses a call (`NOT_FOUND`, `FAILED_PRECONDITION` for a task
/// that is not dead-lettered, `PERMISSION_DENIED`) or cannot be reached; [`Error::Response`] when it
/// sends a task without a known status; [`Error::Output`].
pub async fn run(
    command: DeadLetterCommand,
    client: DeadLetterServiceClient<AuthChannel>,
    out: &mut impl Write,
) -> Result<u8, Error> {
    let mut client = client;
    match command {
        DeadLetterCommand::List(list) => {
            let response = client.list_dead_letters(list_request(list)).await?.into_inner();
            print_pretty(out, &DeadLetterPage::try_from(&response)?)?;
        }
        DeadLetterCommand::Replay { task_id } => {
            let response = client.replay_dead_letter(v1::ReplayDeadLetterRequest { task_id }).await?.into_inner();
            let task = response.task.ok_or_else(|| tonic::Status::internal("replay response lacks the task"))?;
            print_pretty(out, &Task::try_from(&task)?)?;
        }
    }
    Ok(0)
}

/// The gRPC request of `dead-letter list`.
pub fn list_request(list: DeadLetterList) -> v1::ListDeadLettersRequest {
    v1::ListDeadLettersRequest {
        function: list.function,
        page_size: list.limit.unwrap_or(0),
        page_token: list.page_token.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
