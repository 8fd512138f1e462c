//! Logging: every event goes to `tracing` (for Rust hosts with a subscriber)
//! and, when the host registered one at open, to a per-handle callback (for C,
//! Go and Python hosts). No global or thread-local state is involved, so two
//! handles in one process log to their own hosts.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Instant;

/// Severity of a log record; the numbers are the C ABI's `EROFS_LOG_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn from_i32(v: i32) -> Option<Level> {
        match v {
            1 => Some(Level::Error),
            2 => Some(Level::Warn),
            3 => Some(Level::Info),
            4 => Some(Level::Debug),
            _ => None,
        }
    }
}

/// A host's log sink: called from any thread the library runs on.
pub type LogSink = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// Where a handle's log records go.
#[derive(Clone, Default)]
pub struct Logger {
    sink: Option<LogSink>,
    max: Option<Level>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("sink", &self.sink.is_some())
            .field("max", &self.max)
            .finish()
    }
}

impl Logger {
    /// Records up to `max` severity go to `sink` (besides `tracing`).
    pub fn new(sink: LogSink, max: Level) -> Logger {
        Logger {
            sink: Some(sink),
            max: Some(max),
        }
    }

    /// True when a record of `level` goes anywhere (formatting is skipped otherwise).
    pub fn enabled(&self, level: Level) -> bool {
        self.max.is_some_and(|m| level <= m)
            || match level {
                Level::Error => tracing::enabled!(tracing::Level::ERROR),
                Level::Warn => tracing::enabled!(tracing::Level::WARN),
                Level::Info => tracing::enabled!(tracing::Level::INFO),
                Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            }
    }

    pub fn log(&self, level: Level, message: impl Display) {
        if !self.enabled(level) {
            return;
        }
        let text = message.to_string();
        match level {
            Level::Error => tracing::error!("{text}"),
            Level::Warn => tracing::warn!("{text}"),
            Level::Info => tracing::info!("{text}"),
            Level::Debug => tracing::debug!("{text}"),
        }
        if self.max.is_some_and(|m| level <= m) {
            if let Some(sink) = &self.sink {
                sink(level, &text);
            }
        }
    }

    pub fn warn(&self, message: impl Display) {
        self.log(Level::Warn, message)
    }

    /// Starts an operation: a `tracing` span, closed by [`Op::finish`] with a
    /// debug record of its duration and outcome.
    pub fn op<'a>(&'a self, name: &'static str, key: &'a str) -> Op<'a> {
        let span = tracing::debug_span!("erofs_snapshotter", op = name, key = key);
        Op {
            logger: self,
            name,
            key,
            start: Instant::now(),
            _span: span.entered(),
        }
    }
}

/// A running operation; see [`Logger::op`].
pub struct Op<'a> {
    logger: &'a Logger,
    name: &'static str,
    key: &'a str,
    start: Instant,
    _span: tracing::span::EnteredSpan,
}

impl Op<'_> {
    /// Logs the operation's duration and outcome and passes the result through.
    pub fn finish<T>(self, r: crate::Result<T>) -> crate::Result<T> {
        if self.logger.enabled(Level::Debug) {
            let elapsed = self.start.elapsed();
            let (name, key) = (self.name, self.key);
            match &r {
                Ok(_) => self.logger.log(
                    Level::Debug,
                    format_args!("{name} {key:?}: ok in {elapsed:?}"),
                ),
                Err(e) => self.logger.log(
                    Level::Debug,
                    format_args!("{name} {key:?}: {e} in {elapsed:?}"),
                ),
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn sink_gets_records_up_to_its_level() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let logger = Logger::new(
            Arc::new(move |l, m: &str| g.lock().unwrap().push((l, m.to_string()))),
            Level::Warn,
        );
        logger.warn("w");
        logger.log(Level::Debug, "d");
        logger.log(Level::Error, "e");
        let got = got.lock().unwrap();
        assert_eq!(
            *got,
            vec![
                (Level::Warn, "w".to_string()),
                (Level::Error, "e".to_string())
            ]
        );
    }

    #[test]
    fn op_reports_outcome() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let logger = Logger::new(
            Arc::new(move |_, m: &str| g.lock().unwrap().push(m.to_string())),
            Level::Debug,
        );
        let r: crate::Result<()> = logger.op("stat", "k").finish(Err(crate::Error::not_found(
            "snapshot \"k\" does not exist",
        )));
        assert!(r.is_err());
        let got = got.lock().unwrap();
        assert!(
            got[0].starts_with("stat \"k\": not found: snapshot"),
            "{got:?}"
        );
    }
}
