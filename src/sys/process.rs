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

/// A user namespace whose ID maps are `uid_map` and `gid_map` (the text of
/// `/proc/PID/uid_map`: "inside outside count" lines), as an `O_RDONLY`
/// descriptor of its `ns/user` file, for `MOUNT_ATTR_IDMAP`. Made as
/// containerd's `GetUsernsFD` makes it: a child is cloned into a new user
/// namespace, its maps are written, its namespace opened, and it is killed.
/// The child holds no descriptor (another thread's pipe kept open by it
/// could hang that thread), blocks every signal, and dies with the thread
/// that made it.
pub(crate) fn user_namespace(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    use std::io::Write;
    let parent = rustix::process::getpid().as_raw_nonzero().get();
    // The child starts with every signal blocked (it inherits this
    // thread's mask): no handler of the host (a Go runtime's, say) ever
    // runs in it, and only SIGKILL ends its pause.
    // SAFETY: sigset_t is plain data, filled by sigfillset before use;
    // pthread_sigmask only reads `all` and writes `old`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: clone without CLONE_VM gives the child a copy of this address
    // space, as fork does. The child makes only raw system calls (prctl,
    // getppid, close_range, pause, _exit), which are async-signal-safe, so
    // it is sound whatever the other threads of this process were doing.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: raw system calls only, in the child (see above).
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            loop {
                libc::pause();
            }
        }
    }
    let failed = (pid < 0).then(io::Error::last_os_error);
    // SAFETY: restores the mask saved above, in the parent.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let child =
        Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("clone returned pid 0"))?;
    let made = (|| {
        for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
            let path = format!("/proc/{pid}/{file}");
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            // The kernel takes a map in one write.
            let n = f.write(map.as_bytes())?;
            if n != map.len() {
                return Err(io::Error::other(format!("{path}: short write")));
            }
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    // Not yet reaped: the pid is still the child's.
    let _ = rustix::process::kill_process(child, Signal::KILL);
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty())
    {}
    made
}
