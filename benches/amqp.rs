//! The RabbitMQ transport against the broker (`scripts/rabbitmq start`), measured as
//! `../shared/baselines/kiwipy_bench.py` measures kiwipy: the servers run in a second process (this
//! binary again), the client here. Figures are medians over rounds:
//!
//! - RPC round trips, sequential, through the synchronous communicator (kiwipy's thread API)
//!   and the async one; with 100 in flight; client CPU per call;
//! - tasks sent and processed (answers awaited), 100 in flight, with 1 and with 4 workers;
//! - broadcasts: sent one after another, until the server heard them all.
//!
//! The baseline in the same run: the same round trip done with bare lapin (publish with a
//! confirm, consume the reply), the floor the broker and the client library set. And, to show
//! what the client library costs, the same round trip with a lean client that has no I/O
//! thread (`benches/lean`, a blocking socket and lapin's frame codec), against the bare-lapin
//! echo and against a lean echo; and the lean client's broadcasts one after another (each
//! waiting for its confirm), the broker's floor for the sequential broadcast row.
//!
//! The sequential rows run first, rounds interleaved with their floors (bare lapin, routed as
//! the default exchange and as kiwipy routes; bare lapin through a runtime thread, the floor
//! of a synchronous API; the lean client), and each ratio is paired per round.
//!
//! Run: `cargo bench --features amqp --bench amqp` (about three minutes;
//! `AMQP_BENCH_ONLY=sequential` for the sequential rows alone).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use runtime_thread::messaging::amqp::{self, AmqpCommunicator, AmqpConfig};
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Handler, TaskSendOptions,
    TaskSubscriberOptions, Value,
};
use serde_json::json;
use tokio::sync::Semaphore;

mod lean;

/// The broker: the project's node (`scripts/rabbitmq start` prints its URL), named in
/// `RUNTIME_THREAD_AMQP_URL`.
fn url() -> String {
    std::env::var("RUNTIME_THREAD_AMQP_URL").unwrap_or_default()
}
const ROUNDS: usize = 5;
/// The sequential rows' ratios swing by 10 % between rounds on this VM: more rounds for them.
const SEQUENTIAL_ROUNDS: usize = 9;
const RPC_N: usize = 1_000;
const IN_FLIGHT: usize = 100;
const TASK_N: usize = 2_000;
const BROADCAST_N: usize = 5_000;

fn config(prefix: &str) -> AmqpConfig {
    AmqpConfig::new()
        .url(url())
        .message_exchange(format!("{prefix}.messages"))
        .task_exchange(format!("{prefix}.tasks"))
        .task_queue_prefix(format!("{prefix}."))
        .testing_mode(true)
}

/// kiwipy's payload: `{'i': n, 'p': 64 * 'x'}`.
fn payload(i: usize) -> Value {
    json!({"i": i, "p": "x".repeat(64)})
}

fn main() {
    if let Ok(prefix) = std::env::var("AMQP_BENCH_SERVE") {
        return serve(&prefix);
    }
    if url().is_empty() {
        eprintln!(
            "RUNTIME_THREAD_AMQP_URL is not set: start the project's node with \
             `export RUNTIME_THREAD_AMQP_URL=$(scripts/rabbitmq start)`"
        );
        return;
    }
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut server = std::process::Command::new(std::env::current_exe().unwrap())
        .env("AMQP_BENCH_SERVE", &prefix)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "READY");

    let mut report = sequential(&prefix);
    let only_sequential = std::env::var("AMQP_BENCH_ONLY").is_ok_and(|only| only == "sequential");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if only_sequential {
            return;
        }
        let comm = AmqpCommunicator::connect(config(&prefix)).await.unwrap();
        for i in 0..50 {
            comm.rpc_send("echo", payload(i)).await.unwrap();
        }
        report.push(
            measure("RPC, 100 in flight", RPC_N * 5, || {
                in_flight(RPC_N * 5, |i| {
                    let comm = comm.clone();
                    async move {
                        comm.rpc_send("echo", payload(i)).await.unwrap();
                    }
                })
            })
            .await,
        );
        for queue in ["w1", "w4"] {
            let name = format!(
                "tasks sent and processed, 100 in flight, {} worker(s)",
                &queue[1..]
            );
            report.push(
                measure(&name, TASK_N, || {
                    in_flight(TASK_N, |i| {
                        let comm = comm.clone();
                        async move {
                            let task =
                                comm.task_send_with(payload(i), TaskSendOptions::for_queue(queue));
                            assert_eq!(task.await.unwrap()["i"], i);
                        }
                    })
                })
                .await,
            );
        }
        report.push(
            measure(
                "broadcasts, 100 in flight, until all heard",
                BROADCAST_N,
                || async {
                    comm.rpc_send("reset", Value::Null).await.unwrap();
                    in_flight(BROADCAST_N, |i| {
                        let comm = comm.clone();
                        async move {
                            let message = Broadcast::new(payload(i))
                                .sender("bench")
                                .subject("bench.msg");
                            comm.broadcast_send(message).await.unwrap();
                        }
                    })
                    .await;
                    while comm.rpc_send("count", Value::Null).await.unwrap() != BROADCAST_N {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                },
            )
            .await,
        );
        comm.close().await;
    });

    drop(server.stdin.take());
    let _ = server.wait();

    println!(
        "\n{:<62} {:>12} {:>20}",
        "workload", "per second", "client CPU per unit"
    );
    for row in &report {
        println!(
            "{:<62} {:>12.0} {:>17.1} us",
            row.name,
            median(&row.rates),
            median(&row.cpu_us)
        );
    }
    println!(
        "(medians of {ROUNDS} rounds, {SEQUENTIAL_ROUNDS} for the sequential rows; the server in a second process)"
    );
}

