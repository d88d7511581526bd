//! RabbitMQ: the connection, the topology of DESIGN.md section 5 and the task message.
//!
//! Topology: a durable topic exchange `legion.tasks`; a durable queue per extension
//! (`legion.ext.<extension>`) with `x-max-priority` 9 and `x-dead-letter-exchange` `legion.dlx`, bound
//! with `<extension>.*.*`; routing key `<extension>.<runner>.<function>`. Region-aware routing: a task
//! for region R has routing key `<extension>.<runner>.<function>.<R>` and goes to the queue
//! `legion.ext.<extension>.<R>` (bound with `<extension>.*.*.<R>`), which only executors of region R
//! consume; they consume the region-free queue too. Dead letters go to the durable topic exchange
//! `legion.dlx` and its queue `legion.dead-letters`. Every declaration is idempotent, so the control
//! plane and the executors both declare what they use.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connect, Connection, ConnectionProperties, ExchangeKind};
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

/// Longest region name, in bytes.
pub const MAX_REGION_LEN: usize = 64;

/// The queue of an extension: `legion.ext.<extension>`, or `legion.ext.<extension>.<region>` for the
/// tasks of one region.
pub fn extension_queue(extension: &str, region: Option<&str>) -> String {
    match region {
        Some(region) => format!("legion.ext.{extension}.{region}"),
        None => format!("legion.ext.{extension}"),
    }
}

/// The routing key of a task: `<extension>.<runner>.<function>`, plus `.<region>` for a task bound to
/// a region.
pub fn routing_key(function: &crate::FunctionName, region: Option<&str>) -> String {
    match region {
        Some(region) => format!("{function}.{region}"),
        None => function.to_string(),
    }
}

/// Checks a region name: 1 to [`MAX_REGION_LEN`] bytes of lowercase ASCII letters, digits, `_` and `-`,
/// starting with a letter (one AMQP routing-key word). The error says what is wrong.
pub fn validate_region(region: &str) -> Result<(), String> {
    let first_ok = region.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let chars_ok = region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if region.is_empty() || region.len() > MAX_REGION_LEN || !first_ok || !chars_ok {
        return Err(format!(
            "region {region:?} must be 1 to {MAX_REGION_LEN} bytes of a-z, 0-9, _ and -, starting with a letter"
        ));
    }
    Ok(())
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
    connect_with_heartbeat(settings, connection_name, None).await
}

/// The AMQP heartbeat timeout, in s, that makes the broker close a silent peer's connection before
/// the control plane declares the node lost after `lease_ms`: a quarter of it, at least 1 s. RabbitMQ
/// checks every timeout whether anything arrived and closes the connection after two checks that saw
/// nothing (RabbitMQ's "Detecting Dead TCP Connections with Heartbeats"), so a frozen peer is cut off
/// two to three timeouts after it went quiet (35 to 41 s were seen with a timeout of 15 s): with a
/// quarter of the lease, at half to three quarters of the lease.
pub fn heartbeat_for_lease(lease_ms: u64) -> u16 {
    u16::try_from((lease_ms / 4000).max(1)).unwrap_or(u16::MAX)
}

/// [`connect`], asking for an AMQP heartbeat timeout of `heartbeat_s` seconds (AMQP 0-9-1
/// `connection.tune-ok`) unless `transport.url` sets its own `heartbeat` query parameter, which wins.
///
/// # Errors
/// As [`connect`], and when `transport.url` is not a valid AMQP URI.
pub async fn connect_with_heartbeat(
    settings: &TransportSettings,
    connection_name: &str,
    heartbeat_s: Option<u16>,
) -> anyhow::Result<Connection> {
    let mut uri: AMQPUri =
        settings.url.parse().map_err(|e| anyhow::anyhow!("transport.url: not a valid AMQP URI: {e}"))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = heartbeat_s;
    }
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
    Ok(uri.connect_with_config(properties, tls, runtime).await?)
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

/// Declares an extension's queue (the region-free one, or the one of `region`) and binds it to the task
/// exchange. Returns the queue name.
///
/// # Errors
/// Broker errors, e.g. an existing queue declared with other arguments.
pub async fn declare_extension_queue(
    channel: &Channel,
    extension: &str,
    region: Option<&str>,
) -> lapin::Result<String> {
    let queue = extension_queue(extension, region);
    let binding = match region {
        Some(region) => format!("{extension}.*.*.{region}"),
        None => format!("{extension}.*.*"),
    };
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
            binding.as_str().into(),
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
    fn the_heartbeat_is_half_the_lease_and_at_least_a_second() {
        assert_eq!(heartbeat_for_lease(30_000), 7);
        assert_eq!(heartbeat_for_lease(8000), 2);
        assert_eq!(heartbeat_for_lease(3000), 1);
        assert_eq!(heartbeat_for_lease(500), 1);
        assert_eq!(heartbeat_for_lease(0), 1);
        assert_eq!(heartbeat_for_lease(u64::MAX), u16::MAX);
    }

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
    fn queue_names_and_routing_keys_follow_the_topology() {
        assert_eq!(extension_queue("http", None), "legion.ext.http");
        assert_eq!(extension_queue("http", Some("eu-west")), "legion.ext.http.eu-west");
        let f = crate::FunctionName::parse("http.request.get").expect("valid");
        assert_eq!(routing_key(&f, None), "http.request.get");
        assert_eq!(routing_key(&f, Some("eu-west")), "http.request.get.eu-west");
    }

    #[test]
    fn regions_are_single_routing_key_words() {
        for ok in ["default", "eu-west-1", "us_east"] {
            assert!(validate_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", "EU", "eu.west", "1eu", "eu*", "eu#", &"a".repeat(65)] {
            assert!(validate_region(bad).is_err(), "{bad:?}");
        }
    }
}
