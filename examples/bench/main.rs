//! Throughput of this crate's training step, evaluation, data pipeline and loader, and the
//! time to read the model's weights from `.pth` and from `.safetensors`, as JSON.
//! Run by `scripts/bench`, which runs the PyTorch original beside it and writes the table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};
use tch_alexnet::data::batches::Batches;
use tch_alexnet::data::{cifar, split, transforms};
use tch_alexnet::formats::state_dict;
use tch_alexnet::train::optimizer_setup;
use tch_alexnet::train::{self as training, TrainConfig};

mod optimizer_step;
mod resnet18_step;

tch_alexnet::use_jemalloc!();

/// Measure images per second of the training step, evaluation and data pipeline, the data set
/// load time, and the checkpoint load time from .pth and .safetensors (medians of --reps
/// repetitions after a warm-up).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Folder holding cifar-10-batches-bin/ (or that folder); a synthetic set is written when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// libtorch CPU threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Timed training steps per repetition.
    #[arg(long, default_value_t = 2)]
    train_steps: usize,
    /// Timed evaluation batches per repetition.
    #[arg(long, default_value_t = 3)]
    eval_batches: usize,
    /// Timed data-pipeline batches per repetition.
    #[arg(long, default_value_t = 20)]
    data_batches: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// bf16 autocast (CPU or CUDA), on both the training step and evaluation.
    #[arg(long)]
    amp: bool,
    /// Memory layout of images and conv weights: contiguous or channels-last (one per process,
    /// so that the peak memory is that of one model, as in a real run).
    #[arg(long, default_value = "channels-last")]
    memory_format: String,
    /// Let libtorch use oneDNN for CPU convolutions (its default); `--onednn false` measures
    /// ATen's own kernels instead.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    onednn: bool,
    /// Write the JSON here instead of standard output.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure only the checkpoint load (.pth vs .safetensors, the full model's weights):
    /// seconds instead of minutes, and no data set needed.
    #[arg(long)]
    only_checkpoint_load: bool,
    /// Measure only an optimizer step on the model's parameters (SGD, Adam, fused Adam), to
    /// compare with `scripts/bench_optimizer.py` (PyTorch's torch.optim); no data set needed.
    #[arg(long)]
    only_optimizer_step: bool,
    /// Measure only the `resnet18-cifar` recipe's training step (batch 128, crop and flip) and
    /// its test forward (batch 100), to compare with `scripts/bench_resnet18.py`
    /// (kuangliu/pytorch-cifar's loop); --train-steps, --eval-batches, --reps apply.
    #[arg(long)]
    only_resnet18_step: bool,
    /// With --only-resnet18-step: also time the parts of a step (batch, forward, backward,
    /// optimizer) one by one.
    #[arg(long)]
    phases: bool,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Peak resident memory of this process so far, in MB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The one-minute load average (Linux `/proc/loadavg`): how busy the machine was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Images per second of `reps` timed calls of `work`, each processing `images_per_rep` images.
