//! The trash: directories moved out of `snapshots/` are deleted on a
//! background thread, so removing 10,000 files is not on the path of a
//! commit or remove. Several kicks collapse into one pass; failures go to
//! the host's logger and `cleanup` retries them.
//!
//! Deleting is bound by the disk, not the CPU: on this project's test
//! machines (ext4 mounted with `discard`) one `unlinkat` of a file whose
//! data was written back waits about 0.1 to 0.2 ms for its blocks to be
//! discarded, so a tree is deleted by [`WORKERS`] threads at once (files
//! in chunks, so that one large directory is shared too; see
//! `bench/README.md` for the figures). A pass stops between chunks when the
//! handle closes, so `close` does not wait for a backlog; the next open
//! resumes it. A caller that retires a directory while more than
//! [`MAX_BACKLOG`] entries wait is held until the pass under way ends: the
//! trash cannot grow without bound behind a busy host.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::logging::Logger;
use crate::sys::fs::{dir_entries, open_beneath, open_dir, unlink_at, Open};

/// Threads deleting one tree.
const WORKERS: usize = 8;
/// Files one task unlinks.
const CHUNK: usize = 64;
/// Trash entries past which retiring waits for the pass under way.
const MAX_BACKLOG: usize = 64;
/// Longest a retiring caller waits for a pass.
const BACKLOG_WAIT: Duration = Duration::from_secs(60);

/// Deletes what is moved into `trash/` on a background thread, so removing
/// 10,000 files is not on the path of a commit or remove.
pub(crate) struct Trash {
    dir: PathBuf,
    log: Logger,
    worker: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    /// Set at close: a pass stops at its next chunk.
    stop: Arc<AtomicBool>,
    /// Passes finished, for callers held by the backlog.
    passes: Arc<(Mutex<u64>, Condvar)>,
}

impl Trash {
    /// Failures of background deletion go to `log` (the host's logger).
    pub fn new(dir: PathBuf, log: Logger) -> Trash {
        Trash {
            dir,
            log,
            worker: Mutex::new(None),
            stop: Arc::new(AtomicBool::new(false)),
            passes: Arc::new((Mutex::new(0), Condvar::new())),
        }
    }

    /// Asks the background thread to empty the trash (starting it if
    /// needed). With more than [`MAX_BACKLOG`] entries waiting, returns only
    /// once the pass that will delete them has ended.
    pub fn kick(&self) {
        let (lock, cv) = &*self.passes;
        let deadline = Instant::now() + BACKLOG_WAIT;
        loop {
            let seen = *lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake();
            let backlog = fs::read_dir(&self.dir)
                .map(|d| d.take(MAX_BACKLOG + 1).count())
                .unwrap_or(0);
            let left = deadline.saturating_duration_since(Instant::now());
            if backlog <= MAX_BACKLOG || left.is_zero() || self.stop.load(Ordering::Relaxed) {
                return;
            }
            // Until a pass ends (it may have listed the trash before these
            // entries came: then the next kick starts another).
            let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = cv.wait_timeout_while(guard, left, |done| *done == seen);
        }
    }

    fn wake(&self) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tx, _)) = worker.as_ref() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::channel::<()>();
        let dir = self.dir.clone();
        let log = self.log.clone();
        let stop = self.stop.clone();
        let passes = self.passes.clone();
        let spawned = std::thread::Builder::new()
            .name("erofs-trash".into())
            .spawn(move || {
                // Several kicks collapse into one pass.
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    report(&log, &empty_trash(&dir, &stop));
                    let (lock, cv) = &*passes;
                    *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    cv.notify_all();
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = tx.send(());
                *worker = Some((tx, handle));
            }
            Err(e) => {
                self.log.warn(format_args!(
                    "cannot start the trash thread ({e}); deleting inline"
                ));
                report(&self.log, &empty_trash(&self.dir, &self.stop));
            }
        }
    }

    /// Empties the trash now, on this thread; returns what could not be deleted.
    pub fn empty_now(&self) -> Vec<String> {
        empty_trash(&self.dir, &AtomicBool::new(false))
    }

    /// Stops the background thread at its next chunk; what is left is
    /// deleted by the next handle that opens the root (or `cleanup`).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, handle)) = worker {
            drop(tx);
            let _ = handle.join();
        }
    }
}

impl Drop for Trash {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn report(log: &Logger, failures: &[String]) {
    if !failures.is_empty() {
        log.warn(format_args!(
            "could not delete {} entries from the trash (cleanup retries): {}",
            failures.len(),
            failures.join("; ")
        ));
    }
}

/// Deletes every entry of the trash until `stop`. Another process may be
/// deleting the same entries: whatever vanished under us is fine. Returns
/// the failures.
fn empty_trash(dir: &Path, stop: &AtomicBool) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    let fail = |what: String| {
        failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what)
    };
    let trash = match open_dir(dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![format!("read {}: {e}", dir.display())],
    };
    let entries = match dir_entries(&trash) {
        Ok(e) => e,
        Err(e) => return vec![format!("read {}: {e}", dir.display())],
    };
    for (name, is_dir) in entries {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&name));
        let res = if is_dir {
            match open_beneath(&trash, &name, Open::Dir) {
                Ok(fd) => {
                    unlink_tree(fd, stop, &fail);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Only directories are left: fast, and symlink-safe.
                    fs::remove_dir_all(&path)
                }
                Err(e) => Err(e),
            }
        } else {
            unlink_at(&trash, &name, false)
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => fail(format!("delete {}: {e}", path.display())),
        }
    }
    failures.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Work for the threads of [`unlink_tree`].
