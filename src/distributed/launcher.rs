//! A built-in launcher, as `torchrun --nproc-per-node N` on one machine: starts N copies of
//! this program as ranks 0..N with torchrun's variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR=127.0.0.1`, a free `MASTER_PORT`), passes Ctrl-C and SIGTERM on to them, and
//! stops them all when one fails. Each rank is told the launcher's process id
//! ([`LAUNCHER_PID_VAR`]) and watches it with [`watch_launcher`]: if the launcher dies (even by
//! SIGKILL), the ranks stop after their current step with a checkpoint instead of running on
//! unsupervised. (The kernel's parent-death signal would fire once per thread of the launcher.)

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
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
                stop_all(&mut children, libc::SIGKILL);
                return Err(e).with_context(|| format!("cannot start rank {rank} ({})", program.display()));
            }
        }
    }
    log(&format!("Started {nproc} ranks on 127.0.0.1:{port}"));
    let forwarded = forward_signals(children.iter().map(|c| c.id() as i32).collect())?;
    let mut exit_code = 0;
    let mut failed_at: Option<Instant> = None;
    let mut running: Vec<bool> = vec![true; nproc];
    while running.iter().any(|&r| r) {
        for rank in 0..nproc {
            if !running[rank] {
                continue;
            }
            if let Some(status) = children[rank].try_wait().context("cannot wait for a rank")? {
                running[rank] = false;
                let code = exit_code_of(status);
                if code != 0 && exit_code == 0 {
                    exit_code = code;
                    // A stop request (130, 143) is every rank's; anything else is one rank failing.
                    if forwarded.load(Ordering::SeqCst) == 0 {
                        log(&format!("rank {rank} failed (exit code {code}); stopping the other ranks"));
                        failed_at = Some(Instant::now());
                        signal_running(&children, &running, libc::SIGTERM);
                    }
                }
            }
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            signal_running(&children, &running, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(exit_code)
}

fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn signal_running(children: &[Child], running: &[bool], signal: i32) {
    for (child, _) in children.iter().zip(running).filter(|(_, &r)| r) {
        // SAFETY: sends a signal to a child we started and have not reaped yet.
        unsafe { libc::kill(child.id() as i32, signal) };
    }
}

fn stop_all(children: &mut [Child], signal: i32) {
    for child in children.iter_mut() {
        // SAFETY: as in `signal_running`.
        unsafe { libc::kill(child.id() as i32, signal) };
        let _ = child.wait();
    }
}

/// Passes SIGINT and SIGTERM received by the launcher on to every rank (a terminal's Ctrl-C
/// reaches them directly too; a scheduler's SIGTERM reaches only the launcher). Returns the last
/// signal forwarded (0 while none).
fn forward_signals(pids: Vec<i32>) -> Result<Arc<AtomicI32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let last = Arc::new(AtomicI32::new(0));
    let seen = last.clone();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            seen.store(signal, Ordering::SeqCst);
            for &pid in &pids {
                // SAFETY: sends a signal to a child process of ours.
                unsafe { libc::kill(pid, signal) };
            }
        }
    });
    Ok(last)
}
