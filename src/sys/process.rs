//! Processes and the descriptors that talk to them.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::{Pid, Signal};

/// True when running as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes the child `cmd` will start be killed (SIGKILL) when the thread
/// that starts it ends, and fail to start if this process went away before
/// that was armed.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes raw system calls (prctl, getppid), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// A pidfd for child `pid` (not yet reaped), where the kernel has them (5.3).
pub(crate) fn pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = Pid::from_raw(pid as i32)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// SIGKILL through the pidfd when there is one (it cannot hit a recycled
/// pid); without one, by pid (the caller has not reaped it yet).
pub(crate) fn kill(pidfd: Option<&OwnedFd>, pid: u32) {
    match pidfd {
        Some(fd) => {
            let _ = rustix::process::pidfd_send_signal(fd, Signal::KILL);
        }
        None => {
            if let Some(pid) = Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// `send(MSG_NOSIGNAL)`: a peer that went away is EPIPE, not a SIGPIPE that
/// would kill a host that does not ignore it.
pub(crate) fn send_nosignal(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::net::send(fd, buf, rustix::net::SendFlags::NOSIGNAL) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}
