//! What the example binaries share: turning `run()`'s result into an exit code, as hyperfine
//! does: one `Error: …` line with its causes on stderr and exit code 1, never a backtrace.

use std::process::ExitCode;

/// Exit code of a binary whose `run()` returned `result`. clap's own errors (bad flags,
/// `--help`) print themselves and exit with clap's code (2 for usage errors).
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(clap_err) = e.downcast_ref::<clap::Error>() {
                clap_err.exit();
            }
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