fn time_images(reps: usize, images_per_rep: usize, device: Device, mut work: impl FnMut()) -> Vec<f64> {
    (0..reps)
        .map(|_| {
            sync(device);
            let t = Instant::now();
            work();
            sync(device);
            images_per_rep as f64 / t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Seconds of one call of `work`; what it returns is dropped outside the timing.
fn time_read<T>(work: impl FnOnce() -> Result<T>) -> Result<f64> {
    let t = Instant::now();
    let value = work()?;
    let secs = t.elapsed().as_secs_f64();
    drop(value);
    Ok(secs)
}

/// Reading the model's weights with `formats::state_dict::load_state_dict` (what every
/// `--checkpoint` and `--init-from` does), from the same tensors written once as .safetensors
/// and once as .pth. Each file is read once untimed first, so that both come from the page
/// cache; the timed reads alternate, so that both see the same machine.
fn checkpoint_load(vs: &nn::VarStore, reps: usize) -> Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("tch-alexnet-bench-checkpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let measured = (|| {
        let tensors: std::collections::BTreeMap<String, Tensor> =
            vs.variables().into_iter().map(|(k, v)| (k, v.to_device(Device::Cpu).contiguous())).collect();
        let (st, pth) = (dir.join("weights.safetensors"), dir.join("weights.pth"));
        state_dict::save_state_dict(&st, &tensors)?;
        state_dict::save_state_dict(&pth, &tensors)?;
        drop(tensors);
        let bytes = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let (mut st_runs, mut pth_runs) = (Vec::new(), Vec::new());
        for rep in 0..=reps {
            let st_secs = time_read(|| Ok(state_dict::load_state_dict(&st, None)?))?;
            let pth_secs = time_read(|| Ok(state_dict::load_state_dict(&pth, None)?))?;
            if rep > 0 {
                st_runs.push(st_secs);
                pth_runs.push(pth_secs);
            }
        }
        let (st_secs, pth_secs) = (median(st_runs.clone()), median(pth_runs.clone()));
        eprintln!(
            "checkpoint load: .pth {pth_secs:.3} s, .safetensors {st_secs:.3} s ({:.2}×, {:.0} MB)",
            pth_secs / st_secs,
            bytes(&pth) as f64 / 1e6
        );
        Ok::<_, anyhow::Error>(serde_json::json!({
            "checkpoint_bytes_safetensors": bytes(&st),
            "checkpoint_bytes_pth": bytes(&pth),
            "checkpoint_load_seconds_safetensors": st_secs,
            "checkpoint_load_safetensors_runs": st_runs,
            "checkpoint_load_seconds_pth": pth_secs,
            "checkpoint_load_pth_runs": pth_runs,
            "checkpoint_load_ratio_pth_over_safetensors": pth_secs / st_secs,
        }))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// Writes the report to --json, or standard output.
fn write_report(args: &Args, report: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(report)? + "\n";
    match &args.json {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Images per second of the ResNet-18 recipe's training transform (gather, random crop with
/// padding 4, flip, normalise) through `Batches::for_epoch`, batch 128, in the run's layout.
fn crop_pipeline(setup: &training::Setup, args: &Args) -> Result<Vec<f64>> {
    const BATCH: usize = 128;
    let spec = tch_alexnet::data::TransformSpec::resnet18_cifar();
    let (device, batches) = (setup.device, args.data_batches);
    let preprocess = transforms::Preprocess::new(&spec, device, args.memory_format == "channels-last")?;
    let need = (batches + 1) * BATCH;
    let split = setup.split.train.get(..need).context("too few training images for the crop measure")?;
    let plan = preprocess.epoch_plan(need, 1, 0);
    let (images, labels) = (&setup.data.train_images, &setup.data.train_labels);
    Ok(time_images(args.reps, batches * BATCH, device, || {
        let all = Batches::for_epoch(images, labels, split, &plan, true, BATCH, &preprocess);
        for batch in all.skip(1) {
            drop(batch);
        }
    }))
}

/// --data-dir, or a synthetic full-size set written once to the temp folder.
fn data_dir(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.data_dir {
        return Ok(d.clone());
    }
    let d = std::env::temp_dir().join("tch-alexnet-bench-synthetic");
    if cifar::check_dir(&d).is_err() {
        tch_alexnet::data::synthetic::write_dataset(&d, 7).context("cannot write the synthetic data set")?;
    }
    Ok(d)
}

fn run() -> Result<()> {
    let args = Args::parse();
    tch_alexnet::ffi::set_onednn_enabled(args.onednn)?;
    if args.only_checkpoint_load {
        tch::set_num_threads(args.threads as i32);
        tch::manual_seed(1);
        let (vs, _net) = training::build_model(Device::Cpu, 10, false)?;
        let mut report = checkpoint_load(&vs, args.reps)?;
        report["implementation"] = format!("rust ({})", tch_alexnet::versions::summary()).into();
        report["threads"] = args.threads.into();
        return write_report(&args, &report);
    }
    if args.only_optimizer_step {
        tch::set_num_threads(args.threads as i32);
        let device = tch_alexnet::device::parse_device(&args.device)?;
        let mut report = optimizer_step::measure(device, args.reps)?;
        report["implementation"] = format!("rust ({})", tch_alexnet::versions::summary()).into();
        report["threads"] = args.threads.into();
        return write_report(&args, &report);
    }
    let data_dir = data_dir(&args)?;
    if args.only_resnet18_step {
        let options = resnet18_step::Options {
            data_dir: &data_dir,
            device: &args.device,
            threads: args.threads,
            memory_format: &args.memory_format,
            train_steps: args.train_steps,
            eval_batches: args.eval_batches,
            reps: args.reps,
            phases: args.phases,
        };
        let mut report = resnet18_step::measure(&options)?;
        report["implementation"] = format!("rust ({})", tch_alexnet::versions::summary()).into();
        return write_report(&args, &report);
    }
    let config = TrainConfig {
        data_dir: data_dir.clone(),
        download: false,
        device: args.device.clone(),
        threads: Some(args.threads),
        batch_size: args.batch_size,
        amp: args.amp,
        memory_format: args.memory_format.clone(),
        ..TrainConfig::default()
    };
    config.validate()?;
    let folder = tch_alexnet::data::download::ensure_cifar10(&data_dir, false, &Default::default())?;
    let load_seconds = median(
        (0..args.reps)
            .map(|_| {
                let t = Instant::now();
                let data = cifar::load_dir(&folder).map(|d| d.to_device(Device::Cpu));
                let secs = t.elapsed().as_secs_f64();
                drop(data);
                secs
            })
            .collect(),
    );
    let setup = training::setup(&config, &tch_alexnet::train::Zoo, &mut |line| eprintln!("{line}"))?;
    let device = setup.device;
    let bs = args.batch_size;
    let plan = split::epoch_plan(setup.split.train.len(), 1, 0);
    let (images, labels) = (&setup.data.train_images, &setup.data.train_labels);

    // 3. The data pipeline alone: gather, flip, normalise, resize a batch on the device.
    let need = (args.data_batches + 1) * bs;
    let data_rates = time_images(args.reps, args.data_batches * bs, device, || {
        let batches = Batches::for_epoch(
            images,
            labels,
            &setup.split.train[..need],
            &split::epoch_plan(need, 1, 0),
            true,
            bs,
            &setup.preprocess,
        );
        // Each batch is complete when the iterator yields it (CPU), or queued (CUDA: the
        // synchronisation after the loop waits for it).
        for batch in batches.skip(1) {
            drop(batch);
        }
    });
    eprintln!("data pipeline: {:.0} images/s", median(data_rates.clone()));

    // 3b. The ResNet-18 recipe's transform (crop with padding 4, flip, normalise, no resize;
    // the fused crop kernel on the CPU) at its batch size, 128.
    let crop_rates = crop_pipeline(&setup, &args)?;
    eprintln!("data pipeline, random crop (batch 128): {:.0} images/s", median(crop_rates.clone()));

    // 1. Training step: gather, transforms, forward, loss, backward, SGD.
    let channels_last = args.memory_format == "channels-last";
    let preprocess =
        transforms::Preprocess::new(&tch_alexnet::data::TransformSpec::alexnet_tutorial(), device, channels_last)?;
    tch::manual_seed(1);
    let (vs, net) = training::build_model(device, 10, channels_last)?;
    let mut sgd = optimizer_setup::build_optimizer(&vs, &tch_alexnet::model::parameter_names(), &config)?;
    let steps = args.train_steps;
    let mut batches = Batches::for_epoch(images, labels, &setup.split.train, &plan, true, bs, &preprocess);
    let _ = training::train_step(&net, sgd.as_mut(), &batches.next().context("no batch")?, args.amp)?;
    let train_rates = time_images(args.reps, steps * bs, device, || {
        for _ in 0..steps {
            let batch = batches.next().expect("enough batches");
            let _ = training::train_step(&net, sgd.as_mut(), &batch, args.amp).expect("a training step failed");
        }
    });
    eprintln!("training step ({}): {:.1} images/s", args.memory_format, median(train_rates.clone()));

    // 2. Evaluation (eval mode, no grad) of the same model, as the recipe validates.
    let eval_images = (args.eval_batches + 1) * bs;
    let eval_rates = time_images(args.reps, args.eval_batches * bs, device, || {
        let batches = Batches::new(
            &setup.data.test_images,
            &setup.data.test_labels,
            &(0..eval_images as i64).collect::<Vec<_>>(),
            bs,
            &preprocess,
        );
        // One autocast region per pass, as `evaluation::evaluate` has: the bf16 weights are
        // cast once and cached for the pass.
        tch_alexnet::ffi::autocast_bf16(device, args.amp, || {
            tch::no_grad(|| {
                for batch in batches.skip(1) {
                    let _ = net.forward_t(&batch.images, false).argmax(-1, false);
                }
            })
        })
        .expect("bf16 autocast is available on the CPU and CUDA");
    });
    eprintln!("evaluation: {:.1} images/s", median(eval_rates.clone()));
    let peak = peak_rss_mb();

    // 4b. tch's own loader, for comparison (after the peak-memory reading: it holds floats).
    let tch_load_seconds = {
        let t = Instant::now();
        let d = tch::vision::cifar::load_dir(&folder).context("tch::vision::cifar::load_dir failed")?;
        let secs = t.elapsed().as_secs_f64();
        drop(d);
        secs
    };

    // 5. Checkpoint load, .pth vs .safetensors, of the weights trained above (after the
    // peak-memory reading: it holds two copies of the weights besides the model).
    let checkpoint = checkpoint_load(&vs, args.reps)?;

    let mut report = serde_json::json!({
        "implementation": format!("rust ({})", tch_alexnet::versions::summary()),
        "device": tch_alexnet::device::device_name(device),
        "threads": args.threads,
        "batch_size": bs,
        "amp": args.amp,
        "memory_format": args.memory_format,
        "onednn": tch_alexnet::ffi::onednn_enabled()?,
        "train_images_per_sec": median(train_rates.clone()),
        "train_runs": train_rates,
        "eval_images_per_sec": median(eval_rates.clone()),
        "eval_runs": eval_rates,
        "data_images_per_sec": median(data_rates.clone()),
        "data_runs": data_rates,
        "data_crop_images_per_sec": median(crop_rates.clone()),
        "data_crop_runs": crop_rates,
        "load_seconds": load_seconds,
        "data_folder": folder,
        "load_seconds_tch_load_dir": tch_load_seconds,
        "peak_rss_mb": peak,
    });
    if let (Some(report), serde_json::Value::Object(checkpoint)) = (report.as_object_mut(), checkpoint) {
        report.extend(checkpoint);
    }
    write_report(&args, &report)
}

fn main() -> ExitCode {
    tch_alexnet::cli::exit_code(run().map(|()| ExitCode::SUCCESS))
}
