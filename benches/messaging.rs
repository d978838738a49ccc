//! Messaging-layer benchmarks, each against a hand-written tokio baseline in the same run:
//! - RPC round trip through the local broker, from async code and from a plain thread (through
//!   `SyncCommunicator`), vs an `mpsc` + `oneshot` request/reply to a server task;
//! - task throughput (send, process, acknowledge, reply) with 1 and 4 subscribers, vs the same
//!   work fanned out over `mpsc` channels to 1 and 4 worker tasks;
//! - broadcast deliveries to 1 and 100 subscribers, vs `tokio::sync::broadcast`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Handler, LocalCommunicator,
    SyncCommunicator, TaskSendOptions, TaskSubscriberOptions, Value,
};
use tokio::sync::{mpsc, oneshot};

mod common;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Request = (Value, oneshot::Sender<Value>);

/// The baseline server: answers each request with its own body.
fn spawn_raw_server(rt: &tokio::runtime::Runtime) -> mpsc::UnboundedSender<Request> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    rt.spawn(async move {
        while let Some((body, reply)) = rx.recv().await {
            let _ = reply.send(body);
        }
    });
    tx
}

/// Times `iters` sequential awaited calls on `rt`.
fn time_calls<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            call(i).await;
        }
        start.elapsed()
    })
}

fn rpc_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("m_rpc_round_trip");
    group.throughput(Throughput::Elements(1));
    let rt = runtime();

    let raw = spawn_raw_server(&rt);
    group.bench_function("raw_mpsc_oneshot_async", |b| {
        b.iter_custom(|iters| {
            time_calls(&rt, iters, |i| {
                let (reply, answer) = oneshot::channel();
                raw.send((Value::from(i), reply)).unwrap();
                async move { answer.await.unwrap() }
            })
        })
    });

    let comm = LocalCommunicator::new();
    rt.block_on(comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)))
        .unwrap();
    group.bench_function("local_communicator_async", |b| {
        b.iter_custom(|iters| {
            time_calls(&rt, iters, |i| {
                let comm = comm.clone();
                async move { comm.rpc_send("echo", Value::from(i)).await.unwrap() }
            })
        })
    });

    // A handler that does not answer on its first poll takes the spawned-server path.
    rt.block_on(comm.add_rpc_subscriber(
        "yielding",
        Handler::from_async(|v: Value| async move {
            tokio::task::yield_now().await;
            v
        }),
    ))
    .unwrap();
    group.bench_function("local_communicator_async_handler_that_yields", |b| {
        b.iter_custom(|iters| {
            time_calls(&rt, iters, |i| {
                let comm = comm.clone();
                async move { comm.rpc_send("yielding", Value::from(i)).await.unwrap() }
            })
        })
    });

    // From a plain thread: a server task on a runtime thread, the caller blocking on the reply.
    let server_rt = runtime_thread::RuntimeThread::builder().start().unwrap();
    let raw_remote = {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        server_rt
            .spawn_threadsafe(async move {
                while let Some((body, reply)) = rx.recv().await {
                    let _ = reply.send(body);
                }
            })
            .unwrap();
        tx
    };
    group.bench_function("raw_mpsc_oneshot_from_plain_thread", |b| {
        b.iter(|| {
            let (reply, answer) = oneshot::channel();
            raw_remote.send((Value::from(1), reply)).unwrap();
            answer.blocking_recv().unwrap()
        })
    });

    let sync = SyncCommunicator::local().unwrap();
    sync.add_rpc_subscriber("echo", Handler::sync(|v: Value| v))
        .wait()
        .unwrap();
    group.bench_function("sync_communicator_from_plain_thread", |b| {
        b.iter(|| sync.rpc_send("echo", Value::from(1)).wait().unwrap())
    });
    sync.close();
    server_rt.stop().unwrap();
    group.finish();
}

