//! Logging: to the console, and into a bounded in-memory buffer that
//! `log.collect_system_logs` ships to the conductor (a ramdisk has no
//! journal worth the name).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use std::path::Path;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::consoles::Console;
use crate::logfile::{self, LogFile, AGENT_LOG};

/// Keep at most this much log text; the oldest lines go first.
const LOG_BUFFER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Default)]
pub struct LogBuffer {
    inner: Arc<Mutex<VecDeque<u8>>>,
}

impl LogBuffer {
    pub fn snapshot(&self) -> Vec<u8> {
        match self.inner.lock() {
            Ok(buf) => buf.iter().copied().collect(),
            Err(poisoned) => poisoned.into_inner().iter().copied().collect(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = match self.inner.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        buf.extend(bytes);
        let excess = buf.len().saturating_sub(LOG_BUFFER_BYTES);
        buf.drain(..excess);
    }
}

/// Where each formatted event goes besides the buffer.
#[derive(Clone, Default)]
struct Sinks {
    /// stderr, or every console with `ipa-debug` in the ramdisk.
    console: Console,
    /// The ramdisk's log file, for the debug shell.
    file: Option<LogFile>,
}

/// A writer that tees each formatted event to the console, the log file
/// and the buffer.
pub struct TeeWriter {
    buffer: LogBuffer,
    sinks: Sinks,
}

impl Write for TeeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.append(data);
        // The console may be gone (closed serial port); the buffer still has it.
        self.sinks.console.write_line(data);
        if let Some(f) = &self.sinks.file {
            f.append(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

struct MakeTee {
    buffer: LogBuffer,
    sinks: Sinks,
}

impl<'a> MakeWriter<'a> for MakeTee {
    type Writer = TeeWriter;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter {
            buffer: self.buffer.clone(),
            sinks: self.sinks.clone(),
        }
    }
}

/// Install the global subscriber; returns the buffer for log collection.
pub fn init(debug: bool) -> LogBuffer {
    let buffer = LogBuffer::default();
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("FERRITE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{default},hyper=info,rustls=info,reqwest=info"))
    });
    // Under ferrite's init: the log file, and with ipa-debug every console.
    let sinks = if crate::power::supervised_by_init() {
        Sinks {
            console: Console::choose(debug),
            file: LogFile::create(Path::new(AGENT_LOG), logfile::MAX_BYTES).ok(),
        }
    } else {
        Sinks::default()
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(MakeTee {
            buffer: buffer.clone(),
            sinks,
        })
        .try_init();
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_bounded_and_keeps_the_newest() {
        let buf = LogBuffer::default();
        let line = vec![b'x'; 1024];
        for _ in 0..(LOG_BUFFER_BYTES / 1024 + 10) {
            buf.append(&line);
        }
        buf.append(b"last");
        let snap = buf.snapshot();
        assert_eq!(snap.len(), LOG_BUFFER_BYTES);
        assert!(snap.ends_with(b"last"));
    }
}