/// The sequential rows, each against its floors, rounds interleaved so that the VM's drift
/// hits ours and the floors alike; ratios are paired per round, then their median taken. The
/// async client runs on a current-thread runtime on this thread, the synchronous one from this
/// thread to a runtime thread of its own, as a program uses each.
fn sequential(prefix: &str) -> Vec<Row> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (comm, raw, routed, to_ours) = runtime.block_on(async {
        let comm = AmqpCommunicator::connect(config(prefix)).await.unwrap();
        let raw = RawClient::connect(&format!("{prefix}.raw")).await;
        let routed = RawClient::connect_to(&format!("{prefix}.messages"), RAW_TOPIC_KEY).await;
        let to_ours = RawClient::connect_to(&format!("{prefix}.messages"), "[rpc].echo").await;
        for i in 0..50 {
            comm.rpc_send("echo", payload(i)).await.unwrap();
            raw.call(payload(i)).await;
            routed.call(payload(i)).await;
            to_ours.call(payload(i)).await;
        }
        (comm, raw, routed, to_ours)
    });
    let sync = amqp::connect_with(config(prefix)).unwrap();
    // The synchronous floor: bare lapin driven from this thread through a runtime thread, as
    // the synchronous communicator drives ours (the same thread settings), so that the cost of
    // the two hops is in the floor too.
    let hop = runtime_thread::RuntimeThread::builder()
        .name("bare-hop")
        .idle_spin(Duration::ZERO)
        .wait_spin(Duration::ZERO)
        .start()
        .unwrap();
    let raw_queue = format!("{prefix}.raw");
    let hopping = Arc::new(
        hop.run_threadsafe(async move { RawClient::connect(&raw_queue).await })
            .wait()
            .unwrap(),
    );
    let hop_call = |i: usize| {
        let raw = hopping.clone();
        hop.run_threadsafe(async move { raw.call(payload(i)).await })
            .wait()
            .unwrap();
    };
    (0..50).for_each(hop_call);
    for i in 0..50 {
        sync.rpc_send("echo", payload(i)).wait().unwrap();
    }
    let mut lean_bare = Lean::new(&format!("{prefix}.raw"));
    let mut lean_lean = Lean::new(&format!("{prefix}.lean"));
    let mut broadcaster = lean::Lean::connect("");
    let mut confirms = 0;
    let exchange = format!("{prefix}.messages");

    let mut rows: Vec<Row> = [
        "baseline: bare lapin round trip (confirm + reply)",
        "baseline: lean client, bare-lapin echo",
        "baseline: lean client, lean echo",
        "RPC sequential, async",
        "RPC sequential, synchronous communicator",
        "baseline: lean client, broadcasts one after another until all heard",
        "broadcasts, sent one after another until all heard",
        "baseline: bare lapin, broadcasts one after another until all heard",
        "baseline: bare lapin from a plain thread through a runtime thread",
        "baseline: bare lapin routed as kiwipy (topic exchange both ways)",
        "bare lapin client, our server (the server's share)",
    ]
    .into_iter()
    .map(|name| Row::new(name, Vec::new(), Vec::new()))
    .collect();
    for _ in 0..SEQUENTIAL_ROUNDS {
        rows[0].sample(RPC_N, || {
            runtime.block_on(async {
                for i in 0..RPC_N {
                    raw.call(payload(i)).await;
                }
            });
        });
        rows[1].sample(RPC_N, || (0..RPC_N).for_each(|i| lean_bare.call(i)));
        rows[2].sample(RPC_N, || (0..RPC_N).for_each(|i| lean_lean.call(i)));
        rows[3].sample(RPC_N, || {
            runtime.block_on(async {
                for i in 0..RPC_N {
                    let answer = comm.rpc_send("echo", payload(i)).await.unwrap();
                    assert_eq!(answer["i"], i);
                }
            });
        });
        rows[8].sample(RPC_N, || (0..RPC_N).for_each(hop_call));
        rows[9].sample(RPC_N, || {
            runtime.block_on(async {
                for i in 0..RPC_N {
                    routed.call(payload(i)).await;
                }
            });
        });
        rows[10].sample(RPC_N, || {
            runtime.block_on(async {
                for i in 0..RPC_N {
                    to_ours.call(payload(i)).await;
                }
            });
        });
        rows[4].sample(RPC_N, || {
            for i in 0..RPC_N {
                let answer = sync.rpc_send("echo", payload(i)).wait().unwrap();
                assert_eq!(answer["i"], i);
            }
        });
        let heard = || sync.rpc_send("count", Value::Null).wait().unwrap();
        let until_all_heard = || {
            while heard() != BROADCAST_N {
                std::thread::sleep(Duration::from_micros(500));
            }
        };
        sync.rpc_send("reset", Value::Null).wait().unwrap();
        rows[5].sample(BROADCAST_N, || {
            for i in 0..BROADCAST_N {
                let envelope = json!({
                    "body": payload(i), "sender": "bench", "subject": "bench.msg",
                    "correlation_id": null,
                });
                let body = serde_json::to_vec(&envelope).unwrap();
                let properties = lapin::BasicProperties::default();
                broadcaster.publish_to(&exchange, "[broadcast]", &body, properties);
                let wanted = confirms + 1;
                broadcaster.await_confirms(&mut confirms, wanted);
            }
            until_all_heard();
        });
        sync.rpc_send("reset", Value::Null).wait().unwrap();
        rows[6].sample(BROADCAST_N, || {
            runtime.block_on(async {
                for i in 0..BROADCAST_N {
                    let message = Broadcast::new(payload(i))
                        .sender("bench")
                        .subject("bench.msg");
                    comm.broadcast_send(message).await.unwrap();
                }
            });
            until_all_heard();
        });
        sync.rpc_send("reset", Value::Null).wait().unwrap();
        rows[7].sample(BROADCAST_N, || {
            runtime.block_on(async {
                for i in 0..BROADCAST_N {
                    raw.broadcast(&exchange, i).await;
                }
            });
            until_all_heard();
        });
    }
    sync.close();
    drop(hopping);
    let _ = hop.stop();
    runtime.block_on(comm.close());

    let ratio = |ours: usize, floor: usize, what: fn(&Row) -> &Vec<f64>| {
        let paired: Vec<f64> = (what(&rows[ours]).iter())
            .zip(what(&rows[floor]))
            .map(|(ours, floor)| ours / floor)
            .collect();
        median(&paired)
    };
    fn rates(row: &Row) -> &Vec<f64> {
        &row.rates
    }
    fn cpu(row: &Row) -> &Vec<f64> {
        &row.cpu_us
    }
    println!("paired per round, medians over {SEQUENTIAL_ROUNDS} rounds:");
    println!(
        "  RPC async / bare lapin: rate {:.2}x (target >= 0.9x), client CPU {:.2}x (target <= 1.2x); \
         bare lapin routed as kiwipy / bare lapin: rate {:.2}x; ours / that: rate {:.2}x, CPU {:.2}x",
        ratio(3, 0, rates),
        ratio(3, 0, cpu),
        ratio(9, 0, rates),
        ratio(3, 9, rates),
        ratio(3, 9, cpu)
    );
    println!(
        "  bare lapin client: our server / the bare echo routed as kiwipy: rate {:.2}x; our \
         client / bare lapin client, both to our server: rate {:.2}x, CPU {:.2}x",
        ratio(10, 9, rates),
        ratio(3, 10, rates),
        ratio(3, 10, cpu)
    );
    println!(
        "  RPC synchronous / bare lapin: rate {:.2}x, client CPU {:.2}x (target <= 1.3x); bare \
         lapin through a runtime thread / bare lapin: rate {:.2}x, CPU {:.2}x; ours synchronous \
         / that: rate {:.2}x, CPU {:.2}x",
        ratio(4, 0, rates),
        ratio(4, 0, cpu),
        ratio(8, 0, rates),
        ratio(8, 0, cpu),
        ratio(4, 8, rates),
        ratio(4, 8, cpu)
    );
    println!(
        "  broadcasts one after another / lean floor: rate {:.2}x (target >= 0.8x); bare lapin / \
         lean floor: {:.2}x; ours / bare lapin: {:.2}x",
        ratio(6, 5, rates),
        ratio(7, 5, rates),
        ratio(6, 7, rates)
    );
    rows
}

