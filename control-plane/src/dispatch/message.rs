//! The broker message body of a dispatch: `legion_common::broker::TaskMessage` as JSON.

use legion_common::broker::TaskMessage;
use uuid::Uuid;

/// The JSON body of dispatch `dispatch` of a task.
pub fn payload(task_id: Uuid, dispatch: u32, function: &str, args: &serde_json::Value, timeout_ms: u32) -> Vec<u8> {
    let message = TaskMessage { task_id, dispatch, function: function.to_owned(), args: args.clone(), timeout_ms };
    serde_json::to_vec(&message).expect("a TaskMessage always serializes: every field is plain JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_a_task_message() {
        let id = Uuid::now_v7();
        let bytes = payload(id, 2, "core.util.echo", &serde_json::json!({"message": "hi"}), 500);
        let decoded: TaskMessage = serde_json::from_slice(&bytes).expect("decode");
        assert_eq!(
            decoded,
            TaskMessage {
                task_id: id,
                dispatch: 2,
                function: "core.util.echo".into(),
                args: serde_json::json!({"message": "hi"}),
                timeout_ms: 500
            }
        );
    }
}
