//! RabbitMQ: the connection, the topology of DESIGN.md section 5 and the task message.
//!
//! Topology: a durable topic exchange `legion.tasks`; a durable queue per extension
//! (`legion.ext.<extension>`) with `x-max-priority` 9 and `x-dead-letter-exchange` `legion.dlx`, bound
//! with `<extension>.#`; routing key `<extension>.<runner>.<function>`. Dead letters go to the durable
//! topic exchange `legion.dlx` and its queue `legion.dead-letters`. Every declaration is idempotent,
//! so the control plane and the executors both declare what they use.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::settings::TransportSettings;

/// The topic exchange every task is published to.
pub const TASK_EXCHANGE: &str = "legion.tasks";
/// The dead-letter exchange of every extension queue.
pub const DEAD_LETTER_EXCHANGE: &str = "legion.dlx";
/// The queue that collects dead-lettered messages.
pub const DEAD_LETTER_QUEUE: &str = "legion.dead-letters";
/// Highest task priority (`x-max-priority`).
pub const MAX_PRIORITY: u8 = 9;

/// The queue of an extension: `legion.ext.<extension>`.
pub fn extension_queue(extension: &str) -> String {
    format!("legion.ext.{extension}")
}

/// The broker message body of one dispatch of a task (JSON, UTF-8).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMessage {
    /// The task.
    pub task_id: Uuid,
    /// Dispatch number: incremented by each publish of the task; older dispatches are dropped.
    pub dispatch: u32,
    /// `extension.runner.function`.
    pub function: String,
    /// The function's args.
    pub args: serde_json::Value,
    /// Limit for the attempt, in ms.
    pub timeout_ms: u32,
}

/// Connects to RabbitMQ. `transport.tls.ca`, when set, is the CA trusted for `amqps://`.
///
/// # Errors
/// When the CA file cannot be read or the broker cannot be reached or refuses the credentials.
pub async fn connect(settings: &TransportSettings, connection_name: &str) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: match &settings.tls.ca {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read transport.tls.ca {}: {e}", path.display()))?,
            ),
            None => None,
        },
    };
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_with_config(&settings.url, properties, tls, runtime).await?)
}

/// Declares the task exchange, the dead-letter exchange and the dead-letter queue.
///
/// # Errors
/// Broker errors, e.g. an existing exchange with other arguments.
pub async fn declare_topology(channel: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(TASK_EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    channel.exchange_declare(DEAD_LETTER_EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    channel
        .queue_declare(
            DEAD_LETTER_QUEUE.into(),
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            DEAD_LETTER_QUEUE.into(),
            DEAD_LETTER_EXCHANGE.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Declares an extension's queue and binds it to the task exchange. Returns the queue name.
///
/// # Errors
/// Broker errors, e.g. an existing queue declared with other arguments.
pub async fn declare_extension_queue(channel: &Channel, extension: &str) -> lapin::Result<String> {
    let queue = extension_queue(extension);
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-priority"), AMQPValue::ShortShortUInt(MAX_PRIORITY));
    args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()));
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
            args,
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            TASK_EXCHANGE.into(),
            format!("{extension}.#").as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_message_round_trips_as_json() {
        let m = TaskMessage {
            task_id: Uuid::now_v7(),
            dispatch: 2,
            function: "core.util.echo".into(),
            args: serde_json::json!({"message": "hi"}),
            timeout_ms: 1000,
        };
        let bytes = serde_json::to_vec(&m).expect("encode");
        assert_eq!(serde_json::from_slice::<TaskMessage>(&bytes).expect("decode"), m);
    }

    #[test]
    fn queue_names_follow_the_topology() {
        assert_eq!(extension_queue("http"), "legion.ext.http");
    }
}