/// The lean client (no I/O thread) calling an echo queue, one call at a time.
struct Lean {
    client: lean::Lean,
    server: String,
    confirms: u64,
    sent: u64,
}

impl Lean {
    fn new(server: &str) -> Lean {
        let mut lean = Lean {
            client: lean::Lean::connect(""),
            server: server.to_owned(),
            confirms: 0,
            sent: 0,
        };
        (0..50).for_each(|i| lean.call(i));
        lean
    }

    fn call(&mut self, i: usize) {
        let properties = lapin::BasicProperties::default()
            .with_correlation_id("lean".into())
            .with_reply_to(self.client.queue.as_str().into());
        let body = serde_json::to_vec(&payload(i)).unwrap();
        self.client.publish(&self.server, &body, properties);
        self.sent += 1;
        let reply = self.client.next_delivery(&mut self.confirms);
        self.client.await_confirms(&mut self.confirms, self.sent);
        let value: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(value["i"], i);
    }
}

struct Row {
    name: String,
    rates: Vec<f64>,
    cpu_us: Vec<f64>,
}

impl Row {
    fn new(name: &str, rates: Vec<f64>, cpu_us: Vec<f64>) -> Row {
        Row {
            name: name.to_owned(),
            rates,
            cpu_us,
        }
    }

