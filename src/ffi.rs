//! The C ABI: a thin shell over [`crate::Snapshotter`] that converts
//! pointers, strings and JSON and maps errors to stable status codes. The
//! core answers in types; the JSON of infos is made in `ffi/wire.rs`.
//!
//! Conventions (every function follows them):
//! - Every function returns an `int32_t` status: `EROFS_OK` (0) or one of the
//!   `EROFS_ERR_*` codes, which never change their numbers.
//! - Out-parameters are written only on success; `*err` only on failure, with a
//!   one-line message. `err` and every out-parameter may be NULL when the
//!   caller does not want them.
//! - Every string the library returns is owned by the caller and must be
//!   released with `erofs_snapshotter_string_free` (and nothing else).
//! - Input pointers are NULL-checked (a NULL where a value is required is
//!   `EROFS_ERR_INVALID_ARGUMENT`); strings must be UTF-8.
//! - A panic inside the library never unwinds into the caller: it becomes
//!   `EROFS_ERR_PANIC` with the panic message.
//! - There is no thread-local error state; a handle may be used from many
//!   threads at once.

#![allow(non_camel_case_types)]
// These are C entry points: their pointer contracts are documented in the
// header, and every pointer is NULL-checked before it is dereferenced.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::differ::{Applied, ApplyOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::info::{InfoUpdate, Labels};
use crate::logging::{Level, Logger};
use crate::mounts::Mount;
use crate::{Config, Snapshotter};

/// cbindgen:ignore
mod wire;
pub use wire::InfoJson;

/// Success.
pub const EROFS_OK: i32 = 0;
/// A malformed argument: NULL, not UTF-8, bad JSON, an empty key, a bad label or filter.
pub const EROFS_ERR_INVALID_ARGUMENT: i32 = 1;
/// The snapshot (or parent) does not exist.
pub const EROFS_ERR_NOT_FOUND: i32 = 2;
/// A snapshot with that key or name already exists.
pub const EROFS_ERR_ALREADY_EXISTS: i32 = 3;
/// The snapshot is not in a state that allows the operation (e.g. removing a parent, committing a view).
pub const EROFS_ERR_FAILED_PRECONDITION: i32 = 4;
/// The machine lacks something (kernel feature, mkfs.erofs, disk space) or the database is busy.
pub const EROFS_ERR_UNAVAILABLE: i32 = 5;
/// The operation is not implemented.
pub const EROFS_ERR_NOT_IMPLEMENTED: i32 = 6;
/// Anything else; the message says what.
pub const EROFS_ERR_INTERNAL: i32 = 7;
/// A bug in the library was caught at the boundary; the message carries the panic.
pub const EROFS_ERR_PANIC: i32 = 8;

/// Log levels for `erofs_snapshotter_open_with_logger`.
pub const EROFS_LOG_ERROR: i32 = 1;
pub const EROFS_LOG_WARN: i32 = 2;
pub const EROFS_LOG_INFO: i32 = 3;
pub const EROFS_LOG_DEBUG: i32 = 4;

/// Flag for `erofs_snapshotter_unmount_all`: detach lazily (MNT_DETACH).
pub const EROFS_UNMOUNT_DETACH: u32 = 1;

/// The status code of an error of `kind`: the one place kinds get numbers
/// (the ctl tool exits with it too).
pub fn status(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::InvalidArgument => EROFS_ERR_INVALID_ARGUMENT,
        ErrorKind::NotFound => EROFS_ERR_NOT_FOUND,
        ErrorKind::AlreadyExists => EROFS_ERR_ALREADY_EXISTS,
        ErrorKind::FailedPrecondition => EROFS_ERR_FAILED_PRECONDITION,
        ErrorKind::Unavailable => EROFS_ERR_UNAVAILABLE,
        ErrorKind::NotImplemented => EROFS_ERR_NOT_IMPLEMENTED,
        ErrorKind::Internal => EROFS_ERR_INTERNAL,
        ErrorKind::Panic => EROFS_ERR_PANIC,
    }
}

/// An open snapshotter. Opaque; create with `erofs_snapshotter_open`, destroy
/// with `erofs_snapshotter_close`.
pub struct erofs_snapshotter {
    inner: Snapshotter,
    /// The size of the last walk's JSON, to size the next one.
    json: wire::WalkJson,
}

impl erofs_snapshotter {
    /// Hands a snapshotter opened from Rust to C code; the C side owns it and
    /// must close it with `erofs_snapshotter_close`.
    pub fn into_raw(inner: Snapshotter) -> *mut erofs_snapshotter {
        Box::into_raw(Box::new(erofs_snapshotter {
            inner,
            json: wire::WalkJson::default(),
        }))
    }
}

