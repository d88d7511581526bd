//! The broker message of a dispatch: its body (`legion_common::broker::TaskMessage` as JSON) and its
//! routing key.

use legion_common::FunctionName;
use legion_common::broker::TaskMessage;
use uuid::Uuid;

/// The routing key of a task's messages: `legion_common::broker::routing_key`, i.e.
/// `<extension>.<runner>.<function>` plus `.<region>` for a task bound to a region. `function` was
/// validated at submit; should a stored name not parse, it is used as it is.
pub fn routing_key(function: &str, region: Option<&str>) -> String {
    match FunctionName::parse(function) {
        Ok(name) => legion_common::broker::routing_key(&name, region),
        Err(_) => match region {
            Some(region) => format!("{function}.{region}"),
            None => function.to_owned(),
        },
    }
}

/// The queue a routing key reaches: `(extension, region)`, from `<extension>.<runner>.<function>` or
/// `<extension>.<runner>.<function>.<region>` (no segment holds a dot).
pub fn queue_of(routing_key: &str) -> (&str, Option<&str>) {
    let mut parts = routing_key.splitn(4, '.');
    let extension = parts.next().unwrap_or(routing_key);
    (extension, parts.nth(2))
}

/// The JSON body of dispatch `dispatch` of a task.
pub fn payload(task_id: Uuid, dispatch: u32, function: &str, args: &serde_json::Value, timeout_ms: u32) -> Vec<u8> {
    let message = TaskMessage { task_id, dispatch, function: function.to_owned(), args: args.clone(), timeout_ms };
    serde_json::to_vec(&message).expect("a TaskMessage always serializes: every field is plain JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_tasks_get_regional_routing_keys_and_queues() {
        assert_eq!(routing_key("core.util.echo", None), "core.util.echo");
        assert_eq!(routing_key("core.util.echo", Some("eu-west")), "core.util.echo.eu-west");
        assert_eq!(queue_of("core.util.echo"), ("core", None));
        assert_eq!(queue_of("core.util.echo.eu-west"), ("core", Some("eu-west")));
        assert_eq!(queue_of("core"), ("core", None));
        let key = routing_key("http.request.get", Some("us_east-2"));
        assert_eq!(
            legion_common::broker::extension_queue(queue_of(&key).0, queue_of(&key).1),
            "legion.ext.http.us_east-2"
        );
    }

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
