//! [`WorkerLog`]: the workers' stdout and stderr, line by line, in one file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The longest line kept whole; a longer one is written in pieces of this size.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// One append-only file for every worker's output: each line as `<time> [<pid>] | <line>`
/// (circus's layout, UTC), written with one `write` call under a lock, so that lines of two
/// workers never interleave mid-line.
#[derive(Clone)]
pub(crate) struct WorkerLog {
    file: Arc<Mutex<File>>,
}

impl WorkerLog {
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(WorkerLog {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Copies `output` into the log line by line until it ends (the worker exited or closed
    /// it). Runs as a task of its own per stream, so a worker that writes much never holds
    /// up the supervisor, and one that writes nothing costs a parked task.
    pub(crate) async fn copy(self, pid: u32, output: impl AsyncRead + Unpin) {
        let mut reader = BufReader::new(output);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match read_line(&mut reader, &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => self.write(pid, &line),
            }
        }
    }

    fn write(&self, pid: u32, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        let entry = format!("{} [{pid}] | {text}\n", utc_timestamp(SystemTime::now()));
        if let Err(error) = self.file.lock().write_all(entry.as_bytes()) {
            tracing::warn!(%error, "cannot write a worker's output to the log");
        }
    }
}

/// Reads up to a newline, or [`MAX_LINE`] bytes; the number of bytes read (0 at the end).
pub(crate) async fn read_line(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(line.len());
        }
        let room = MAX_LINE - line.len();
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) if end < room => (end + 1, true),
            _ => (available.len().min(room), available.len() >= room),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        if done {
            return Ok(line.len());
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub(crate) fn utc_timestamp(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// The Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(utc_timestamp(leap_day), "2000-02-29 01:02:03");
        let today = UNIX_EPOCH + Duration::from_secs(1_796_063_700);
        assert_eq!(utc_timestamp(today), "2026-11-30 18:35:00");
    }
}
