//! Before a run's first step: what every rank must agree on, the data set (loaded once per
//! machine first), the run files, rank 0's starting point on every rank, and the checks that a
//! resumed run continues on the same data with as many ranks.

use anyhow::{bail, Result};
use tch::nn;

use crate::data::split::SplitFile;
use crate::train::config::{RunInfo, TrainConfig};
use crate::train::data_parallel::{self, DataParallel};
use crate::train::experiment::Experiment;
use crate::train::optim::Optimizer;
use crate::train::resume::LoopState;
use crate::train::run_dir::{self, RunDir, CONFIG_FILE, SPLIT_FILE};
use crate::train::setup::{self, Setup};

/// What every rank of a job must agree on, as JSON: the settings but those that may differ
/// per machine (device, threads, data folder), and how the run starts.
pub(super) fn rank_settings(config: &TrainConfig, run: &RunDir) -> Result<String> {
    let mut value = serde_json::to_value(config)?;
    if let Some(map) = value.as_object_mut() {
        for local in ["device", "threads", "data_dir", "download"] {
            map.remove(local);
        }
        map.insert("resume".into(), run.resume.into());
        map.insert("start".into(), format!("{:?}", run.start).into());
    }
    Ok(value.to_string())
}

/// Loads the data set. The first rank of each machine may download it; the others wait for it
/// (one barrier each, on either side of the first rank's load) and only read.
pub(super) fn load_data(
    config: &TrainConfig,
    experiment: &dyn Experiment,
    run: &RunDir,
    dp: &DataParallel,
    log: &mut dyn FnMut(&str),
) -> Result<Setup> {
    let first_on_machine = dp.local_rank() == 0;
    let result = if first_on_machine {
        let result = setup::setup(config, experiment, log);
        if result.is_ok() {
            dp.barrier()?;
        }
        result
    } else {
        dp.barrier()?;
        setup::setup(&TrainConfig { download: false, ..config.clone() }, experiment, log)
    };
    if result.is_err() && dp.is_main() {
        run_dir::discard_new(run);
    }
    result
}

/// Writes `config.json`, `metrics.jsonl` and `split.json` of a run about to take its first step.
pub(super) fn write_run_files(
    config: &TrainConfig,
    run: &RunDir,
    setup: &Setup,
    state: &LoopState,
    world_size: usize,
) -> Result<()> {
    let info = RunInfo::new(config, setup.device, setup.data.fingerprint.clone()).with_world_size(world_size);
    run_dir::write_json(&run.file(CONFIG_FILE), &info)?;
    run_dir::write_metrics(&run.path, &state.history)?;
    let split_file = SplitFile {
        rng: config.split_rng,
        seed: config.split_seed(),
        valid: setup.split.valid.clone(),
        train: setup.split.train.clone(),
    };
    run_dir::write_json_compact(&run.file(SPLIT_FILE), &split_file)
}

/// Rank 0's starting point on every rank: its loop state with the schedule (through the
/// store) and its weights, buffers and optimizer state (broadcast).
pub(super) fn share_start(
    dp: &DataParallel,
    state: LoopState,
    vs: &nn::VarStore,
    optimizer: &mut dyn Optimizer,
) -> Result<LoopState> {
    if dp.world_size() == 1 {
        return Ok(state);
    }
    let layout = data_parallel::optimizer_layout(optimizer);
    let shared = dp.share_from_main("start", &serde_json::to_vec(&(&state, &layout))?)?;
    let (state, layout): (LoopState, data_parallel::OptimizerLayout) = serde_json::from_slice(&shared)?;
    dp.broadcast_state(vs, optimizer, &layout)?;
    Ok(state)
}

/// Refuses to resume a run with another number of ranks: the epoch's shares would differ.
pub(super) fn check_same_world_size(run: &RunDir, saved: &RunInfo, world_size: usize) -> Result<()> {
    let saved = saved.world_size;
    if saved != world_size {
        bail!(
            "cannot resume: {} was trained with {saved} process(es) and this job has {world_size}; \
             resume it with the same number (--nproc-per-node or torchrun's)",
            run.path.display()
        );
    }
    Ok(())
}

/// Refuses to resume on data files that differ from the run's, unless the user allowed it.
pub(super) fn check_same_data(run: &RunDir, saved: &RunInfo, setup: &Setup, log: &mut dyn FnMut(&str)) -> Result<()> {
    let saved = &saved.data_fingerprint;
    let now = &setup.data.fingerprint;
    if saved.is_empty() || saved == now {
        return Ok(());
    }
    let changed: Vec<String> = now
        .iter()
        .filter(|file| !saved.contains(file))
        .map(|file| file.file.clone())
        .chain(saved.iter().filter(|s| !now.iter().any(|n| n.file == s.file)).map(|s| s.file.clone()))
        .collect();
    let what = format!(
        "the data files differ from those {} was trained on ({} changed since {CONFIG_FILE} recorded them)",
        run.path.display(),
        changed.join(", ")
    );
    if !run.allow_data_change {
        bail!("cannot resume: {what}; pass --allow-data-change to continue on the new data knowingly");
    }
    log(&format!("warning: {what}; continuing because of --allow-data-change"));
    Ok(())
}
