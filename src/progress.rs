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
