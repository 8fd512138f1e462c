//! The trash: directories moved out of `snapshots/` are deleted on a
//! background thread, so removing 10,000 files is not on the path of a
//! commit or remove. Several kicks collapse into one pass; failures go to
//! the host's logger and `cleanup` retries them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::logging::Logger;

/// Deletes what is moved into `trash/` on a background thread, so removing
/// 10,000 files is not on the path of a commit or remove.
pub(crate) struct Trash {
    dir: PathBuf,
    log: Logger,
    worker: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

impl Trash {
    /// Failures of background deletion go to `log` (the host's logger).
    pub fn new(dir: PathBuf, log: Logger) -> Trash {
        Trash {
            dir,
            log,
            worker: Mutex::new(None),
        }
    }

    /// Asks the background thread to empty the trash (starting it if needed).
    pub fn kick(&self) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tx, _)) = worker.as_ref() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::channel::<()>();
        let dir = self.dir.clone();
        let log = self.log.clone();
        let spawned = std::thread::Builder::new()
            .name("erofs-trash".into())
            .spawn(move || {
                // Several kicks collapse into one pass.
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    report(&log, &empty_trash(&dir));
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
                report(&self.log, &empty_trash(&self.dir));
            }
        }
    }

    /// Empties the trash now, on this thread; returns what could not be deleted.
    pub fn empty_now(&self) -> Vec<String> {
        empty_trash(&self.dir)
    }

    /// Lets the background thread finish its pass and stops it.
    pub fn shutdown(&self) {
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

/// Deletes every entry of the trash. Another process may be deleting the same
/// entries: whatever vanished under us is fine. Returns the failures.
fn empty_trash(dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return failures,
        Err(e) => {
            failures.push(format!("read {}: {e}", dir.display()));
            return failures;
        }
    };
    for ent in entries.flatten() {
        let path = ent.path();
        let res = match ent.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failures.push(format!("delete {}: {e}", path.display())),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn trash_empties_in_background_and_now() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir_all(victim.join("a/b")).unwrap();
        fs::write(victim.join("a/b/f"), b"x").unwrap();
        layout.retire(&victim, "t").unwrap();
        let trash = Trash::new(layout.trash.clone(), Logger::default());
        trash.kick();
        trash.shutdown();
        assert_eq!(fs::read_dir(&layout.trash).unwrap().count(), 0);
        fs::create_dir(dir.path().join("v2")).unwrap();
        layout.retire(&dir.path().join("v2"), "t").unwrap();
        assert!(trash.empty_now().is_empty());
        assert_eq!(fs::read_dir(&layout.trash).unwrap().count(), 0);
    }
}
