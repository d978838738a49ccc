//! Starting a supervisor in the background, and hearing that it is ready.
//!
//! The program is started again in a new session (no terminal can send it SIGHUP), as the
//! grandchild of the starter (the child in between exits at once and is reaped, so the daemon
//! belongs to init, not to a command line that has long exited), its stdin on `/dev/null`
//! and its output appended to the log. A pipe, named to the child in an
//! environment variable, carries one line back: `ok <details>` once its pool runs, or
//! `error <why>`. The starter waits for that line, an end of file (the child died first) or
//! its timeout, whichever comes first: no polling.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::error::DaemonError;

/// The variable that names the ready pipe's descriptor to the detached child.
const READY_FD: &str = "RUNTIME_THREAD_DAEMON_READY_FD";

/// How a detached start went.
#[derive(Debug)]
pub(crate) enum Started {
    /// The child said it is ready, with these details.
    Ready(String),
    /// The child said why it could not start.
    Failed(String),
    /// The child ended without a word (see its log), or said nothing in time.
    Silent(String),
}

/// Starts `command` detached, logging to `log`, and waits up to `timeout` for its word.
pub(crate) fn start_detached(
    mut command: Command,
    log: &Path,
    timeout: Duration,
) -> Result<Started, DaemonError> {
    let log_failed = |source| DaemonError::Log {
        path: log.to_owned(),
        source,
    };
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(log_failed)?;
    let errors = output.try_clone().map_err(log_failed)?;
    let (read, write) = pipe().map_err(log_failed)?;
    let write_fd = write.as_raw_fd();
    command
        .env(READY_FD, write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors);
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, fork, _exit, fcntl.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The child in between ends here; the grandchild goes on to exec (and reports a
            // failed exec to the starter through the same pipe as a child would).
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            // The child's copy of the write end survives exec (the parent's does not).
            if libc::fcntl(write_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut between = command.spawn().map_err(log_failed)?;
    let _ = between.wait();
    // Only the daemon holds the write end now: its end of file means it exited.
    drop(write);
    let (tell, heard) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(File::from(read)).read_line(&mut line);
        let _ = tell.send(read.map(|_| line));
    });
    Ok(match heard.recv_timeout(timeout) {
        Ok(Ok(line)) if line.starts_with("ok") => Started::Ready(line[2..].trim().to_owned()),
        Ok(Ok(line)) if line.starts_with("error") => Started::Failed(line[5..].trim().to_owned()),
        Ok(_) => Started::Silent("it exited without saying why".to_owned()),
        Err(_) => Started::Silent(format!("it said nothing within {timeout:?}")),
    })
}

/// In a child started by [`start_detached`]: the pipe to tell it how the start went, kept
/// from the processes this one starts.
pub(crate) fn ready_pipe() -> Option<File> {
    let fd: RawFd = std::env::var(READY_FD).ok()?.parse().ok()?;
    // SAFETY: fcntl on a descriptor number; a number that is not open fails harmlessly.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return None;
    }
    // SAFETY: the descriptor was named by the starter for this process alone, which takes
    // it over once (the variable is read once, at the start).
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Tells the starter how the start went (and closes the pipe).
pub(crate) fn announce(pipe: Option<File>, outcome: Result<&str, &str>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let line = match outcome {
        Ok(details) => format!("ok {details}\n"),
        Err(why) => format!("error {}\n", why.replace('\n', " ")),
    };
    let _ = pipe.write_all(line.as_bytes());
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just opened, and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