    /// Runs `units` units once, noting their rate and the process's CPU time per unit.
    fn sample(&mut self, units: usize, run: impl FnOnce()) {
        let (start, cpu_start) = (Instant::now(), cpu_time());
        run();
        self.rates
            .push(units as f64 / start.elapsed().as_secs_f64());
        (self.cpu_us).push((cpu_time() - cpu_start).as_secs_f64() * 1e6 / units as f64);
    }
}

async fn measure<F, Fut>(name: &str, units: usize, mut round: F) -> Row
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let (mut rates, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (start, cpu_start) = (Instant::now(), cpu_time());
        round().await;
        rates.push(units as f64 / start.elapsed().as_secs_f64());
        cpu.push((cpu_time() - cpu_start).as_secs_f64() * 1e6 / units as f64);
    }
    Row::new(name, rates, cpu)
}

/// Runs `call(0..n)` with at most `IN_FLIGHT` at once.
async fn in_flight<F, Fut>(n: usize, call: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let call = call(i);
        tasks.push(tokio::spawn(async move {
            call.await;
            drop(permit);
        }));
    }
    for task in join_all(tasks).await {
        task.unwrap();
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// This process's CPU time (user + system).
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// The server process: the communicator's subscribers, and a bare lapin echo for the baseline.
fn serve(prefix: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let comm = AmqpCommunicator::connect(config(prefix)).await.unwrap();
        comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v))
            .await
            .unwrap();
        let heard = Arc::new(AtomicU64::new(0));
        let count = heard.clone();
        comm.add_rpc_subscriber("count", Handler::sync(move |_| json!(count.load(Relaxed))))
            .await
            .unwrap();
        let reset = heard.clone();
        comm.add_rpc_subscriber(
            "reset",
            Handler::sync(move |_| json!(reset.swap(0, Relaxed))),
        )
        .await
        .unwrap();
        let counter = heard.clone();
        let listener = BroadcastHandler::sync(move |_| {
            counter.fetch_add(1, Relaxed);
        });
        comm.add_broadcast_subscriber(BroadcastFilter::new(), listener)
            .await
            .unwrap();
        let options = TaskSubscriberOptions { prefetch: 50 };
        comm.add_task_subscriber("w1", Handler::sync(|v: Value| v), options)
            .await
            .unwrap();
        for _ in 0..4 {
            let options = TaskSubscriberOptions { prefetch: 25 };
            comm.add_task_subscriber("w4", Handler::sync(|v: Value| v), options)
                .await
                .unwrap();
        }
        tokio::spawn(raw_echo(format!("{prefix}.raw"), None));
        let routed = (format!("{prefix}.messages"), RAW_TOPIC_KEY.to_owned());
        tokio::spawn(raw_echo(format!("{prefix}.raw-topic"), Some(routed)));
        let mut echo = lean::Lean::connect(&format!("{prefix}.lean"));
        std::thread::spawn(move || {
            let mut confirms = 0;
            loop {
                let request = echo.next_delivery(&mut confirms);
                let (Some(to), Some(id)) = (request.reply_to, request.correlation_id) else {
                    continue;
                };
                let properties = lapin::BasicProperties::default().with_correlation_id(id.into());
                echo.publish(&to, &request.body, properties);
            }
        });
        println!("READY");
        tokio::task::spawn_blocking(|| {
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
        })
        .await
        .unwrap()
        .unwrap();
        comm.close().await;
    });
}