/// A host's log function: `level` is one of `EROFS_LOG_*`, `message` is a
/// NUL-terminated line valid only during the call.
pub type erofs_snapshotter_log_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: i32, message: *const c_char)>;

/// The host's user data pointer; the host promises it may be used from any thread.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: documented contract of erofs_snapshotter_open_with_logger.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

// ---- boundary helpers ------------------------------------------------------

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Strings handed to callers and not yet given back to
/// `erofs_snapshotter_string_free`: lets bindings test that they free every one.
static OUTSTANDING: AtomicI64 = AtomicI64::new(0);

/// Bytes before a string handed out: its length, so that the free needs
/// no strlen.
const STRING_HEADER: usize = std::mem::size_of::<usize>();

/// A string for the caller, written in place: the allocation that is
/// handed out is the one written into, header and NUL included, so a walk's
/// JSON (50 MB at 100,000 snapshots) is never copied. Its bytes must hold no
/// NUL.
pub(crate) struct CText(Vec<u8>);

impl CText {
    /// Room for about `capacity` bytes of text.
    pub fn with_capacity(capacity: usize) -> CText {
        let mut v = Vec::with_capacity(STRING_HEADER + capacity + 1);
        v.resize(STRING_HEADER, 0);
        CText(v)
    }

    /// The text, to append to.
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Hands the text to the caller, freed by `erofs_snapshotter_string_free`.
    fn into_c(self) -> *mut c_char {
        let mut v = self.0;
        let len = v.len() - STRING_HEADER;
        debug_assert!(!v[STRING_HEADER..].contains(&0));
        v[..STRING_HEADER].copy_from_slice(&len.to_ne_bytes());
        v.push(0);
        // Exactly `STRING_HEADER + len + 1` bytes (a shrink in place, or
        // none when the capacity was right): the size the free gives back.
        let base = Box::into_raw(v.into_boxed_slice()).cast::<u8>();
        OUTSTANDING.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the allocation is longer than the header.
        unsafe { base.add(STRING_HEADER).cast() }
    }
}

/// Hands the caller a NUL-terminated copy of `bytes`, which contain no NUL:
/// one allocation and one copy, freed by `erofs_snapshotter_string_free`.
fn to_c_bytes(bytes: &[u8]) -> *mut c_char {
    let mut t = CText::with_capacity(bytes.len());
    t.bytes().extend_from_slice(bytes);
    t.into_c()
}

/// A message for the caller: NUL bytes, impossible in our messages, are
/// replaced rather than truncating it.
fn to_c(s: &str) -> *mut c_char {
    if s.as_bytes().contains(&0) {
        to_c_bytes(s.replace('\0', "?").as_bytes())
    } else {
        to_c_bytes(s.as_bytes())
    }
}

/// JSON for the caller. serde_json escapes every control character, so its
/// output never holds a NUL byte.
fn to_c_json(json: &str) -> *mut c_char {
    to_c_bytes(json.as_bytes())
}

/// NUL bytes, impossible in our messages, are replaced rather than
/// truncating the string.
fn c_string(s: String) -> CString {
    match CString::new(s) {
        Ok(c) => c,
        Err(e) => {
            let bytes: Vec<u8> = e
                .into_vec()
                .into_iter()
                .map(|b| if b == 0 { b'?' } else { b })
                .collect();
            CString::new(bytes).unwrap_or_default()
        }
    }
}

/// Runs `f` inside the panic boundary; writes `*err` on failure.
fn boundary(err: *mut *mut c_char, f: impl FnOnce() -> Result<()>) -> i32 {
    let (code, message) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return EROFS_OK,
        Ok(Err(e)) => (status(e.kind()), e.to_string()),
        Err(p) => (
            status(ErrorKind::Panic),
            format!("panic: {}", panic_message(p.as_ref())),
        ),
    };
    if !err.is_null() {
        // SAFETY: the caller passes NULL or a pointer to writable storage.
        unsafe { *err = to_c(&message) };
    }
    code
}

/// Writes `value` to `out` if the caller wants it.
fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: the caller passes NULL or a pointer to writable storage.
        unsafe { out.write(value) };
    }
}

fn put_json<T: serde::Serialize>(out: *mut *mut c_char, value: &T) -> Result<()> {
    if out.is_null() {
        return Ok(());
    }
    put(out, to_c_json(&wire::encode(value)?));
    Ok(())
}

fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    opt_str_arg(p, name)?.ok_or_else(|| Error::invalid_argument(format!("{name} is NULL")))
}

fn opt_str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller passes a NUL-terminated string valid for the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(Some)
        .map_err(|e| Error::invalid_argument(format!("{name} is not valid UTF-8: {e}")))
}

