//! [`Listening`]: the processes of a runner, reachable over a communicator as plumpy's are.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

use futures::FutureExt;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::wire::{Intent, state_changed_subject, status_reply};
use crate::RuntimeThread;
use crate::engine::{
    ProcessController, ProcessListener, ProcessState, ProcessWatcher, Uuid, Watch,
};
use crate::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, Handler, Response,
};

/// Makes every process of a runner reachable over `C`, as a plumpy process with a communicator
/// is: give it to the runner as its [watcher](crate::engine::RunnerBuilder::watcher).
///
/// - Each process answers RPCs addressed to its pid (as text): `play`, `pause` and `kill` answer
///   `pending` at once, then, once the action has taken effect (a pause after the current step
///   of a running process), `true`, or `false` for a process that ended first (plumpy's shape,
///   which its asynchronous controller needs); `status` answers plumpy's status mapping at
///   once; an unknown intent gets a remote error naming it (see [`wire`](super::wire)).
/// - A process is reachable before it runs: over a transport that subscribes at once (the
///   in-process broker) that is already so when `submit` returns; over the network its first
///   step waits until the subscription is in place (as a plumpy process subscribes as it is
///   made), so a process seen running or waiting answers.
/// - Each process broadcasts `state_changed.<from>.<to>` (sender: its pid, body: null) for
///   every state it enters, in order; a failed broadcast is logged, never fails the process. A
///   process loaded from a checkpoint does not announce its first state again.
/// - When a process ends, its subscription goes before its last state is announced: whoever
///   heard that finds its pid [`Error::Unroutable`].
/// - The `pause`, `play` and `kill` broadcasts (body: the message) reach every process of the
///   runner through one subscriber for the runner, not one per process.
///
/// What it costs (`benches/control.rs`): in process, a trivial process that listens runs at
/// about 0.55 of the rate of a silent one (its subscription, three broadcasts, no task of its
/// own); over RabbitMQ, a binding of the worker's RPC queue and a broadcast per state.
///
/// ```
/// use std::sync::Arc;
/// use runtime_thread::RuntimeThread;
/// use runtime_thread::control::Listening;
/// use runtime_thread::engine::{Command, Process, Runner, StepContext, StepError};
/// use runtime_thread::messaging::{Communicator, LocalCommunicator, SyncCommunicator};
/// use serde_json::json;
///
/// struct Waits;
/// impl Process for Waits {
///     async fn step(&mut self, step: &str, _: &mut StepContext) -> Result<Command, StepError> {
///         Ok(match step {
///             "run" => Command::wait_for_resume("done"),
///             _ => Command::finish(),
///         })
///     }
/// }
///
/// let thread = Arc::new(RuntimeThread::builder().start()?);
/// let broker = LocalCommunicator::new();
/// let listening = Listening::new(broker.clone(), &thread)?;
/// let runner = Runner::builder().thread(thread.clone()).watcher(listening).start()?;
/// let process = runner.submit(Waits);
///
/// // Another part of the program (or, over RabbitMQ, another program) steers it by pid.
/// let comm = SyncCommunicator::new(broker, thread.clone());
/// let pid = process.pid().to_string();
/// assert_eq!(comm.rpc_send(&pid, json!({"intent": "pause", "message": null})).wait()?, true);
/// let status = comm.rpc_send(&pid, json!({"intent": "status"})).wait()?;
/// assert_eq!(status["paused"], true);
/// assert_eq!(comm.rpc_send(&pid, json!({"intent": "kill", "message": "enough"})).wait()?, true);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listening<C: Communicator> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    comm: C,
    /// The runtime the subscriptions and broadcasts run on (the runner's thread).
    runtime: tokio::runtime::Handle,
    /// The processes alive now, for the broadcasts to every process.
    processes: Mutex<HashMap<Uuid, ProcessController>>,
}