fn task_throughput(c: &mut Criterion) {
    const BATCH: u64 = 10_000;
    let mut group = c.benchmark_group("m_task_throughput");
    group.throughput(Throughput::Elements(BATCH));
    let rt = runtime();
    for workers in [1usize, 4] {
        // Baseline: requests dealt round-robin to worker tasks, each replying on a oneshot.
        let senders: Vec<_> = (0..workers).map(|_| spawn_raw_server(&rt)).collect();
        group.bench_with_input(
            BenchmarkId::new("raw_mpsc_workers", workers),
            &workers,
            |b, _| {
                b.iter_custom(|iters| {
                    time_calls(&rt, iters, |_| {
                        let answers: Vec<_> = (0..BATCH)
                            .map(|i| {
                                let (reply, answer) = oneshot::channel();
                                senders[i as usize % workers]
                                    .send((Value::from(i), reply))
                                    .unwrap();
                                answer
                            })
                            .collect();
                        async move {
                            for answer in answers {
                                answer.await.unwrap();
                            }
                        }
                    })
                })
            },
        );

        let comm = LocalCommunicator::new();
        for _ in 0..workers {
            rt.block_on(comm.add_task_subscriber(
                "bench",
                Handler::sync(|v: Value| v),
                TaskSubscriberOptions { prefetch: 0 },
            ))
            .unwrap();
        }
        group.bench_with_input(
            BenchmarkId::new("local_task_queue", workers),
            &workers,
            |b, _| {
                b.iter_custom(|iters| {
                    time_calls(&rt, iters, |_| async {
                        let sends = (0..BATCH).map(|i| {
                            comm.task_send_with(Value::from(i), TaskSendOptions::for_queue("bench"))
                        });
                        for result in futures::future::join_all(sends).await {
                            result.unwrap();
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

/// Signals its receiver when `tick` has been called the expected number of times.
struct Countdown {
    left: AtomicUsize,
    done: parking_lot::Mutex<Option<oneshot::Sender<()>>>,
}

impl Countdown {
    fn new(expected: usize) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let countdown = Countdown {
            left: AtomicUsize::new(expected),
            done: parking_lot::Mutex::new(Some(tx)),
        };
        (Arc::new(countdown), rx)
    }

    fn tick(&self) {
        if self.left.fetch_sub(1, Relaxed) == 1
            && let Some(done) = self.done.lock().take()
        {
            let _ = done.send(());
        }
    }
}

fn broadcast_deliveries(c: &mut Criterion) {
    const SENDS: u64 = 1_000;
    let mut group = c.benchmark_group("m_broadcast_deliveries");
    let rt = runtime();
    for subscribers in [1usize, 100] {
        let deliveries = SENDS * subscribers as u64;
        group.throughput(Throughput::Elements(deliveries));

        // Baseline: tokio's broadcast channel with one receiving task per subscriber.
        group.bench_with_input(
            BenchmarkId::new("tokio_broadcast_channel", subscribers),
            &subscribers,
            |b, &n| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let (tx, _) = tokio::sync::broadcast::channel::<Value>(SENDS as usize);
                            let (countdown, all) = Countdown::new(SENDS as usize * n);
                            for _ in 0..n {
                                let (mut rx, countdown) = (tx.subscribe(), countdown.clone());
                                tokio::spawn(async move {
                                    while rx.recv().await.is_ok() {
                                        countdown.tick();
                                    }
                                });
                            }
                            let start = Instant::now();
                            for i in 0..SENDS {
                                tx.send(Value::from(i)).unwrap();
                            }
                            all.await.unwrap();
                            total += start.elapsed();
                        }
                        total
                    })
                })
            },
        );

        group.bench_with_input(
            BenchmarkId::new("local_communicator", subscribers),
            &subscribers,
            |b, &n| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let comm = LocalCommunicator::new();
                            let (countdown, all) = Countdown::new(SENDS as usize * n);
                            for _ in 0..n {
                                let countdown = countdown.clone();
                                comm.add_broadcast_subscriber(
                                    BroadcastFilter::new(),
                                    BroadcastHandler::sync(move |_| countdown.tick()),
                                )
                                .await
                                .unwrap();
                            }
                            let start = Instant::now();
                            for i in 0..SENDS {
                                comm.broadcast_send(Broadcast::new(i)).await.unwrap();
                            }
                            all.await.unwrap();
                            total += start.elapsed();
                            comm.close().await;
                        }
                        total
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = rpc_round_trip, task_throughput, broadcast_deliveries
}
criterion_main!(benches);