/// An optional JSON argument: NULL and JSON `null` (what Go's encoding/json
/// makes of a nil map or slice) both mean "none". Errors name the field.
fn json_arg<T: serde::de::DeserializeOwned + Default>(p: *const c_char, name: &str) -> Result<T> {
    match opt_str_arg(p, name)? {
        None => Ok(T::default()),
        Some(s) => crate::json::decode::<Option<T>>(s)
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::invalid_argument(e.message(name, None))),
    }
}

/// An optional JSON object of labels (as [`json_arg`]); errors name the label.
fn labels_arg(p: *const c_char, name: &str) -> Result<Labels> {
    match opt_str_arg(p, name)? {
        None => Ok(Labels::default()),
        Some(s) => crate::json::decode::<Option<Labels>>(s)
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::invalid_argument(e.message(name, Some(&[])))),
    }
}

/// A required JSON array of mounts.
fn mounts_arg(p: *const c_char) -> Result<Vec<Mount>> {
    crate::json::decode(str_arg(p, "mounts_json")?)
        .map_err(|e| Error::invalid_argument(e.message("mounts_json", None)))
}

fn this<'a>(s: *const erofs_snapshotter) -> Result<&'a erofs_snapshotter> {
    if s.is_null() {
        return Err(Error::invalid_argument("snapshotter handle is NULL"));
    }
    // SAFETY: a non-NULL handle comes from erofs_snapshotter_open and is not closed yet.
    Ok(unsafe { &*s })
}

fn handle<'a>(s: *const erofs_snapshotter) -> Result<&'a Snapshotter> {
    this(s).map(|h| &h.inner)
}

fn open(config_json: *const c_char, log: Logger, out: *mut *mut erofs_snapshotter) -> Result<()> {
    let json = str_arg(config_json, "config_json")?;
    let config = Config::from_json(json)?;
    let s = Snapshotter::open_with_logger(config, log)?;
    if out.is_null() {
        // Nobody would own the handle: close it right away.
        return Ok(());
    }
    put(out, erofs_snapshotter::into_raw(s));
    Ok(())
}

type CreateFn = fn(&Snapshotter, &str, &str, &Labels) -> Result<Vec<Mount>>;

/// The shared body of prepare and view.
fn create(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    parent: *const c_char,
    labels_json: *const c_char,
    mounts_json: *mut *mut c_char,
    err: *mut *mut c_char,
    op: CreateFn,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let key = str_arg(key, "key")?;
        let parent = opt_str_arg(parent, "parent")?.unwrap_or("");
        let labels = labels_arg(labels_json, "labels_json")?;
        let mounts = op(s, key, parent, &labels)?;
        put_json(mounts_json, &mounts)
    })
}

// ---- exports ---------------------------------------------------------------

/// Opens the snapshotter described by `config_json` (see the README's
/// configuration reference), creating its root if needed.
///
/// On success `*out` receives a handle that the caller owns and must release
/// with `erofs_snapshotter_close`. Checks the kernel (erofs, overlay),
/// `mkfs.erofs` (1.8 or newer), the root's d_type support and, with
/// `enable_fsverity`, fs-verity support; each missing piece is
/// `EROFS_ERR_UNAVAILABLE` with what to install or change. Unknown or
/// malformed fields are `EROFS_ERR_INVALID_ARGUMENT` naming the field.
/// Thread safety: may be called from any thread; several handles (in one or
/// several processes) may share one root.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_open(
    config_json: *const c_char,
    out: *mut *mut erofs_snapshotter,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || open(config_json, Logger::default(), out))
}

/// Like `erofs_snapshotter_open`, and the handle's log records of severity
/// up to `max_level` (`EROFS_LOG_*`) go to `log_fn(user_data, level, message)`:
/// warnings a host must see (e.g. a failed IMMUTABLE_FL, a cleanup that could
/// not finish) and, at `EROFS_LOG_DEBUG`, one record per operation with its
/// duration. `log_fn` may be called from any thread, including a background
/// thread of the library, until `erofs_snapshotter_close` returns; it must
/// not call back into this handle. `user_data` is passed through untouched.
/// A NULL `log_fn` is the same as `erofs_snapshotter_open`.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_open_with_logger(
    config_json: *const c_char,
    log_fn: erofs_snapshotter_log_fn,
    user_data: *mut c_void,
    max_level: i32,
    out: *mut *mut erofs_snapshotter,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let logger = match log_fn {
            None => Logger::default(),
            Some(f) => {
                let max = Level::from_i32(max_level).ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "max_level {max_level} is not one of EROFS_LOG_ERROR..EROFS_LOG_DEBUG (1..4)"
                    ))
                })?;
                let ud = UserData(user_data);
                Logger::new(
                    Arc::new(move |level: Level, msg: &str| {
                        let ud = ud;
                        let c = c_string(msg.to_string());
                        // SAFETY: the host's function, called as documented;
                        // the message lives until it returns.
                        unsafe { f(ud.0, level as i32, c.as_ptr()) };
                    }),
                    max,
                )
            }
        };
        open(config_json, logger, out)
    })
}

