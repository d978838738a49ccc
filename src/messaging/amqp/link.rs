//! One live connection to the broker and the channels on it, and the declarations kiwipy makes.

use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::AMQPUriTcpExt;
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use super::config::AmqpConfig;
use crate::messaging::Error;

/// A broker failure while doing `what`: the message names both, the error stays its source.
pub(crate) fn broker_error(what: &str, error: lapin::Error) -> Error {
    Error::Broker {
        reason: format!("{what}: {error}"),
        source: Some(std::sync::Arc::new(error)),
    }
}

/// A connection, its publishing channel (with publisher confirms), its consuming channel (RPC,
/// broadcast and reply queues) and its pulling channel (tasks taken one at a time). Task
/// subscribers get channels of their own, for their prefetch limits.
pub(crate) struct Link {
    pub(crate) connection: Connection,
    pub(crate) publisher: Channel,
    /// Answers to RPCs, without publisher confirms (see `AmqpCommunicator`'s docs): in order
    /// among themselves, which keeps a `pending` before its final answer.
    pub(crate) replier: Channel,
    pub(crate) consumer: Channel,
    /// Where `next_task` takes tasks: each waiting pull is a consumer here with room for one.
    pub(crate) puller: Channel,
    /// This connection's reply queue (exclusive, so a new name for each connection).
    pub(crate) reply_queue: String,
    /// Cancelled when the reply queue's consumer ends: the broker closed the connection (or
    /// its consuming channel), which lapin reports to consumers but not as an event.
    pub(crate) lost: CancellationToken,
}

impl Link {
    pub(crate) async fn open(config: &AmqpConfig) -> Result<Link, Error> {
        let quiet = super::quiet::Quiet::around_current();
        // lapin also logs from the thread that polls its futures while it connects.
        let connecting = connect(config, quiet.clone()).with_subscriber(quiet);
        let connection = tokio::time::timeout(config.connect_timeout, connecting)
            .await
            .map_err(|_| Error::Broker {
                source: None,
                reason: format!(
                    "no connection to {} within {:?}",
                    config.redacted_url(),
                    config.connect_timeout
                ),
            })?
            .map_err(|e| {
                broker_error(&format!("cannot connect to {}", config.redacted_url()), e)
            })?;
        match Self::set_up(&connection, config).await {
            Ok((publisher, replier, consumer, puller, reply_queue)) => Ok(Link {
                connection,
                publisher,
                replier,
                consumer,
                puller,
                reply_queue,
                lost: CancellationToken::new(),
            }),
            Err(error) => {
                close(&connection).await;
                Err(error)
            }
        }
    }

    /// The channels, exchanges and reply queue of a new connection.
    async fn set_up(
        connection: &Connection,
        config: &AmqpConfig,
    ) -> Result<(Channel, Channel, Channel, Channel, String), Error> {
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| broker_error("cannot open a channel", e))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker_error("cannot enable publisher confirms", e))?;
        let replier = connection
            .create_channel()
            .await
            .map_err(|e| broker_error("cannot open a channel", e))?;
        let consumer = connection
            .create_channel()
            .await
            .map_err(|e| broker_error("cannot open a channel", e))?;
        let puller = prefetching_channel(connection, 1).await?;
        for exchange in [&config.message_exchange, &config.task_exchange] {
            declare_exchange(&publisher, exchange, config.testing_mode).await?;
        }
        let reply_queue = format!("{}-reply-{}", config.message_exchange, uuid::Uuid::new_v4());
        let arguments = table(&[("x-expires", config.queue_expires_ms)]);
        declare_exclusive(&consumer, &reply_queue, arguments).await?;
        // Replies to RPCs come through the message exchange, replies to tasks through the task
        // exchange (as kiwipy sends them): one queue bound on both.
        for exchange in [&config.message_exchange, &config.task_exchange] {
            bind(&consumer, &reply_queue, exchange, &reply_queue).await?;
        }
        Ok((publisher, replier, consumer, puller, reply_queue))
    }

    /// A consumer of this connection's reply queue (no acknowledgements, as kiwipy).
    pub(crate) async fn consume_replies(&self) -> Result<Consumer, Error> {
        consume(&self.consumer, &self.reply_queue, "", Acks::None).await
    }
}

