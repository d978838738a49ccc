//! The control layer (plumpy's process communications), built on the engine and messaging,
//! which know nothing of each other: processes reached over any
//! [`Communicator`](crate::messaging::Communicator) by their pid, state broadcasts, a controller
//! and a launcher, wire-compatible with plumpy 0.26.
//!
//! In progress. What is here: [`wire`], the messages themselves, as plumpy writes and reads them
//! (RPC intents and their replies, the status mapping, the state broadcasts, the launcher's
//! tasks), and [`Listening`], which makes a runner's processes answer those RPCs and send those
//! broadcasts. The controller and the launcher come next.

mod listen;
pub mod wire;

pub use listen::Listening;