/// Closes a handle: waits for background deletion to finish and, if this
/// was the last open handle on the root in any process, detaches the layer
/// mounts (lazily: overlays already mounted keep working). NULL does nothing.
/// The handle must not be used afterwards, nor concurrently with this call.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_close(s: *mut erofs_snapshotter) {
    if s.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the handle came from erofs_snapshotter_open and is closed once.
        drop(unsafe { Box::from_raw(s) });
    }));
}

/// Creates an active snapshot `key` on top of committed snapshot `parent`
/// (NULL or "" for none), with `labels_json` (a JSON object of strings, or
/// NULL). On success `*mounts_json` receives the JSON array of mounts
/// (`[{"type", "source", "options": [...]}]`) to write into it.
/// Errors: `EROFS_ERR_ALREADY_EXISTS` (key taken), `EROFS_ERR_NOT_FOUND`
/// (parent missing), `EROFS_ERR_INVALID_ARGUMENT` (parent not committed, empty
/// key, bad labels). Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_prepare(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    parent: *const c_char,
    labels_json: *const c_char,
    mounts_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    create(
        s,
        key,
        parent,
        labels_json,
        mounts_json,
        err,
        Snapshotter::prepare,
    )
}

/// Creates a read-only view `key` of committed snapshot `parent` (NULL or ""
/// for an empty one); same arguments and errors as `erofs_snapshotter_prepare`.
/// A view of exactly one layer is that layer's EROFS image (`"type": "erofs"`).
#[no_mangle]
pub extern "C" fn erofs_snapshotter_view(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    parent: *const c_char,
    labels_json: *const c_char,
    mounts_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    create(
        s,
        key,
        parent,
        labels_json,
        mounts_json,
        err,
        Snapshotter::view,
    )
}

/// Commits active snapshot `key` as committed snapshot `name` with
/// `labels_json` (replacing its labels, as containerd does). As in
/// containerd's contract, the caller unmounts the snapshot first (not
/// checked: writes made through a mount left in place are lost). Converts the
/// upper dir with mkfs.erofs outside any lock other snapshots need, or uses
/// the layer `erofs_snapshotter_apply` wrote. Errors:
/// `EROFS_ERR_ALREADY_EXISTS` (name taken), `EROFS_ERR_NOT_FOUND` (no such
/// key), `EROFS_ERR_FAILED_PRECONDITION` (key is a view or committed),
/// `EROFS_ERR_UNAVAILABLE` (disk full),
/// `EROFS_ERR_INVALID_ARGUMENT` (mkfs.erofs rejected `mkfs_options`). On any
/// error the active snapshot is left as it was. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_commit(
    s: *mut erofs_snapshotter,
    name: *const c_char,
    key: *const c_char,
    labels_json: *const c_char,
    err: *mut *mut c_char,
) -> i32 {
    erofs_snapshotter_commit_with_parent(s, name, key, std::ptr::null(), labels_json, err)
}

/// `erofs_snapshotter_commit` with a parent (containerd's
/// `snapshots.WithParent`): an active snapshot prepared without a parent is
/// committed on top of committed snapshot `parent`, and from then on its
/// chain (and so the mounts of what is created on it) is `parent`'s. This is
/// what containerd's parallel unpack does: each layer is prepared and applied
/// with no parent, then committed in order onto the one below. `parent` NULL,
/// "" or the parent `key` was prepared on changes nothing. Errors as for
/// `erofs_snapshotter_commit`, and: `EROFS_ERR_INVALID_ARGUMENT` (`key` has
/// another parent already), `EROFS_ERR_NOT_FOUND` (no snapshot `parent`),
/// `EROFS_ERR_FAILED_PRECONDITION` (`parent` is not committed). Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_commit_with_parent(
    s: *mut erofs_snapshotter,
    name: *const c_char,
    key: *const c_char,
    parent: *const c_char,
    labels_json: *const c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let name = str_arg(name, "name")?;
        let key = str_arg(key, "key")?;
        let parent = opt_str_arg(parent, "parent")?.unwrap_or("");
        let labels = labels_arg(labels_json, "labels_json")?;
        s.commit_with_parent(name, key, parent, &labels)
    })
}

/// The mounts of active snapshot or view `key`, as `erofs_snapshotter_prepare`
/// returns them. `EROFS_ERR_FAILED_PRECONDITION` for a committed snapshot.
/// On the path of every container start: no system call per layer once the
/// layers are mounted. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_mounts(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    mounts_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let key = str_arg(key, "key")?;
        let mounts = s.mounts(key)?;
        put_json(mounts_json, &mounts)
    })
}