impl<C: Communicator> Listening<C> {
    /// Listens on `comm`, running its subscriptions and broadcasts on `thread` (the runner's).
    /// Subscribes the runner's one `pause` / `play` / `kill` broadcast subscriber at once.
    ///
    /// # Errors
    ///
    /// [`Error::Thread`] when `thread` is not running, or when called on `thread` itself (it
    /// waits for the subscription); the communicator's error when the subscription fails.
    pub fn new(comm: C, thread: &RuntimeThread) -> Result<Arc<Self>, Error> {
        let inner = Arc::new(Inner {
            comm,
            runtime: thread.handle()?,
            processes: Mutex::new(HashMap::new()),
        });
        // Held weakly: the communicator keeps its subscribers, and must not keep the runner's
        // processes alive through this one.
        let weak = Arc::downgrade(&inner);
        let obey = BroadcastHandler::sync(move |broadcast| Inner::obey(&weak, &broadcast));
        let to_every_process = BroadcastFilter::new()
            .subject("pause")
            .subject("play")
            .subject("kill");
        let comm = inner.comm.clone();
        thread
            .run_threadsafe(
                async move { comm.add_broadcast_subscriber(to_every_process, obey).await },
            )
            .wait()??;
        Ok(Arc::new(Listening { inner }))
    }
}

impl<C: Communicator> Inner<C> {
    /// Acts on a broadcast to every process.
    fn obey(this: &Weak<Self>, broadcast: &Broadcast) {
        let Some(this) = this.upgrade() else { return };
        let processes: Vec<ProcessController> = this.processes.lock().values().cloned().collect();
        let message = match &broadcast.body {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        for process in processes {
            match broadcast.subject.as_deref() {
                Some("pause") => process.pause(),
                Some("play") => process.play(),
                Some("kill") => process.kill(message.clone()),
                _ => false,
            };
        }
    }
}

impl<C: Communicator> ProcessWatcher for Listening<C> {
    fn on_process(&self, process: &ProcessController) -> Watch {
        let pid = process.pid();
        self.inner.processes.lock().insert(pid, process.clone());
        let outbox = Arc::new_cyclic(|me| Outbox {
            me: me.clone(),
            inner: self.inner.clone(),
            pid,
            id: pid.to_string(),
            queue: Mutex::new(None),
            subscribed: Notify::new(),
        });
        let controller = process.clone();
        let handler = Handler::sync(move |message| answer(&controller, &message));
        let at_once = outbox.post(Post::Subscribe(handler));
        // The first state was entered before the watcher saw the process; a loaded one
        // announced it where it was created.
        if process.state() == ProcessState::Created && !process.was_loaded() {
            outbox.post(Post::Entered(None, ProcessState::Created));
        }
        let watch = Watch::nothing().listener(outbox.clone());
        if at_once {
            return watch;
        }
        // Over the network: the process does nothing until it can be reached (as a plumpy
        // process, which subscribes as it is made).
        let reachable = outbox.clone();
        watch.hold_until(async move { reachable.subscribed.notified().await })
    }
}

/// What a process sends, in order: its subscription, each state it enters, and its
/// unsubscription before the last.
enum Post {
    /// The subscription (the outbox's `subscribed` tells when it is in place, or failed).
    Subscribe(Handler),
    Entered(Option<ProcessState>, ProcessState),
    /// Stopped here without ending (the runner closed): unreachable here from now on, but
    /// not announced, since another worker may continue it.
    Abandoned,
}

/// One process's messages, sent in order. A message the transport takes at once (the
/// in-process broker takes every one) is sent on the spot, on the thread that posts it; one
/// that has to wait (over the network) starts a task, which then sends the rest in turn. So a
/// process that nobody controls costs no task in process, and its subscription exists before
/// `submit` returns.
struct Outbox<C> {
    /// Itself, for the task it may start (listeners are called through `&self`).
    me: Weak<Outbox<C>>,
    inner: Arc<Inner<C>>,
    pid: Uuid,
    id: String,
    /// While a task sends for this process: the way to it.
    queue: Mutex<Option<mpsc::UnboundedSender<Post>>>,
    /// Told once the subscription is in place, for a process held until then (inline: no
    /// allocation for a process whose subscription is made on the spot).
    subscribed: Notify,
}

impl<C: Communicator> Outbox<C> {
    /// Sends `post`, or queues it for the outbox's task; true if it was sent on the spot.
    fn post(self: &Arc<Self>, post: Post) -> bool {
        let mut queue = self.queue.lock();
        if let Some(queue) = queue.as_ref() {
            let _ = queue.send(post);
            return false;
        }
        let mut sending = Box::pin(self.clone().send(post));
        let sent = {
            // Entered, so that a transport that spawns in its first poll (a RabbitMQ
            // subscription starts its consumer task) spawns on the runner's runtime, even when
            // the process is started or steered from a plain thread.
            let _entered = self.inner.runtime.enter();
            (&mut sending).now_or_never()
        };
        if sent.is_some() {
            return true;
        }
        // The runtime's handle, not `tokio::spawn`: a process may be started or steered
        // from a plain thread.
        let (to_task, mut posts) = mpsc::unbounded_channel();
        *queue = Some(to_task);
        let outbox = self.clone();
        // The task holds the outbox, whose queue holds the way to the task: it ends after the
        // last state, so that the two do not keep each other alive.
        self.inner.runtime.spawn(async move {
            if sending.await {
                return;
            }
            while let Some(post) = posts.recv().await {
                if outbox.clone().send(post).await {
                    return;
                }
            }
        });
        false
    }

