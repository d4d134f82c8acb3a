//! A built-in launcher, as `torchrun --nproc-per-node N` on one machine: starts N copies of
//! this program as ranks 0..N with torchrun's variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT`), passes Ctrl-C and SIGTERM on to them, and
//! stops them all when one fails. Each rank is told the launcher's process id
//! ([`LAUNCHER_PID_VAR`]) and watches it with [`watch_launcher`]: if the launcher dies (even by
//! SIGKILL), the ranks stop after their current step with a checkpoint instead of running on
//! unsupervised. (The kernel's parent-death signal would fire once per thread of the launcher.)
//!
//! A rank's process id is signalled only while the rank is not reaped: once waited for, the id
//! is free and may already name an unrelated process. Reaping and signalling happen under one
//! lock ([`Ranks`]), so the signal-forwarding thread cannot hit a rank the wait loop has just
//! reaped.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The variable that tells a rank its launcher's process id.
pub const LAUNCHER_PID_VAR: &str = "TCH_ALEXNET_LAUNCHER_PID";

/// In a rank started by [`launch_local`], calls `on_orphaned` once (from a thread of its own)
/// when the launcher is gone, checked twice a second; does nothing in other processes.
pub fn watch_launcher(on_orphaned: impl FnOnce() + Send + 'static) {
    let Some(launcher) = std::env::var(LAUNCHER_PID_VAR).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return;
    };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: getppid has no preconditions. The rank was started by the launcher, so its
        // parent changes (to init or a subreaper) exactly when the launcher has died.
        if unsafe { libc::getppid() } != launcher {
            on_orphaned();
            return;
        }
    });
}

/// How long the other ranks get to stop by themselves (SIGTERM) after one failed, before they
/// are killed.
const GRACE: Duration = Duration::from_secs(10);

/// A port on 127.0.0.1 that nothing listens on right now (the OS picks it).
pub fn free_local_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free local port")?;
    Ok(listener.local_addr()?.port())
}

/// The ranks' processes and which of them have been reaped.
struct Ranks {
    children: Vec<Child>,
    /// `Some` once the rank has been waited for: its process id is no longer ours.
    exited: Vec<Option<ExitStatus>>,
}

impl Ranks {
    fn new(children: Vec<Child>) -> Self {
        let exited = vec![None; children.len()];
        Self { children, exited }
    }

    /// Reaps the ranks that have exited since the last call, without blocking: `(rank,
    /// status)` of each.
    fn reap(&mut self) -> Result<Vec<(usize, ExitStatus)>> {
        let mut reaped = Vec::new();
        for (rank, (child, exited)) in self.children.iter_mut().zip(&mut self.exited).enumerate() {
            if exited.is_none() {
                if let Some(status) = child.try_wait().context("cannot wait for a rank")? {
                    *exited = Some(status);
                    reaped.push((rank, status));
                }
            }
        }
        Ok(reaped)
    }

    fn running(&self) -> bool {
        self.exited.iter().any(Option::is_none)
    }

    /// Sends `signal` to every rank not reaped yet; returns their ranks.
    fn signal(&self, signal: i32) -> Vec<usize> {
        let mut signalled = Vec::new();
        for (rank, (child, exited)) in self.children.iter().zip(&self.exited).enumerate() {
            if exited.is_none() {
                // SAFETY: kill has no memory preconditions. The child is not reaped (a zombie
                // at worst), so its process id is still its own.
                unsafe { libc::kill(child.id() as i32, signal) };
                signalled.push(rank);
            }
        }
        signalled
    }

    /// Kills every rank not reaped yet and waits for all of them.
    fn kill_all(&mut self) {
        self.signal(libc::SIGKILL);
        for (child, exited) in self.children.iter_mut().zip(&mut self.exited) {
            if exited.is_none() {
                *exited = child.wait().ok();
            }
        }
    }
}

/// The lock on the ranks. A panic while it was held cannot leave them inconsistent (each
/// field is updated in one step), so a poisoned lock is still used.
fn lock(ranks: &Mutex<Ranks>) -> MutexGuard<'_, Ranks> {
    ranks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `program args` as `nproc` ranks on this machine and waits for them. Returns the exit