/// Removes snapshot `key` (unmounting its layer). `EROFS_ERR_FAILED_PRECONDITION`
/// while it has children; `EROFS_ERR_NOT_FOUND` when it does not exist. Its
/// files are deleted in the background. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_remove(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        s.remove(str_arg(key, "key")?)
    })
}

/// Information about snapshot `key`: `*info_json` receives
/// `{"kind": "active"|"view"|"committed", "name", "parent", "labels": {},
/// "created", "updated", "created_ns", "updated_ns"}`. `created` and
/// `updated` are RFC 3339 UTC timestamps with nine fraction digits;
/// `created_ns` and `updated_ns` are the same instants as integers,
/// nanoseconds since the Unix epoch (they fit an int64_t): read those
/// rather than parse dates. Served from memory while no process has written
/// to the root. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_stat(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    info_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let h = this(s)?;
        let key = str_arg(key, "key")?;
        let entry = h.inner.stat_entry(key)?;
        if !info_json.is_null() {
            let json = entry
                .text
                .get_or_init(|| wire::info_ref(entry.row.info_ref()).into());
            put(info_json, to_c_json(json));
        }
        Ok(())
    })
}

/// Updates the labels of the snapshot named in `info_json`
/// (`{"name": ..., "labels": {...}}`; other fields are ignored) following
/// `fieldpaths_json` (a JSON array, or NULL): none or `"labels"` replaces all
/// labels, `"labels.<key>"` sets or removes one; any other path is
/// `EROFS_ERR_INVALID_ARGUMENT`. `*info_json_out` receives the updated info,
/// as `erofs_snapshotter_stat` writes it (with `created_ns` and
/// `updated_ns`). Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_update(
    s: *mut erofs_snapshotter,
    info_json: *const c_char,
    fieldpaths_json: *const c_char,
    info_json_out: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let text = str_arg(info_json, "info_json")?;
        let update: InfoUpdate = crate::json::decode(text)
            .map_err(|e| Error::invalid_argument(e.message("info_json", Some(&["labels"]))))?;
        let fieldpaths: Vec<String> = json_arg(fieldpaths_json, "fieldpaths_json")?;
        let info = s.update(&update, &fieldpaths)?;
        put_json(info_json_out, &InfoJson::from(&info))
    })
}

/// Disk usage of snapshot `key`: bytes and inodes of the upper dir of an
/// active snapshot (walked now), or as recorded at commit. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_usage(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    size: *mut i64,
    inodes: *mut i64,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let u = s.usage(str_arg(key, "key")?)?;
        put(size, u.size);
        put(inodes, u.inodes);
        Ok(())
    })
}

/// Puts the layer of committed snapshot `key` into the layer content cache
/// directory `dir` (what `layer_content_caches` names; an absolute path),
/// under the diffID of its `containerd.io/snapshot/diff-id` label (which
/// containerd's unpacker sets), so roots using that cache convert it no
/// more. The file is written whole, flushed and renamed into place; one
/// already there that passes the checks is kept. `*path_out` (if not NULL)
/// receives the file's path, freed with `erofs_snapshotter_string_free`.
/// Errors: `EROFS_ERR_NOT_FOUND` (no such key),
/// `EROFS_ERR_FAILED_PRECONDITION` (not committed, no diff-id label, or the
/// blob is not what its commit recorded), `EROFS_ERR_INVALID_ARGUMENT`
/// (`dir` relative, the label not a digest). Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_export_layer(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    dir: *const c_char,
    path_out: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let key = str_arg(key, "key")?;
        let dir = str_arg(dir, "dir")?;
        let path = s.export_layer(key, std::path::Path::new(dir))?;
        if !path_out.is_null() {
            put(path_out, to_c(&path.to_string_lossy()));
        }
        Ok(())
    })
}

/// Every snapshot matching any of `filters_json` (a JSON array of containerd
/// filter expressions such as `"kind==active,labels.\"a\"==b"`, or NULL for
/// all); `*infos_json` receives a JSON array of infos ordered by name, each
/// as `erofs_snapshotter_stat` writes it (with `created_ns` and
/// `updated_ns`). A malformed filter is `EROFS_ERR_INVALID_ARGUMENT`. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_walk(
    s: *mut erofs_snapshotter,
    filters_json: *const c_char,
    infos_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let h = this(s)?;
        let filters: Vec<String> = json_arg(filters_json, "filters_json")?;
        let infos = h.inner.walk_shared(&filters)?;
        if !infos_json.is_null() {
            put(infos_json, h.json.infos(&infos).into_c());
        }
        Ok(())
    })
}

/// Deletes what no snapshot owns (directories of removed or abandoned
/// snapshots, unfinished blobs, the trash), never a directory that a
/// concurrent prepare is creating; then checks every committed layer as
/// `erofs_snapshotter_check` does. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_cleanup(
    s: *mut erofs_snapshotter,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || handle(s)?.cleanup())
}

