//! The daemon's command line, for a program to embed (the `cli` feature): `daemon start`,
//! `stop`, `status`, `incr`, `decr`, `restart`, `logs`, and `process list`, `status`,
//! `pause`, `play`, `kill`, `submit`. See [`Cli`].

mod args;
mod exit;
mod pool;
mod processes;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use serde_json::Value;

pub use exit::Exit;

use self::args::{Args, Top};
use self::exit::Failure;
use super::DaemonConfig;
use crate::control::LauncherBuilder;

/// The command line of a daemon's program (AiiDA's `verdi daemon` and `verdi process`): the
/// same binary is the command line, the supervisor and every worker, so the process types
/// that it registers are the ones its workers run.
///
/// | command | what it does |
/// |---|---|
/// | `daemon start [N] [--foreground]` | starts the supervisor with N workers, in the background unless `--foreground`; refuses when no broker answers, or a daemon runs already |
/// | `daemon stop` | workers end their running steps (within the grace period), then exit; returns when every process is gone |
/// | `daemon status` | the supervisor and each worker: pid, CPU, memory, uptime, restarts; a crash loop's backoff and last exit |
/// | `daemon incr [N]`, `decr [N]` | more or fewer workers (the oldest go first) |
/// | `daemon restart` | replaces every worker |
/// | `daemon logs [-n N]` | the end of the workers' log |
/// | `process list` | the processes in the checkpoint store |
/// | `process status PID` | a process's state, from the worker running it, else from the store |
/// | `process pause PID`, `play PID`, `kill PID` | steer a running process |
/// | `process submit TYPE --inputs JSON [--wait]` | saves a process and queues it; prints its pid, or with `--wait` its outputs |
///
/// Every command takes `--config FILE` (see [`DaemonConfig::load`]) and `--json` (a JSON
/// value on stdout instead of text). Errors go to stderr and say what to do; the exit status
/// is an [`Exit`].
///
/// ```no_run
/// use runtime_thread::daemon::cli::Cli;
/// # use runtime_thread::engine::{Command, Persistent, Process, StepContext, StepError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Add { a: i64, b: i64 }
/// # impl Process for Add {
/// #     async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
/// #         Ok(Command::finish())
/// #     }
/// # }
/// # impl Persistent for Add { const TYPE_NAME: &'static str = "Add"; }
///
/// fn main() -> std::process::ExitCode {
///     Cli::new("squares")
///         .about("Squares numbers, in the background")
///         .launcher(|launcher| launcher.process::<Add>())
///         .run()
/// }
/// ```
#[derive(Clone)]
pub struct Cli {
    app: String,
    about: Option<String>,
    launcher: Arc<dyn Fn(LauncherBuilder) -> LauncherBuilder + Send + Sync>,
}

impl Cli {
    /// The command line of the app `app`: the name of its command, of its settings' files and
    /// directories, and of its environment variables (`<APP>_...`).
    pub fn new(app: impl Into<String>) -> Self {
        Cli {
            app: app.into(),
            about: None,
            launcher: Arc::new(|launcher| launcher),
        }
    }

    /// The one-line description that `--help` shows.
    #[must_use]
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// Registers the workers' process types: `register` gets a launcher builder and adds them.
    #[must_use]
    pub fn launcher(
        mut self,
        register: impl Fn(LauncherBuilder) -> LauncherBuilder + Send + Sync + 'static,
    ) -> Self {
        self.launcher = Arc::new(register);
        self
    }

    /// Runs the command in this program's arguments, and returns its exit status.
    pub fn run(&self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// Runs the command in `args` (the first is the program's name).
    pub fn run_from<I, T>(&self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Args::command()
            .name(self.app.clone())
            .bin_name(self.app.clone());
        if let Some(about) = &self.about {
            command = command.about(about.clone());
        }
        let parsed = command
            .try_get_matches_from(args)
            .and_then(|matches| Args::from_arg_matches(&matches));
        let args = match parsed {
            Ok(args) => args,
            Err(error) => {
                let _ = error.print();
                return ExitCode::from(error.exit_code().clamp(0, 255) as u8);
            }
        };
        let out = Out { json: args.json };
        match self.dispatch(args, &out) {
            Ok(()) => Exit::Ok.into(),
            Err(failure) => {
                if out.json {
                    let shown = serde_json::json!({
                        "error": failure.message,
                        "exit": failure.exit as u8,
                    });
                    println!("{shown}");
                }
                eprintln!("error: {}", failure.message);
                failure.exit.into()
            }
        }
    }

    fn dispatch(&self, args: Args, out: &Out) -> Result<(), Failure> {
        let file = args.config.as_deref().map(absolute);
        let config = DaemonConfig::load(&self.app, file.as_deref())?;
        let context = Context {
            cli: self,
            config,
            file,
            out,
        };
        match args.command {
            Top::Daemon(command) => pool::run(&context, command),
            Top::Process(command) => processes::run(&context, command),
        }
    }
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("app", &self.app)
            .field("about", &self.about)
            .finish_non_exhaustive()
    }
}

/// What every command gets.
struct Context<'a> {
    cli: &'a Cli,
    config: DaemonConfig,
    /// The config file named on the command line, for the supervisor and workers to read too.
    file: Option<std::path::PathBuf>,
    out: &'a Out,
}

/// Where a command's result goes: text for people, or one JSON value for scripts.
struct Out {
    json: bool,
}

impl Out {
    /// Prints `text` (made only if shown) or `value`.
    fn show(&self, text: impl FnOnce() -> String, value: Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", text());
        }
    }
}

/// `path` made absolute, since the supervisor and workers read it from elsewhere.
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
