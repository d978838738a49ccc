//! [`Runner`]: runs processes on a [`RuntimeThread`].

use std::sync::Arc;

use super::driver::drive;
use super::error::EngineError;
use super::handle::ProcessHandle;
use super::listener::ProcessListener;
use super::process::{Outputs, Process};
use super::shared::ProcessShared;
use super::spec::PortError;
use crate::thread::RuntimeThread;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Runs processes on a runtime thread: thousands at once, each a task that only occupies the
/// thread while a step runs.
#[derive(Clone)]
pub struct Runner {
    thread: Arc<RuntimeThread>,
}

impl Runner {
    /// A runner on a runtime thread of its own (stopped when the last clone and the thread's
    /// last `Arc` are dropped).
    pub fn start() -> Result<Self, EngineError> {
        let thread = RuntimeThread::builder().name("engine").start()?;
        Ok(Runner::new(Arc::new(thread)))
    }

    /// A runner on an existing runtime thread.
    pub fn new(thread: Arc<RuntimeThread>) -> Self {
        Runner { thread }
    }

    /// The runtime thread the processes run on.
    pub fn thread(&self) -> &RuntimeThread {
        &self.thread
    }

    /// Starts `process` and returns its handle.
    pub fn submit<P: Process>(&self, process: P) -> ProcessHandle {
        self.submit_with_listeners(process, Vec::new())
    }

    /// Starts `process` with listeners attached from the beginning (they see `Created`).
    pub fn submit_with_listeners<P: Process>(
        &self,
        process: P,
        listeners: Vec<Arc<dyn ProcessListener>>,
    ) -> ProcessHandle {
        self.start_process(process, None, listeners)
    }

    /// Validates `inputs` against `P`'s spec (filling in defaults), builds the process from them
    /// (its fields are its inputs) and starts it. Invalid inputs are refused before anything
    /// runs, with the full port path in the error.
    pub fn launch<P>(&self, inputs: Value) -> Result<ProcessHandle, EngineError>
    where
        P: Process + DeserializeOwned,
    {
        let mut inputs = inputs;
        P::spec().validate_inputs(&mut inputs)?;
        let process: P = serde_json::from_value(inputs.clone()).map_err(|e| PortError {
            path: "inputs".to_owned(),
            message: format!("cannot build {}: {e}", std::any::type_name::<P>()),
        })?;
        Ok(self.start_process(process, Some(inputs), Vec::new()))
    }

    fn start_process<P: Process>(
        &self,
        process: P,
        inputs: Option<Value>,
        listeners: Vec<Arc<dyn ProcessListener>>,
    ) -> ProcessHandle {
        let shared = Arc::new(ProcessShared::new(std::any::type_name::<P>(), listeners));
        let outcome =
            self.thread
                .run_threadsafe(drive(process, shared.clone(), self.clone(), inputs));
        ProcessHandle::new(shared, outcome)
    }

    /// Runs `process` to the end from synchronous code and returns its outputs; a failure exit
    /// code, an exception or a kill comes back as an error. Inside a step, launch a child with
    /// [`Context::launch`](super::Context::launch) and await it instead.
    pub fn run<P: Process>(&self, process: P) -> Result<Outputs, EngineError> {
        self.submit(process).wait()?.into_outputs()
    }
}