/// Writes to `*caps_json` a JSON array of the capabilities a containerd
/// plugin of this snapshotter advertises (containerd's names): `"rebase"`
/// (commit may rebase a snapshot prepared without a parent: parallel
/// unpack), `"only-remap-ids"` (user namespaces only through ID-mapped
/// layers, never a chown), and `"remap-ids"` when this kernel mounts EROFS
/// layers and overlayfs through ID-mapped mounts (tried once per process).
/// With it, a snapshot labelled `containerd.io/snapshot/uidmapping` and
/// `.../gidmapping` (`inside:outside:count[,...]`) has an upper dir owned by
/// the mapped root and mounts carrying `uidmap=`/`gidmap=` options, which
/// `erofs_snapshotter_mount_all` (or containerd) makes into ID-mapped
/// mounts. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_capabilities(
    s: *mut erofs_snapshotter,
    caps_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let caps = handle(s)?.capabilities();
        put_json(caps_json, &caps)
    })
}

/// Checks the blob of every committed layer against what its commit
/// recorded (length; fs-verity digest where recorded) and writes to
/// `*keys_json` (when not NULL) a JSON array of the keys of every lost
/// layer, in key order: found now (each logged as a warning naming it) or
/// before and not yet repaired. A lost layer is never mounted: a prepare or
/// view whose parent chain holds one is `EROFS_ERR_FAILED_PRECONDITION`,
/// naming it, until `erofs_snapshotter_repair` makes it again. The first
/// open after each boot checks the layers not yet known to be on disk (the
/// only ones a power cut can take), cleanup all of them. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_check(
    s: *mut erofs_snapshotter,
    keys_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let lost = handle(s)?.check()?;
        put_json(keys_json, &lost)
    })
}

/// Makes lost layer `key` (see `erofs_snapshotter_check`) again from its
/// OCI layer, read as `erofs_snapshotter_apply` reads one (`fd` or `path`,
/// `options_json`): converted on the layer's parent, checked against the
/// diffID its commit recorded (label `containerd.io/snapshot/diff-id`) when
/// there is one, sealed as a commit seals a layer, flushed, and put in place
/// of the lost blob; the snapshot keeps its key, labels and children.
/// `*result_json` as for apply. Errors: `EROFS_ERR_FAILED_PRECONDITION`
/// (not a lost committed layer), `EROFS_ERR_INVALID_ARGUMENT` (another
/// layer than the one committed, or bad data as for apply),
/// `EROFS_ERR_NOT_FOUND`. On failure the layer stays lost. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_repair(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    fd: i32,
    path: *const c_char,
    options_json: *const c_char,
    result_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        layer_call(
            s,
            key,
            fd,
            path,
            options_json,
            result_json,
            Snapshotter::repair,
        )
    })
}

/// The body of apply and repair: `call` on key `key` with the layer of `fd`
/// or `path` and `options_json`; its result into `*result_json`.
fn layer_call(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    fd: i32,
    path: *const c_char,
    options_json: *const c_char,
    result_json: *mut *mut c_char,
    call: fn(&Snapshotter, &str, &mut (dyn std::io::Read + Send), &ApplyOptions) -> Result<Applied>,
) -> Result<()> {
    let s = handle(s)?;
    let key = str_arg(key, "key")?;
    let opts: ApplyOptions = json_arg(options_json, "options_json")?;
    let mut source = layer_source(fd, path)?;
    let applied = call(s, key, &mut source, &opts)?;
    put_json(result_json, &applied)
}

/// The layer source of an apply: a descriptor the caller keeps (duplicated,
/// so the caller's stays open and its offset is where reading starts) or a path.
fn layer_source(fd: i32, path: *const c_char) -> Result<std::fs::File> {
    let path = opt_str_arg(path, "path")?;
    match (fd >= 0, path) {
        (true, Some(_)) => Err(Error::invalid_argument("give either fd or path, not both")),
        (false, None) => Err(Error::invalid_argument("give fd (>= 0) or path")),
        (true, None) => crate::sys::fs::dup_cloexec(fd)
            .map(std::fs::File::from)
            .map_err(|e| Error::invalid_argument(format!("fd {fd}: {e}"))),
        (false, Some(p)) => {
            std::fs::File::open(p).map_err(|e| Error::io("open layer", Path::new(p), e))
        }
    }
}