enum Task {
    /// List a directory: its files become `Unlink`s, its directories `Dir`s.
    Dir(Arc<OwnedFd>),
    /// Open directory entry `name` of the directory, then as `Dir`.
    Sub(Arc<OwnedFd>, Vec<u8>),
    /// Unlink these files of the directory.
    Unlink(Arc<OwnedFd>, Vec<Vec<u8>>),
}

/// Unlinks every file below `root` (directories are left, empty) with
/// [`WORKERS`] threads, until `stop`. Entries are opened beneath their
/// directory, never through a symlink; a directory is held open only while
/// tasks of it wait, and the queue is worked deepest first, so the open
/// descriptors stay few.
fn unlink_tree(root: OwnedFd, stop: &AtomicBool, fail: &(dyn Fn(String) + Sync)) {
    let queue = Mutex::new((VecDeque::from([Task::Dir(Arc::new(root))]), 0usize));
    let ready = Condvar::new();
    let work = || loop {
        let task = {
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if stop.load(Ordering::Relaxed) {
                    ready.notify_all();
                    return;
                }
                if let Some(t) = q.0.pop_back() {
                    q.1 += 1;
                    break t;
                }
                if q.1 == 0 {
                    ready.notify_all();
                    return;
                }
                q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let more = run(task, stop, fail);
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        q.0.extend(more);
        q.1 -= 1;
        ready.notify_all();
    };
    std::thread::scope(|s| {
        for _ in 1..WORKERS {
            s.spawn(work);
        }
        work();
    });
}

fn run(task: Task, stop: &AtomicBool, fail: &dyn Fn(String)) -> Vec<Task> {
    let mut more = Vec::new();
    let here = |fd: &OwnedFd, name: Option<&[u8]>| {
        crate::sys::fs::entry_path(fd, name).display().to_string()
    };
    match task {
        Task::Sub(parent, name) => match open_beneath(&*parent, &name, Open::Dir) {
            Ok(fd) => more.push(Task::Dir(Arc::new(fd))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => fail(format!("open {}: {e}", here(&parent, Some(&name)))),
        },
        Task::Dir(fd) => match dir_entries(&*fd) {
            Ok(entries) => {
                let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.1);
                let files: Vec<Vec<u8>> = files.into_iter().map(|e| e.0).collect();
                for chunk in files.chunks(CHUNK) {
                    more.push(Task::Unlink(fd.clone(), chunk.to_vec()));
                }
                more.extend(dirs.into_iter().map(|d| Task::Sub(fd.clone(), d.0)));
            }
            Err(e) => fail(format!("read {}: {e}", here(&fd, None))),
        },
        Task::Unlink(fd, names) => {
            for name in names {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match unlink_at(&*fd, &name, false) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => fail(format!("delete {}: {e}", here(&fd, Some(&name)))),
                }
            }
        }
    }
    more
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    fn wait_empty(dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while entries(dir) > 0 {
            assert!(Instant::now() < deadline, "the trash was not emptied");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A tree of `dirs` directories of `files` files each, two levels deep,
    /// with a symlink that must not be followed.
    fn tree(at: &Path, dirs: usize, files: usize, outside: &Path) {
        for d in 0..dirs {
            let sub = at.join(format!("d{d}/e"));
            fs::create_dir_all(&sub).unwrap();
            for f in 0..files {
                fs::write(sub.join(format!("f{f}")), b"x").unwrap();
            }
        }
        std::os::unix::fs::symlink(outside, at.join("link")).unwrap();
    }

    #[test]
    fn trash_empties_in_background_and_now() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let victim = dir.path().join("victim");
        tree(&victim, 20, 150, &outside);
        layout.retire(&victim, "t").unwrap();
        let trash = Trash::new(layout.trash.clone(), Logger::default());
        trash.kick();
        wait_empty(&layout.trash);
        trash.shutdown();
        assert_eq!(
            fs::read(outside.join("keep")).unwrap(),
            b"k",
            "a symlink was followed"
        );
        fs::create_dir(dir.path().join("v2")).unwrap();
        fs::write(dir.path().join("file"), b"x").unwrap();
        layout.retire(&dir.path().join("v2"), "t").unwrap();
        layout.retire(&dir.path().join("file"), "t").unwrap();
        assert!(trash.empty_now().is_empty());
        assert_eq!(entries(&layout.trash), 0);
    }

    /// Closing does not wait for the backlog: the pass stops at its next
    /// chunk, and the next handle finishes it.
    #[test]
    fn shutdown_is_prompt_and_the_next_handle_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        for i in 0..4 {
            let victim = dir.path().join(format!("v{i}"));
            tree(&victim, 40, 250, dir.path());
            layout.retire(&victim, "t").unwrap();
        }
        let trash = Trash::new(layout.trash.clone(), Logger::default());
        trash.kick();
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        trash.shutdown();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "shutdown took {took:?}");
        let again = Trash::new(layout.trash.clone(), Logger::default());
        again.kick();
        wait_empty(&layout.trash);
    }

    /// Past the backlog limit, retiring waits for the trash to drain.
    #[test]
    fn a_large_backlog_holds_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        for i in 0..(MAX_BACKLOG + 20) {
            let victim = dir.path().join(format!("v{i}"));
            fs::create_dir_all(victim.join("a")).unwrap();
            fs::write(victim.join("a/f"), b"x").unwrap();
            layout.retire(&victim, "t").unwrap();
        }
        let trash = Trash::new(layout.trash.clone(), Logger::default());
        trash.kick();
        assert!(entries(&layout.trash) <= MAX_BACKLOG);
    }
}