/// code for the launcher: 0 when every rank succeeded, else the first failing rank's code
/// (128 + signal number for a rank ended by a signal).
pub fn launch_local(program: &Path, args: &[OsString], nproc: usize, log: &mut dyn FnMut(&str)) -> Result<i32> {
    let port = free_local_port()?;
    let mut children: Vec<Child> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        // Their own process group: a terminal's Ctrl-C reaches the launcher alone, which passes
        // it on once (a rank that got it twice would quit without saving).
        let child = Command::new(program)
            .process_group(0)
            .args(args)
            .env(LAUNCHER_PID_VAR, std::process::id().to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn();
        match child {
            Ok(child) => children.push(child),
            Err(e) => {
                Ranks::new(children).kill_all();
                return Err(e).with_context(|| format!("cannot start rank {rank} ({})", program.display()));
            }
        }
    }
    log(&format!("Started {nproc} ranks on 127.0.0.1:{port}"));
    let ranks = Arc::new(Mutex::new(Ranks::new(children)));
    let forwarded = forward_signals(ranks.clone())?;
    let mut exit_code = 0;
    let mut failed_at: Option<Instant> = None;
    while lock(&ranks).running() {
        let reaped = lock(&ranks).reap()?;
        for (rank, status) in reaped {
            let code = exit_code_of(status);
            if code != 0 && exit_code == 0 {
                exit_code = code;
                // A stop request (130, 143) is every rank's; anything else is one rank failing.
                if forwarded.load(Ordering::SeqCst) == 0 {
                    log(&format!("rank {rank} failed (exit code {code}); stopping the other ranks"));
                    failed_at = Some(Instant::now());
                    lock(&ranks).signal(libc::SIGTERM);
                }
            }
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            lock(&ranks).signal(libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(exit_code)
}

fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Passes SIGINT and SIGTERM received by the launcher on to every rank (a terminal's Ctrl-C
/// reaches them directly too; a scheduler's SIGTERM reaches only the launcher). Returns the last
/// signal forwarded (0 while none). Ranks already reaped are left alone, also after
/// [`launch_local`] has returned.
fn forward_signals(ranks: Arc<Mutex<Ranks>>) -> Result<Arc<AtomicI32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let last = Arc::new(AtomicI32::new(0));
    let seen = last.clone();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            seen.store(signal, Ordering::SeqCst);
            lock(&ranks).signal(signal);
        }
    });
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> Child {
        Command::new("sh").args(["-c", script]).spawn().expect("cannot start sh")
    }

    /// Reaps until `rank` has exited (at most 30 s).
    fn reap_until(ranks: &mut Ranks, rank: usize) -> Vec<(usize, ExitStatus)> {
        let start = Instant::now();
        let mut reaped = Vec::new();
        while ranks.exited[rank].is_none() {
            assert!(start.elapsed() < Duration::from_secs(30), "rank {rank} did not exit");
            reaped.extend(ranks.reap().expect("reap"));
            std::thread::sleep(Duration::from_millis(10));
        }
        reaped
    }

    /// Once a rank is reaped, its process id is never signalled again; the others still are.
    #[test]
    fn reaped_ranks_are_never_signalled() {
        let mut ranks = Ranks::new(vec![spawn("exit 3"), spawn("exec sleep 30")]);
        let reaped = reap_until(&mut ranks, 0);
        assert_eq!(reaped.iter().map(|&(rank, status)| (rank, exit_code_of(status))).collect::<Vec<_>>(), [(0, 3)]);
        assert!(ranks.running());
        assert_eq!(ranks.signal(libc::SIGTERM), [1], "only the rank still running is signalled");
        let reaped = reap_until(&mut ranks, 1);
        assert_eq!(reaped.iter().map(|&(rank, status)| (rank, exit_code_of(status))).collect::<Vec<_>>(), [(1, 143)]);
        assert!(!ranks.running());
        assert!(ranks.signal(libc::SIGKILL).is_empty(), "every rank is reaped: nothing may be signalled");
        assert!(ranks.reap().expect("reap").is_empty(), "a rank is reaped once");
        ranks.kill_all();
    }
}