/// Applies an OCI image layer to active snapshot `key`: the layer is read
/// from `fd` (when >= 0; the library reads from its current offset and does
/// not close it) or from the file `path`, decompressed (gzip, zstd) and
/// converted straight into the snapshot's `layer.erofs` by the built-in EROFS
/// writer (by `mkfs.erofs --tar` for `mkfs_options` only it implements),
/// which the next `erofs_snapshotter_commit` uses as is. `options_json`
/// (or NULL): `{"media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
/// "digest": "sha256:..."}` — the layer descriptor's media type (empty or
/// absent: a tar, compression detected; `application/vnd.erofs.layer.v1` is a
/// native EROFS blob, copied) and digest (verified; the image UUID is
/// derived from it). `*result_json` receives the uncompressed layer's
/// descriptor `{"digest": "sha256:<diffID>", "size": N, "media_type": ...}`.
/// Errors: `EROFS_ERR_INVALID_ARGUMENT` (corrupt or truncated data, wrong
/// compression, digest mismatch, a media type `erofs_snapshotter_media_types`
/// does not list), `EROFS_ERR_FAILED_PRECONDITION`
/// (not an active snapshot), `EROFS_ERR_NOT_FOUND`, `EROFS_ERR_NOT_IMPLEMENTED`
/// (a layer mkfs.erofs 1.8.6 would write wrongly, on its path), and
/// mkfs.erofs failures as for commit. On any error the snapshot is left as it was and no partial
/// `layer.erofs` exists. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_apply(
    s: *mut erofs_snapshotter,
    key: *const c_char,
    fd: i32,
    path: *const c_char,
    options_json: *const c_char,
    result_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        layer_call(
            s,
            key,
            fd,
            path,
            options_json,
            result_json,
            Snapshotter::apply,
        )
    })
}

/// Like `erofs_snapshotter_apply`, for the active snapshot that
/// `mounts_json` (as prepare returned it) belongs to. Mounts that are not an
/// active snapshot of this snapshotter are `EROFS_ERR_NOT_IMPLEMENTED`, so a
/// caller (containerd) moves on to its next differ; read-only mounts are
/// `EROFS_ERR_FAILED_PRECONDITION`. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_apply_mounts(
    s: *mut erofs_snapshotter,
    mounts_json: *const c_char,
    fd: i32,
    path: *const c_char,
    options_json: *const c_char,
    result_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let s = handle(s)?;
        let mounts = mounts_arg(mounts_json)?;
        let opts: ApplyOptions = json_arg(options_json, "options_json")?;
        let mut source = layer_source(fd, path)?;
        let applied = s.apply_mounts(&mounts, &mut source, &opts)?;
        put_json(result_json, &applied)
    })
}

/// The layer media types `erofs_snapshotter_apply` reads itself:
/// `*media_types_json` receives a JSON array of strings, OCI and Docker layer
/// tars (plain, gzip, zstd, nondistributable ones included) and native EROFS
/// layers (`application/vnd.erofs.layer.v1`, plain or `+zstd`). An empty
/// media type (a tar, compression detected) is accepted too, and not listed;
/// any other is `EROFS_ERR_INVALID_ARGUMENT` in apply, so a host should
/// hand such layers (e.g. encrypted ones) to another differ. The string is
/// the caller's, freed with `erofs_snapshotter_string_free`. Needs no handle;
/// thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_media_types(
    media_types_json: *mut *mut c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        put_json(
            media_types_json,
            &crate::differ::media_types().collect::<Vec<_>>(),
        )
    })
}

/// Mounts `mounts_json` (a JSON array as returned by prepare, view or mounts)
/// on the existing directory `target`, in order; on failure nothing stays
/// mounted. EROFS images are mounted file-backed, or through a loop device
/// where the kernel needs one; overlays with more lower directories than one
/// `mount(2)` call takes use the new mount API. A mount with containerd's
/// `uidmap=` and `gidmap=` options (a snapshot with ID-mapping labels; see
/// `erofs_snapshotter_capabilities`) is made through ID-mapped mounts as
/// containerd makes it: each lower dir of an overlay through an ID-mapped
/// copy, any other mount with an ID-mapped copy on top. Needs CAP_SYS_ADMIN.
/// Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_mount_all(
    mounts_json: *const c_char,
    target: *const c_char,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let mounts = mounts_arg(mounts_json)?;
        let target = str_arg(target, "target")?;
        crate::mounts::mount_all(&mounts, Path::new(target))
    })
}

/// Unmounts everything mounted on `target` (stacked mounts included).
/// `flags` may be 0 or `EROFS_UNMOUNT_DETACH` (lazy). Not being a mount point
/// is success. Thread safe.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_unmount_all(
    target: *const c_char,
    flags: u32,
    err: *mut *mut c_char,
) -> i32 {
    boundary(err, || {
        let target = str_arg(target, "target")?;
        if flags & !EROFS_UNMOUNT_DETACH != 0 {
            return Err(Error::invalid_argument(format!(
                "flags: unknown bits {flags:#x}"
            )));
        }
        crate::mounts::unmount_all(Path::new(target), flags & EROFS_UNMOUNT_DETACH != 0).map(drop)
    })
}