    /// Sends one message; after the last state, unsubscribes and returns true.
    async fn send(self: Arc<Self>, post: Post) -> bool {
        let (pid, comm) = (self.pid, &self.inner.comm);
        match post {
            Post::Subscribe(handler) => {
                if let Err(error) = comm.add_rpc_subscriber(&self.id, handler).await {
                    tracing::warn!(%pid, %error, "a process could not subscribe to its RPCs");
                }
                // A permit if the process is not waiting yet: it is told either way.
                self.subscribed.notify_one();
                false
            }
            Post::Entered(from, to) => {
                // Unsubscribed before the last state is announced, so that whoever heard it
                // finds the pid unroutable.
                if to.is_terminal() {
                    self.inner.processes.lock().remove(&pid);
                    if let Err(error) = comm.remove_rpc_subscriber(&self.id).await {
                        tracing::debug!(%pid, %error, "an ended process's subscription was gone");
                    }
                }
                let broadcast = Broadcast::new(Value::Null)
                    .sender(self.id.clone())
                    .subject(state_changed_subject(from, to));
                if let Err(error) = comm.broadcast_send(broadcast).await {
                    tracing::warn!(%pid, %error, "a state broadcast could not be sent");
                }
                to.is_terminal()
            }
            Post::Abandoned => {
                self.inner.processes.lock().remove(&pid);
                if let Err(error) = comm.remove_rpc_subscriber(&self.id).await {
                    tracing::debug!(%pid, %error, "an abandoned process's subscription was gone");
                }
                true
            }
        }
    }
}

impl<C: Communicator> ProcessListener for Outbox<C> {
    fn on_state_changed(&self, _pid: Uuid, from: Option<ProcessState>, to: ProcessState) {
        if let Some(this) = self.me.upgrade() {
            this.post(Post::Entered(from, to));
        }
    }

    fn on_abandoned(&self, _pid: Uuid) {
        if let Some(this) = self.me.upgrade() {
            this.post(Post::Abandoned);
        }
    }
}

/// Answers one RPC to a process. `play`, `pause` and `kill` answer `pending` at once, then
/// whether the action took effect, once it has (plumpy's shape, which its asynchronous
/// controller relies on: it awaits the reply and then the future in it). `status` answers at
/// once.
fn answer(process: &ProcessController, message: &Value) -> Response {
    let process = process.clone();
    match Intent::from_message(message) {
        Ok(Intent::Play { .. }) => Response::later(async move {
            let taken = process.play() && process.until_played().await;
            Value::Bool(taken)
        }),
        Ok(Intent::Pause { .. }) => Response::later(async move {
            let taken = process.pause() && process.until_paused().await;
            Value::Bool(taken)
        }),
        Ok(Intent::Kill { message, force }) => Response::later(async move {
            let message = message.unwrap_or_default();
            let taken = if force {
                process.force_kill(message)
            } else {
                process.kill(message)
            };
            let killed = taken && process.until_ended().await.state() == ProcessState::Killed;
            Value::Bool(killed)
        }),
        Ok(Intent::Status { .. }) => Response::Value(status_reply(&process.status())),
        Err(error) => Response::Failed(error.to_string()),
    }
}

impl<C: Communicator + fmt::Debug> fmt::Debug for Listening<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listening")
            .field("comm", &self.inner.comm)
            .field("processes", &self.inner.processes.lock().len())
            .finish()
    }
}
