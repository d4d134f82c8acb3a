//! Progress display: `indicatif` bars on a terminal, nothing (the callers print plain lines
//! a few times per epoch instead) when stderr is a pipe or a file.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// True when stderr is a terminal, where bars redraw in place.
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A download bar in bytes; hidden when stderr is not a terminal.
pub fn bytes_bar(len: Option<u64>) -> ProgressBar {
    if !stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}").expect("valid template")),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// A bar over the steps of one epoch, with the running loss and throughput in its message;
/// hidden when stderr is not a terminal.
pub fn steps_bar(steps: u64, prefix: String) -> ProgressBar {
    if !stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(steps).with_prefix(prefix).with_style(
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template"),
    )
}

/// The whole run's remaining time, from this session's pace: the wall time since the session's
/// first step (validations included once an epoch has ended) over the steps it has taken,
/// times the steps left. The progress bar's own ETA covers only the epoch in progress.
#[derive(Debug, Clone)]
pub struct RunEta {
    total_steps: usize,
    first_step: usize,
    started: std::time::Instant,
}

impl RunEta {
    /// A run of `total_steps` optimizer steps whose session starts now, `steps_done` in.
    pub fn new(total_steps: usize, steps_done: usize) -> Self {
        Self { total_steps, first_step: steps_done, started: std::time::Instant::now() }
    }

    /// The time left once `steps_done` steps of the run are done; `None` before this
    /// session's first step.
    pub fn remaining(&self, steps_done: usize) -> Option<std::time::Duration> {
        self.remaining_after(steps_done, self.started.elapsed())
    }

    fn remaining_after(&self, steps_done: usize, elapsed: std::time::Duration) -> Option<std::time::Duration> {
        let taken = steps_done.checked_sub(self.first_step).filter(|&n| n > 0)?;
        let left = self.total_steps.saturating_sub(steps_done);
        Some(elapsed.mul_f64(left as f64 / taken as f64))
    }
}

/// `H:MM:SS` (hours unbounded), or `-:--:--` when unknown.
pub fn hms(duration: Option<std::time::Duration>) -> String {
    match duration {
        Some(d) => {
            let s = d.as_secs_f64().round() as u64;
            format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
        }
        None => "-:--:--".into(),
    }
}

/// What the progress bar and the quarter-epoch lines say of the whole run: `run 10:42:13 left`.
pub fn run_left(duration: Option<std::time::Duration>) -> String {
    format!("run {} left", hms(duration))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_run_eta_scales_this_sessions_pace_to_the_steps_left() {
        // Resumed at step 100 of 1000; 50 steps in 25 s: 850 steps left at 0.5 s each.
        let eta = RunEta::new(1000, 100);
        assert_eq!(eta.remaining_after(100, Duration::from_secs(3)), None);
        assert_eq!(eta.remaining_after(150, Duration::from_secs(25)), Some(Duration::from_secs(425)));
        assert_eq!(eta.remaining_after(1000, Duration::from_secs(450)), Some(Duration::ZERO));
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(hms(Some(Duration::from_secs(11 * 3600 + 2 * 60 + 3))), "11:02:03");
        assert_eq!(hms(Some(Duration::from_secs(100 * 3600))), "100:00:00");
        assert_eq!(hms(Some(Duration::from_millis(59_600))), "0:01:00");
        assert_eq!(run_left(None), "run -:--:-- left");
    }
}