/// Frees a string returned by this library. NULL does nothing. Passing any
/// other pointer (or freeing twice) is undefined behaviour.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_string_free(p: *mut c_char) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from CText::into_c (the caller's contract): a boxed
    // slice of the length in front of it, a header and a NUL, freed once.
    unsafe {
        let base = p.cast::<u8>().sub(STRING_HEADER);
        let len = base.cast::<[u8; STRING_HEADER]>().read();
        let size = STRING_HEADER + usize::from_ne_bytes(len) + 1;
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            base, size,
        )));
    }
    OUTSTANDING.fetch_sub(1, Ordering::Relaxed);
}

/// How many strings this library has returned (in this process, through any
/// handle) that were not yet released with `erofs_snapshotter_string_free`.
/// For leak tests of bindings: take it before and after a workload.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_strings_outstanding() -> i64 {
    OUTSTANDING.load(Ordering::Relaxed)
}

/// The library version, e.g. "0.1.0": a static string, not to be freed.
#[no_mangle]
pub extern "C" fn erofs_snapshotter_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_turns_a_panic_into_a_status() {
        let mut err: *mut c_char = std::ptr::null_mut();
        let code = boundary(&mut err, || panic!("boom {}", 42));
        assert_eq!(code, EROFS_ERR_PANIC);
        // SAFETY: set by boundary.
        let msg = unsafe { CStr::from_ptr(err) }.to_str().unwrap().to_string();
        erofs_snapshotter_string_free(err);
        assert_eq!(msg, "panic: boom 42");
    }

    #[test]
    fn null_arguments_are_invalid() {
        let mut err: *mut c_char = std::ptr::null_mut();
        let code = erofs_snapshotter_stat(
            std::ptr::null_mut(),
            c"k".as_ptr(),
            std::ptr::null_mut(),
            &mut err,
        );
        assert_eq!(code, EROFS_ERR_INVALID_ARGUMENT);
        // SAFETY: set by the call.
        let msg = unsafe { CStr::from_ptr(err) }.to_str().unwrap().to_string();
        erofs_snapshotter_string_free(err);
        assert!(msg.contains("handle is NULL"), "{msg}");
        let code =
            erofs_snapshotter_open(std::ptr::null(), std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(code, EROFS_ERR_INVALID_ARGUMENT);
    }

    /// Every kind has its documented code (the numbers of the header, which
    /// never change: bindings hold copies of them).
    #[test]
    fn every_error_kind_has_its_documented_status() {
        let documented = [
            (ErrorKind::InvalidArgument, EROFS_ERR_INVALID_ARGUMENT, 1),
            (ErrorKind::NotFound, EROFS_ERR_NOT_FOUND, 2),
            (ErrorKind::AlreadyExists, EROFS_ERR_ALREADY_EXISTS, 3),
            (
                ErrorKind::FailedPrecondition,
                EROFS_ERR_FAILED_PRECONDITION,
                4,
            ),
            (ErrorKind::Unavailable, EROFS_ERR_UNAVAILABLE, 5),
            (ErrorKind::NotImplemented, EROFS_ERR_NOT_IMPLEMENTED, 6),
            (ErrorKind::Internal, EROFS_ERR_INTERNAL, 7),
            (ErrorKind::Panic, EROFS_ERR_PANIC, 8),
        ];
        // A new kind stops this from compiling until it is listed, and given
        // its row above.
        let _listed = |kind: ErrorKind| match kind {
            ErrorKind::InvalidArgument
            | ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::FailedPrecondition
            | ErrorKind::Unavailable
            | ErrorKind::NotImplemented
            | ErrorKind::Internal
            | ErrorKind::Panic => (),
        };
        for (kind, constant, number) in documented {
            assert_eq!(status(kind), constant, "{kind:?}");
            assert_eq!(constant, number, "{kind:?}");
        }
        assert_eq!(EROFS_OK, 0);
        // One code per kind, none of them EROFS_OK.
        let mut codes: Vec<i32> = documented.iter().map(|d| status(d.0)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), documented.len());
        assert!(!codes.contains(&EROFS_OK));
    }

    #[test]
    fn strings_for_the_caller_are_whole_and_freed() {
        for (given, want) in [("", ""), ("{\"a\":1}", "{\"a\":1}"), ("a\0b", "a?b")] {
            let p = to_c(given);
            // SAFETY: a string just returned.
            assert_eq!(unsafe { CStr::from_ptr(p) }.to_str().unwrap(), want);
            erofs_snapshotter_string_free(p);
        }
        let p = to_c_json(&"x".repeat(1 << 20));
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(p) }.to_bytes().len(), 1 << 20);
        erofs_snapshotter_string_free(p);
    }

    #[test]
    fn version_is_static() {
        // SAFETY: static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(erofs_snapshotter_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
