//! EROFS conversion: running `mkfs.erofs` (argv, never a shell) and writing
//! `layer.erofs` atomically (temporary file, then rename).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{BLOB, BLOB_TMP_PREFIX};
use crate::logging::Logger;
use crate::subprocess::{self, Finished};
use crate::sys;

/// Oldest erofs-utils with what the snapshotter needs (`-b`, `--tar`,
/// `--sort=none`; 1.8.1 also stopped truncating large uncompressed files).
pub const MIN_VERSION: Version = Version(1, 8, 2);

/// How long `mkfs.erofs --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// An erofs-utils version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Parses `mkfs.erofs (erofs-utils) 1.8.6` (also `1.8.6-g1234`, `1.8`).
pub fn parse_version(output: &str) -> Option<Version> {
    let line = output.lines().find(|l| l.contains("erofs-utils"))?;
    let word = line.split_whitespace().last()?;
    let mut nums = word
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = nums.next()??;
    let minor = nums.next()??;
    let patch = nums.next().flatten().unwrap_or(0);
    Some(Version(major, minor, patch))
}

/// erofs-utils 1.8.7 and 1.8.8 convert some tar/AUFS layers wrongly.
pub fn is_buggy(v: Version) -> bool {
    v.0 == 1 && v.1 == 8 && (v.2 == 7 || v.2 == 8)
}