/// Bare lapin: consume `queue` and publish each body back to its `reply_to`.
/// The routing key of the bare-lapin echo that is reached as kiwipy's RPCs are: through the
/// topic exchange, its answers sent back through it too.
const RAW_TOPIC_KEY: &str = "[rpc].raw-topic";

/// Bare lapin: consume `queue` and publish each body back to its `reply_to`, through the
/// default exchange, or with `routed` (exchange, key) bound to the topic exchange and answering
/// through it, as kiwipy's protocol routes requests and answers.
async fn raw_echo(queue: String, routed: Option<(String, String)>) {
    let queue = queue.as_str();
    let connection = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    if let Some((exchange, key)) = &routed {
        channel
            .queue_bind(
                queue.into(),
                exchange.as_str().into(),
                key.as_str().into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let answers_through = routed.map(|(exchange, _)| exchange).unwrap_or_default();
    let mut requests = channel
        .basic_consume(queue.into(), "".into(), no_ack, FieldTable::default())
        .await
        .unwrap();
    while let Some(Ok(request)) = requests.next().await {
        let (Some(to), Some(id)) = (
            request.properties.reply_to().clone(),
            request.properties.correlation_id().clone(),
        ) else {
            continue;
        };
        let properties = BasicProperties::default().with_correlation_id(id);
        let _ = channel
            .basic_publish(
                answers_through.as_str().into(),
                to,
                BasicPublishOptions::default(),
                &request.data,
                properties,
            )
            .await;
    }
}

impl RawClient {
    /// Publishes a kiwipy broadcast envelope to `exchange` and waits for its confirm.
    async fn broadcast(&self, exchange: &str, i: usize) {
        let envelope = json!({
            "body": payload(i), "sender": "bench", "subject": "bench.msg",
            "correlation_id": null,
        });
        let body = serde_json::to_vec(&envelope).unwrap();
        self.channel
            .basic_publish(
                exchange.into(),
                "[broadcast]".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Bare lapin on the client side: publish with a confirm, wait for the reply.
struct RawClient {
    _connection: Connection,
    channel: lapin::Channel,
    replies: tokio::sync::Mutex<lapin::Consumer>,
    /// Where requests go: the default exchange and the echo's queue, or the topic exchange and
    /// the echo's routing key.
    exchange: String,
    key: String,
    reply_queue: String,
}

impl RawClient {
    /// A client of the echo consuming `queue` through the default exchange.
    async fn connect(queue: &str) -> RawClient {
        Self::connect_to("", queue).await
    }

    /// A client of the echo reached through `exchange` with `key`, its reply queue bound to that
    /// exchange too (kiwipy's routing, when `exchange` is the topic exchange).
    async fn connect_to(exchange: &str, key: &str) -> RawClient {
        let connection = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        let reply_queue = channel
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await
            .unwrap()
            .name()
            .to_string();
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        if !exchange.is_empty() {
            channel
                .queue_bind(
                    reply_queue.as_str().into(),
                    exchange.into(),
                    reply_queue.as_str().into(),
                    Default::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let replies = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await
            .unwrap();
        RawClient {
            _connection: connection,
            channel,
            replies: tokio::sync::Mutex::new(replies),
            exchange: exchange.to_owned(),
            key: key.to_owned(),
            reply_queue,
        }
    }

    async fn call(&self, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let properties = BasicProperties::default()
            .with_correlation_id("raw".into())
            .with_reply_to(self.reply_queue.as_str().into());
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.key.as_str().into(),
                options,
                &bytes,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let reply = self.replies.lock().await.next().await.unwrap().unwrap();
        let value: Value = serde_json::from_slice(&reply.data).unwrap();
        // Our server answers in kiwipy's envelope, the bare echo with the body itself.
        let answer = value.get("result").unwrap_or(&value);
        assert_eq!(answer["i"], body["i"]);
    }
}
