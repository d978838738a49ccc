//! The command line's grammar (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use uuid::Uuid;

/// The arguments of a daemon's program.
#[derive(Debug, Parser)]
pub(super) struct Args {
    /// The config file (default: $<APP>_CONFIG, else ~/.config/<app>/daemon.json if it exists)
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// Print JSON, for scripts, instead of text
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: Top,
}

#[derive(Debug, Subcommand)]
pub(super) enum Top {
    /// Start, stop and steer the pool of workers
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// List, steer and submit processes
    #[command(subcommand)]
    Process(ProcessCommand),
}

#[derive(Debug, Subcommand)]
pub(super) enum DaemonCommand {
    /// Start the daemon in the background (or the foreground) with N workers
    Start {
        /// How many workers (default: the configured number)
        workers: Option<usize>,
        /// Stay in the foreground until Ctrl-C or SIGTERM
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the daemon: workers end their running steps, then exit
    Stop,
    /// Show the daemon and its workers
    Status,
    /// Add workers
    Incr {
        /// How many
        #[arg(default_value_t = 1)]
        n: usize,
    },
    /// Remove workers, the oldest first
    Decr {
        /// How many
        #[arg(default_value_t = 1)]
        n: usize,
    },
    /// Replace every worker
    Restart,
    /// Show the end of the workers' log
    Logs {
        /// How many lines
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Run one worker (the daemon starts its workers so)
    #[command(hide = true)]
    Worker,
}

#[derive(Debug, Subcommand)]
pub(super) enum ProcessCommand {
    /// List the processes in the checkpoint store
    List,
    /// Show a process's state
    Status {
        /// The process
        pid: Uuid,
    },
    /// Pause a process after its running step
    Pause {
        /// The process
        pid: Uuid,
        /// Why (shown in its status)
        #[arg(long)]
        message: Option<String>,
    },
    /// Play a paused process
    Play {
        /// The process
        pid: Uuid,
    },
    /// Kill a process (and its children)
    Kill {
        /// The process
        pid: Uuid,
        /// Why
        #[arg(long)]
        message: Option<String>,
        /// Interrupt its running step rather than wait for the step to end
        #[arg(long)]
        force: bool,
    },
    /// Submit a process to the daemon; print its pid, or wait for its outputs
    Submit {
        /// Its type, as the workers register it
        type_name: String,
        /// Its inputs, a JSON object
        #[arg(long, default_value = "{}", value_name = "JSON")]
        inputs: String,
        /// Wait for it to end, and print its outputs
        #[arg(long)]
        wait: bool,
        /// How long to wait, in seconds
        #[arg(long, default_value_t = 3600.0, value_name = "SECONDS")]
        timeout: f64,
    },
}