/// The program `name` stands for: itself when it has a slash, else the first
/// executable of that name on PATH (so each later run does not search).
pub fn resolve_program(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(std::path::PathBuf::from(name));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks that `mkfs_path` runs and is new enough; remembered per process.
pub fn check_mkfs(mkfs_path: &str) -> Result<Version> {
    static SEEN: OnceLock<Mutex<HashMap<String, Version>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(mkfs_path)
    {
        return Ok(*v);
    }
    let install = "install erofs-utils 1.8 or newer (on Debian 12: `make deps`, which builds it \
                   from Debian's source package) or set \"mkfs_path\"";
    let out = subprocess::run(
        mkfs_path.as_ref(),
        &["--version".into()],
        &[],
        VERSION_TIMEOUT,
    )
    .map_err(|e| {
        Error::unavailable(format!(
            "cannot run {mkfs_path:?} (config field \"mkfs_path\"): {e}; {install}"
        ))
    })?;
    if out.timed_out {
        return Err(Error::unavailable(format!(
            "{mkfs_path:?} --version did not finish in {} s (config field \"mkfs_path\")",
            VERSION_TIMEOUT.as_secs()
        )));
    }
    let text = out.output;
    let version = parse_version(&text).ok_or_else(|| {
        Error::unavailable(format!(
            "{mkfs_path:?} --version printed no erofs-utils version ({:?}); {install}",
            text.trim()
        ))
    })?;
    if version < MIN_VERSION {
        return Err(Error::unavailable(format!(
            "{mkfs_path:?} is erofs-utils {version}, older than {MIN_VERSION}; {install}"
        )));
    }
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(mkfs_path.to_string(), version);
    Ok(version)
}

/// The argv (after the program) that converts `src_dir` into `dest`.
pub(crate) fn dir_args(config: &Config, dest: &Path, src_dir: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["--quiet".into(), "-Enoinline_data".into()];
    if !config.sets_block_size() {
        args.push("-b4096".into());
    }
    args.extend(config.mkfs_options.iter().map(Into::into));
    args.push(dest.into());
    args.push(src_dir.into());
    args
}

/// Runs mkfs.erofs with `args`, writing into `dir` (its temporary files go
/// there too); a failure is classified by what it printed.
pub(crate) fn run_mkfs(config: &Config, args: &[std::ffi::OsString], dir: &Path) -> Result<()> {
    let out = subprocess::run(
        config.mkfs_path.as_ref(),
        args,
        &[("TMPDIR", dir.as_os_str())],
        config.convert_timeout(),
    )
    .map_err(|e| Error::unavailable(format!("cannot run {:?}: {e}", config.mkfs_path)))?;
    if out.success() {
        return Ok(());
    }
    Err(mkfs_failure(config, "mkfs.erofs", &out, dir))
}

/// Free space below which a failed conversion is blamed on a full disk.
const DISK_FULL: u64 = 16 << 20;

/// The error for a failed mkfs.erofs run that wrote into `dir`: killed at
/// its deadline, out of disk space (mkfs.erofs 1.8 may report a failed write
/// as a corrupt tar stream; the stream is ours, so a full disk is checked
/// for), or classified by what it printed (folded to one line, without its
/// version banner and usage hint).
pub(crate) fn mkfs_failure(config: &Config, what: &str, run: &Finished, dir: &Path) -> Error {
    if run.timed_out {
        return Error::unavailable(format!(
            "{what} ran longer than config field \"convert_timeout_seconds\" allows ({} s) \
             and was killed",
            config.convert_timeout_seconds
        ));
    }
    let detail: Vec<&str> = run
        .output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try '") && !l.starts_with("mkfs.erofs 1."))
        .collect();
    let detail = detail.join("; ");
    let status = run.status;
    let kind = classify_failure(&detail);
    if kind == ErrorKind::Internal {
        if let Some(free) = sys::fs::free_space(dir).ok().filter(|f| *f < DISK_FULL) {
            return Error::unavailable(format!(
                "{what} failed ({status}) with {free} bytes left on the filesystem of {}: \
                 the disk is full ({detail})",
                dir.display()
            ));
        }
    }
    let hint = if kind == ErrorKind::InvalidArgument {
        format!(
            " (check config field \"mkfs_options\": {:?})",
            config.mkfs_options
        )
    } else {
        String::new()
    };
    Error::new(kind, format!("{what} failed ({status}): {detail}{hint}"))
}

fn classify_failure(detail: &str) -> ErrorKind {
    let d = detail.to_ascii_lowercase();
    if d.contains("no space left") || d.contains("quota exceeded") {
        ErrorKind::Unavailable
    } else if d.contains("unrecognized option")
        || d.contains("invalid option")
        || d.contains("unknown extended option")
        || d.contains("invalid block size")
        || d.contains("requires an argument")
    {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Internal
    }
}

/// Builds `<snapshot_dir>/layer.erofs` from `src_dir`: mkfs.erofs writes a
/// temporary file which is renamed into place, so `layer.erofs` is either
/// absent or complete. With `config.sync_commit` the file and directory are
/// fsynced first. Returns the blob's length.
pub(crate) fn build_blob(
    config: &Config,
    snapshot_dir: &Path,
    src_dir: &Path,
    log: &Logger,
) -> Result<u64> {
    let tmp = TempBlob::new(snapshot_dir, log);
    run_mkfs(config, &dir_args(config, &tmp.path, src_dir), snapshot_dir)?;
    tmp.install(snapshot_dir, config.sync_commit)
}

/// A blob being written in the snapshot directory; deleted unless installed.
/// A failure to delete it goes to the handle's logger.
pub(crate) struct TempBlob {
    pub path: PathBuf,
    /// After [`TempBlob::swap_into`]: whether a blob was replaced (and now
    /// lies at `path`, to be deleted) or the destination was free.
    swapped: Option<bool>,
    log: Logger,
}

/// Writes a blob back to the disk while it is being written: a thread
/// watches its length and starts write-back of what was added (in steps of
/// [`WRITE_BEHIND_STEP`]), so that when the blob is done, little of it is
/// still only in memory, and the flush before its first use waits for
/// little. Stops (and joins its thread) when dropped.
pub(crate) struct WriteBehind {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes added to a blob before their write-back is started.
const WRITE_BEHIND_STEP: u64 = 8 << 20;

impl WriteBehind {
    /// Watches `path` (which need not exist yet) until dropped.
    pub fn start(path: &Path) -> WriteBehind {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("erofs-write-behind".into())
            .spawn(move || {
                let mut file = None;
                let mut done = 0u64;
                let tick = std::time::Duration::from_millis(20);
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                    if file.is_none() {
                        file = sys::fs::open_nofollow(&path).ok();
                    }
                    let Some(f) = &file else { continue };
                    let Ok(len) = f.metadata().map(|m| m.len()) else {
                        break;
                    };
                    // Not the last step: the writer may still change it.
                    let upto = len.saturating_sub(WRITE_BEHIND_STEP) / WRITE_BEHIND_STEP
                        * WRITE_BEHIND_STEP;
                    if upto > done {
                        let _ = sys::fs::write_back(f, done, upto - done);
                        done = upto;
                    }
                }
            })
            .ok();
        WriteBehind {
            stop: Some(tx),
            thread,
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TempBlob {
    /// A companion temporary file next to `blob` (deleted the same way).
    pub fn with_suffix(blob: &TempBlob, suffix: &str) -> TempBlob {
        let mut name = blob.path.as_os_str().to_owned();
        name.push(".");
        name.push(suffix);
        TempBlob {
            path: name.into(),
            swapped: None,
            log: blob.log.clone(),
        }
    }

    pub fn new(snapshot_dir: &Path, log: &Logger) -> TempBlob {
        let name = format!(
            "{BLOB_TMP_PREFIX}{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], "");
        TempBlob {
            path: snapshot_dir.join(name),
            swapped: None,
            log: log.clone(),
        }
    }

    /// Creates the file at `path` (it must not exist), `mode`, for writing.
    pub fn create(&self, mode: u32) -> Result<fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&self.path)
            .map_err(|e| Error::io("create", &self.path, e))
    }

    /// The finished blob's length, after an fsync when `sync`.
    pub fn finish(&self, sync: bool) -> Result<u64> {
        let f = sys::fs::open_nofollow(&self.path)
            .map_err(|e| Error::io("open converted blob", &self.path, e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        if sync {
            f.sync_all()
                .map_err(|e| Error::io("fsync", &self.path, e))?;
        }
        Ok(len)
    }

    /// Renames the finished blob to `layer.erofs`; returns its length.
    pub fn install(mut self, snapshot_dir: &Path, sync: bool) -> Result<u64> {
        let len = self.finish(sync)?;
        let dest = snapshot_dir.join(BLOB);
        fs::rename(&self.path, &dest).map_err(|e| Error::io("rename blob into place", &dest, e))?;
        // Installed: nothing for Drop to delete any more.
        self.path = PathBuf::new();
        if sync {
            sync_dir(snapshot_dir)?;
        }
        Ok(len)
    }

    /// Puts the blob at `dest`, atomically exchanged with the blob already
    /// there (which then lies at this temporary path until dropped), so that
    /// [`TempBlob::swap_back`] can restore it.
    pub fn swap_into(&mut self, dest: &Path) -> Result<()> {
        let swapped = match sys::fs::rename_exchange(&self.path, dest) {
            Ok(()) => true,
            Err(e) if sys::errno(&e) == Some(sys::Errno::NOENT) => {
                sys::fs::rename_noreplace(&self.path, dest)
                    .map_err(|e| Error::io("rename blob into place", dest, e))?;
                false
            }
            Err(e) => return Err(Error::io("swap blob into place", dest, e)),
        };
        self.swapped = Some(swapped);
        Ok(())
    }

    /// Undoes [`TempBlob::swap_into`] (nothing if it did not happen).
    pub fn swap_back(&mut self, dest: &Path) -> Result<()> {
        match self.swapped.take() {
            None => Ok(()),
            Some(true) => sys::fs::rename_exchange(dest, &self.path),
            Some(false) => sys::fs::rename_noreplace(dest, &self.path),
        }
        .map_err(|e| Error::io("restore blob", dest, e))
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        // Moved into place with nothing replaced: nothing left here.
        if self.path.as_os_str().is_empty() || self.swapped == Some(false) {
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.log.warn(format_args!(
                "could not remove temporary blob {}: {e}; cleanup will retry",
                self.path.display()
            )),
        }
    }
}

#[cfg(test)]
mod temp_blob_tests {
    use super::*;
    use crate::logging::Level;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_failed_removal_reaches_the_logger() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let log = Logger::new(
            Arc::new(move |_, m: &str| sink.lock().unwrap().push(m.to_string())),
            Level::Warn,
        );
        let tmp = TempBlob::new(dir.path(), &log);
        let tar = TempBlob::with_suffix(&tmp, "tar");
        // Directories where the files would be: remove_file cannot delete them.
        fs::create_dir_all(tmp.path.join("x")).unwrap();
        fs::create_dir_all(tar.path.join("x")).unwrap();
        drop(tar);
        drop(tmp);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen.iter()
                .all(|m| m.starts_with("could not remove temporary blob ")),
            "{seen:?}"
        );
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    d.sync_all().map_err(|e| Error::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("mkfs.erofs (erofs-utils) 1.8.6\n"),
            Some(Version(1, 8, 6))
        );
        assert_eq!(
            parse_version("mkfs.erofs (erofs-utils) 1.5\n"),
            Some(Version(1, 5, 0))
        );
        assert_eq!(
            parse_version("mkfs.erofs (erofs-utils) 1.8.10-g5f3c2a\n"),
            Some(Version(1, 8, 10))
        );
        assert_eq!(parse_version("garbage"), None);
        assert!(Version(1, 8, 1) < MIN_VERSION && Version(1, 8, 6) >= MIN_VERSION);
    }

    #[test]
    fn argv_defaults_and_block_size() {
        let mut c = Config::new("/r");
        c.mkfs_options = vec!["-T0".into()];
        let args = dir_args(&c, Path::new("/d/t"), Path::new("/d/fs"));
        assert_eq!(
            args,
            [
                "--quiet",
                "-Enoinline_data",
                "-b4096",
                "-T0",
                "/d/t",
                "/d/fs"
            ]
        );
        c.mkfs_options = vec!["-b8192".into()];
        let args = dir_args(&c, Path::new("/d/t"), Path::new("/d/fs"));
        assert_eq!(
            args,
            ["--quiet", "-Enoinline_data", "-b8192", "/d/t", "/d/fs"]
        );
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify_failure("<E> erofs_io: failed to write: No space left on device"),
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify_failure("mkfs.erofs: unrecognized option '--foo'"),
            ErrorKind::InvalidArgument
        );
        assert_eq!(classify_failure("<E> something else"), ErrorKind::Internal);
    }

    #[test]
    fn missing_mkfs_is_unavailable() {
        let e = check_mkfs("/nonexistent/mkfs.erofs").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("mkfs_path"), "{}", e.message());
    }
}
