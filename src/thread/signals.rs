//! OS signals that stop a runtime thread.
//!
//! signal-hook runs a handler per signal that writes one byte into a socket pair; the runtime reads
//! it like any other IO. Signals are process-wide, so one small process-global table remembers, per
//! signal, how many runtime threads listen and whether the disposition before us was the default.
//! When the last listener leaves, the default action (terminate, for SIGINT and SIGTERM) is emulated
//! again, because signal-hook never uninstalls its handler; a previous custom handler is chained by
//! signal-hook itself, and an ignored signal stays ignored.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use signal_hook::SigId;

/// The signals a thread listens to, registered with the OS for as long as this value lives.
pub(crate) struct SignalRegistration {
    ids: Vec<SigId>,
    listening: Vec<i32>,
    reader: UnixStream,
    last: Arc<AtomicUsize>,
}

impl SignalRegistration {
    pub(crate) fn register(signals: &[i32]) -> io::Result<Self> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        let mut registration = SignalRegistration {
            ids: Vec::new(),
            listening: Vec::new(),
            reader,
            last: Arc::new(AtomicUsize::new(0)),
        };
        for &signal in signals {
            // On an error, dropping `registration` undoes what was done so far.
            defaults::listen(signal)?;
            registration.listening.push(signal);
            let last = registration.last.clone();
            registration.ids.push(signal_hook::flag::register_usize(
                signal,
                last,
                signal as usize,
            )?);
            registration
                .ids
                .push(signal_hook::low_level::pipe::register(
                    signal,
                    writer.try_clone()?,
                )?);
        }
        Ok(registration)
    }

    /// The async side; must be called within the runtime.
    pub(crate) fn listener(&self) -> io::Result<SignalListener> {
        Ok(SignalListener {
            stream: tokio::net::UnixStream::from_std(self.reader.try_clone()?)?,
            last: self.last.clone(),
        })
    }
}

impl Drop for SignalRegistration {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        for signal in self.listening.drain(..) {
            defaults::leave(signal);
        }
    }
}

/// Signals received: how many since the last call, and the number of the last one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) count: usize,
    pub(crate) signal: i32,
}

pub(crate) struct SignalListener {
    stream: tokio::net::UnixStream,
    last: Arc<AtomicUsize>,
}

impl SignalListener {
    pub(crate) async fn next(&mut self) -> Received {
        let mut buf = [0u8; 32];
        loop {
            if self.stream.readable().await.is_err() {
                return std::future::pending().await;
            }
            match self.stream.try_read(&mut buf) {
                Ok(count) if count > 0 => {
                    let signal = i32::try_from(self.last.load(SeqCst)).unwrap_or(0);
                    return Received { count, signal };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // End of stream or a socket error: no more signals will come through here.
                _ => return std::future::pending().await,
            }
        }
    }
}

/// Waits for the next signal, or forever when the thread does not listen to any.
pub(crate) async fn next(listener: &mut Option<SignalListener>) -> Received {
    match listener {
        Some(listener) => listener.next().await,
        None => std::future::pending().await,
    }
}

/// Signals that signal-hook refuses to handle.
pub(crate) fn is_forbidden(signal: i32) -> bool {
    signal_hook::consts::FORBIDDEN.contains(&signal)
}

mod defaults {
    use super::*;

    struct Slot {
        signal: i32,
        listeners: usize,
        /// Set while nobody listens, when the disposition before us was the default one.
        emulate_default: Option<Arc<AtomicBool>>,
    }

    static SLOTS: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

    pub(super) fn listen(signal: i32) -> io::Result<()> {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.iter_mut().find(|s| s.signal == signal) {
            slot.listeners += 1;
            if let Some(flag) = &slot.emulate_default {
                flag.store(false, SeqCst);
            }
            return Ok(());
        }
        let emulate_default = if disposition_is_default(signal)? {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register_conditional_default(signal, flag.clone())?;
            Some(flag)
        } else {
            None
        };
        slots.push(Slot {
            signal,
            listeners: 1,
            emulate_default,
        });
        Ok(())
    }

    pub(super) fn leave(signal: i32) {
        let mut slots = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.iter_mut().find(|s| s.signal == signal) {
            slot.listeners = slot.listeners.saturating_sub(1);
            if slot.listeners == 0
                && let Some(flag) = &slot.emulate_default
            {
                flag.store(true, SeqCst);
            }
        }
    }

    fn disposition_is_default(signal: i32) -> io::Result<bool> {
        // SAFETY: with a null new action, sigaction only writes the current disposition into
        // `old`, a plain-data struct for which all-zero bytes are a valid value.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old.sa_sigaction == libc::SIG_DFL)
    }
}
