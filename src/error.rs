//! One error type for the whole library. Its [`ErrorKind`] follows containerd's
//! `errdefs` classes; the C ABI gives each kind its stable status code
//! ([`crate::ffi::status`]).

use std::fmt;
use std::io;

/// The class of an error: containerd's `errdefs` classes, plus `Panic` for the
/// C ABI's panic boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    NotImplemented,
    Internal,
    Panic,
}

impl ErrorKind {
    /// containerd's name for the class, used as the message prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::Internal => "internal",
            ErrorKind::Panic => "panic",
        }
    }
}

/// An error with its class and a one-line message that names the thing (key,
/// path, field, option) and the cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        let mut message = message.into();
        // One line, always: multi-line tool output is folded.
        if message.contains('\n') {
            message = message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
        }
        Error { kind, message }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::AlreadyExists, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotImplemented, message)
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// An OS error on `path` while doing `what`; keeps the errno text. A full
    /// disk or a read-only root is `unavailable` (the caller can retry after
    /// fixing the machine); anything else is `internal`.
    pub fn io(what: &str, path: &std::path::Path, err: io::Error) -> Error {
        use crate::sys::Errno;
        let kind = match crate::sys::errno(&err) {
            Some(Errno::NOSPC) | Some(Errno::DQUOT) | Some(Errno::ROFS) => ErrorKind::Unavailable,
            _ => match err.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
        };
        Error::new(kind, format!("{what} {}: {err}", path.display()))
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error {
            kind: self.kind,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

/// Our error carried through an interface that speaks `io::Error` (a
/// `Read` implementation), to come out again with [`uncarry`].
pub(crate) fn carry(e: Error) -> io::Error {
    io::Error::other(e)
}

/// The error [`carry`] put in `e`, if it is one; else `e` itself.
pub(crate) fn uncarry(e: io::Error) -> std::result::Result<Error, io::Error> {
    if !e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return Err(e);
    }
    match e.into_inner().map(|i| i.downcast::<Error>()) {
        Some(Ok(err)) => Ok(*err),
        _ => unreachable!("checked above"),
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        use rusqlite::ffi::ErrorCode;
        let kind = match err.sqlite_error_code() {
            // Another process holds the database past the busy timeout, or the
            // disk is full: retryable conditions of the machine.
            Some(ErrorCode::DatabaseBusy)
            | Some(ErrorCode::DatabaseLocked)
            | Some(ErrorCode::DiskFull)
            | Some(ErrorCode::ReadOnly)
            | Some(ErrorCode::CannotOpen) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, format!("metadata database: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = Error::internal("mkfs.erofs failed:\n  line one\n\nline two\n");
        assert_eq!(e.message(), "mkfs.erofs failed:; line one; line two");
    }

    #[test]
    fn full_disk_is_unavailable() {
        let e = Error::io(
            "write",
            std::path::Path::new("/x"),
            crate::sys::error(crate::sys::Errno::NOSPC),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("/x"), "{}", e.message());
    }
}
