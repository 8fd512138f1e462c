//! Running a helper program (`mkfs.erofs`) so that it never outlives the
//! library's caller and never runs without a bound:
//!
//! - argv, never a shell; `LC_ALL=C` so messages can be classified;
//! - the child gets `SIGKILL` when the thread that started it dies
//!   (`PR_SET_PDEATHSIG`; that thread waits for the child, so this is the
//!   caller's death), and checks after arming it that its parent is still
//!   the one that forked it;
//! - a watchdog kills it (through a pidfd, so never a recycled pid) when the
//!   deadline passes;
//! - its stdout and stderr go to one pipe of which the last 64 KiB are kept:
//!   a chatty child costs no memory and never blocks on a full pipe.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys;

/// Output kept, from the end.
const OUTPUT_TAIL: usize = 64 * 1024;

/// A running child.
pub(crate) struct Running {
    child: Child,
    pidfd: Option<OwnedFd>,
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<bool>)>,
    output: Option<JoinHandle<Vec<u8>>>,
}

/// How a child ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// The tail of its stdout and stderr, interleaved.
    pub output: String,
    /// The watchdog killed it.
    pub timed_out: bool,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }
}

/// Starts `program` with `args`; `stdin` as given, output collected; killed
/// after `timeout`.
pub(crate) fn spawn(
    program: &OsStr,
    args: &[std::ffi::OsString],
    env: &[(&str, &OsStr)],
    stdin: Stdio,
    timeout: Duration,
) -> io::Result<Running> {
    let (out_r, out_w) = sys::process::pipe()?;
    let err_w = out_w.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(stdin)
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    for (k, v) in env {
        cmd.env(k, v);
    }
    sys::process::die_with_parent(&mut cmd);
    let child = cmd.spawn()?;
    // The Command holds the write ends until it is dropped; the reader sees
    // the end of output only when the child's copies are gone too.
    drop(cmd);
    let pidfd = sys::process::pidfd(child.id());
    let output = std::thread::Builder::new()
        .name("erofs-child-output".into())
        .spawn(move || collect(File::from(out_r)))
        .ok();
    let mut running = Running {
        child,
        pidfd,
        watchdog: None,
        output,
    };
    let (tx, rx) = mpsc::channel::<()>();
    let pidfd = running.pidfd.as_ref().and_then(|fd| fd.try_clone().ok());
    let pid = running.child.id();
    let watchdog = std::thread::Builder::new()
        .name("erofs-child-watchdog".into())
        .spawn(move || match rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sys::process::kill(pidfd.as_ref(), pid);
                true
            }
            _ => false,
        });
    match watchdog {
        Ok(handle) => running.watchdog = Some((tx, handle)),
        Err(e) => {
            running.kill();
            let _ = running.child.wait();
            return Err(e);
        }
    }
    Ok(running)
}

use std::fs::File;

fn collect(mut pipe: File) -> Vec<u8> {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * OUTPUT_TAIL {
                    tail.drain(..tail.len() - OUTPUT_TAIL);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tail.len() > OUTPUT_TAIL {
        tail.drain(..tail.len() - OUTPUT_TAIL);
    }
    tail
}

impl Running {
    /// Kills the child now (its `wait` still has to be called).
    pub fn kill(&mut self) {
        sys::process::kill(self.pidfd.as_ref(), self.child.id());
    }

    /// Waits for the child to end.
    pub fn wait(mut self) -> io::Result<Finished> {
        let status = self.child.wait()?;
        let timed_out = match self.watchdog.take() {
            Some((tx, handle)) => {
                drop(tx);
                handle.join().unwrap_or(false)
            }
            None => false,
        };
        let output = self
            .output
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(Finished {
            status,
            output: String::from_utf8_lossy(&output).into_owned(),
            timed_out,
        })
    }
}

impl Drop for Running {
    /// A child never outlives its handle: an early return kills and reaps it.
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.kill();
            let _ = self.child.wait();
            if let Some((tx, handle)) = self.watchdog.take() {
                drop(tx);
                let _ = handle.join();
            }
        }
    }
}

/// Runs `program` with `args` and no input to its end.
pub(crate) fn run(
    program: &OsStr,
    args: &[std::ffi::OsString],
    env: &[(&str, &OsStr)],
    timeout: Duration,
) -> io::Result<Finished> {
    spawn(program, args, env, Stdio::null(), timeout)?.wait()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str, timeout: Duration) -> Finished {
        run(
            OsStr::new("/bin/sh"),
            &["-c".into(), script.into()],
            &[],
            timeout,
        )
        .unwrap()
    }

    #[test]
    fn output_and_status() {
        let f = sh("echo out; echo err >&2; exit 3", Duration::from_secs(10));
        assert_eq!(f.status.code(), Some(3));
        assert!(!f.timed_out);
        assert!(
            f.output.contains("out") && f.output.contains("err"),
            "{f:?}"
        );
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let t = Instant::now();
        let f = sh("exec sleep 30", Duration::from_millis(300));
        assert!(f.timed_out && !f.success());
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn output_is_bounded() {
        let f = sh(
            "head -c 10000000 /dev/zero | tr '\\0' x; echo END",
            Duration::from_secs(30),
        );
        assert!(f.success());
        assert!(f.output.len() <= OUTPUT_TAIL, "{}", f.output.len());
        assert!(f.output.ends_with("END\n"));
    }

    #[test]
    fn a_dropped_handle_kills_its_child() {
        let r = spawn(
            OsStr::new("/bin/sleep"),
            &["30".into()],
            &[],
            Stdio::null(),
            Duration::from_secs(60),
        )
        .unwrap();
        let pid = r.child.id();
        drop(r);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    use std::path::Path;
}