/// Connects as lapin does by default (plain TCP, the caller's tokio runtime), except that
/// lapin's I/O thread and tasks log through [`Quiet`](super::quiet::Quiet).
async fn connect(config: &AmqpConfig, quiet: tracing::Dispatch) -> lapin::Result<Connection> {
    let uri: AMQPUri = config.connection_url().parse().map_err(|reason: String| {
        lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            reason,
        ))
    })?;
    let runtime = super::quiet::runtime(quiet.clone());
    let transport = async move |uri: AMQPUri, runtime| {
        super::quiet::install_on_this_thread(&quiet);
        uri.connect_async(&runtime)
            .await
            .map_err(lapin::Error::from)
    };
    Connection::connector(uri, runtime, transport, ConnectionProperties::default()).await
}

/// Whether a consumer acknowledges what it receives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acks {
    /// Each delivery is acknowledged (or given back) by the consumer.
    Manual,
    /// Deliveries count as acknowledged when sent.
    None,
}

/// Consumes `queue` on `channel` with consumer tag `tag` (empty: the broker picks one).
pub(crate) async fn consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
    acks: Acks,
) -> Result<Consumer, Error> {
    let options = BasicConsumeOptions {
        no_ack: acks == Acks::None,
        ..BasicConsumeOptions::default()
    };
    channel
        .basic_consume(queue.into(), tag.into(), options, FieldTable::default())
        .await
        .map_err(|e| broker_error(&format!("cannot consume {queue}"), e))
}

/// Closes a connection, waiting a little for the broker's answer (it may be gone).
pub(crate) async fn close(connection: &Connection) {
    let closing = connection.close(200, "closed".into());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), closing).await;
}

/// kiwipy's exchanges: topic, not durable, not auto-deleted (except in testing mode), no
/// arguments.
async fn declare_exchange(channel: &Channel, name: &str, testing: bool) -> Result<(), Error> {
    let options = ExchangeDeclareOptions {
        durable: false,
        auto_delete: testing,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker_error(&format!("cannot declare the exchange {name}"), e))
}

/// An exclusive queue (RPC, broadcast and reply queues), deleted with its connection.
pub(crate) async fn declare_exclusive(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), Error> {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(|_| ())
        .map_err(|e| broker_error(&format!("cannot declare the queue {name}"), e))
}

/// kiwipy's `x-expires` of task queues in testing mode.
const TESTING_QUEUE_EXPIRES_MS: u32 = 10_000;

/// A task queue exactly as kiwipy declares it (durable, a week's message TTL, nothing else), or
/// RabbitMQ refuses one of the two declarations.
pub(crate) async fn declare_task_queue(
    channel: &Channel,
    config: &AmqpConfig,
    name: &str,
) -> Result<(), Error> {
    let options = QueueDeclareOptions {
        durable: !config.testing_mode,
        ..QueueDeclareOptions::default()
    };
    let arguments = if config.testing_mode {
        table(&[
            ("x-message-ttl", config.task_message_ttl_ms),
            ("x-expires", TESTING_QUEUE_EXPIRES_MS),
        ])
    } else {
        table(&[("x-message-ttl", config.task_message_ttl_ms)])
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map_err(|e| broker_error(&format!("cannot declare the task queue {name}"), e))?;
    bind(channel, name, &config.task_exchange, name).await
}

pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| broker_error(&format!("cannot bind {queue} to {exchange} as {key}"), e))
}

/// Undoes [`bind`]: messages published under `key` no longer reach `queue`.
pub(crate) async fn unbind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), Error> {
    channel
        .queue_unbind(
            queue.into(),
            exchange.into(),
            key.into(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            broker_error(
                &format!("cannot unbind {queue} from {exchange} as {key}"),
                e,
            )
        })
}

/// A channel whose consumers each hold at most `prefetch` unacknowledged deliveries (0 =
/// unlimited, as kiwipy): one for each task subscriber, and the one pulls take tasks on.
pub(crate) async fn prefetching_channel(
    connection: &Connection,
    prefetch: usize,
) -> Result<Channel, Error> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| broker_error("cannot open a channel", e))?;
    let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| broker_error("cannot set the prefetch limit", e))?;
    Ok(channel)
}

/// Queue arguments; the values as AMQP signed 32-bit integers (RabbitMQ compares values, not
/// integer types, so kiwipy's declarations match).
pub(crate) fn table(entries: &[(&str, u32)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        let value = i32::try_from(*value).unwrap_or(i32::MAX);
        table.insert((*key).into(), AMQPValue::LongInt(value));
    }
    table
}
