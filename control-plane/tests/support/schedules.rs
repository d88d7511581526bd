//! Schedule API helpers shared by the integration tests.

#![allow(dead_code, missing_docs)]

use legion_proto::v1;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;

use super::stack::AuthChannel;

/// `CreateSchedule` of `schedule` through `client`: the created schedule, or the call's status.
pub async fn create(
    client: &mut ScheduleServiceClient<AuthChannel>,
    schedule: v1::Schedule,
) -> Result<v1::Schedule, tonic::Status> {
    client
        .create_schedule(v1::CreateScheduleRequest { schedule: Some(schedule) })
        .await
        .map(tonic::Response::into_inner)
}
