//! What the example binaries share: the data and device flags, and turning `run()`'s result
//! into an exit code, as hyperfine does: one `Error: …` line with its causes on stderr and exit
//! code 1, never a backtrace.

use std::path::PathBuf;
use std::process::ExitCode;

/// Where the data set is and which device to run on: flattened into `train`'s and `evaluate`'s
/// flags (`#[command(flatten)]`), so both spell and document them the same way.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Folder holding cifar-10-batches-bin/ (downloaded there when missing), or that folder itself.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Fail instead of downloading CIFAR-10 when it is missing.
    #[arg(long)]
    pub no_download: bool,
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

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
