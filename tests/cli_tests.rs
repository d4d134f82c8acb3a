//! The example binaries run as a user runs them, on tiny synthetic data on the CPU.

mod common;

use std::path::Path;

use common::{
    assert_clean_failure, cpu_train_args, example_bin, metrics, run_bin, synthetic_data_dir, tensors, with_flags,
};

/// Flags of a short CPU run on the synthetic data: 24 training images, batch 8.
fn tiny_run_args<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    with_flags(cpu_train_args(data, out), &["--epochs", epochs, "--limit-train", "24"])
}

#[test]
fn help_documents_every_flag_with_the_recipe_defaults() {
    let f = run_bin(&example_bin("train"), &["--help"]);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let help = f.stdout;
    // The tutorial's value first; where the other recipe differs, its value by name.
    for (flag, default) in [
        ("--epochs", "[default: 20; resnet18-cifar: 200]"),
        ("--batch-size", "[default: 64; resnet18-cifar: 128]"),
        ("--eval-batch-size", "[default: 64; resnet18-cifar: 100]"),
        ("--lr", "[default: 0.005; resnet18-cifar: 0.1]"),
        ("--momentum", "[default: 0.9]"),
        ("--weight-decay", "[default: 0.005; resnet18-cifar: 0.0005]"),
        ("--schedule", "[default: constant; resnet18-cifar: cosine]"),
        ("--valid-size", "[default: 0.1; resnet18-cifar: 0]"),
        ("--test-every-epoch", "[default: off; resnet18-cifar: on]"),
        ("--seed", "[default: 1]"),
        ("--data-dir", "[default: data]"),
        ("--device", "[default: auto]"),
    ] {
        let line =
            help.lines().position(|l| l.trim_start().starts_with(flag)).unwrap_or_else(|| panic!("{flag} missing"));
        // clap's long help puts the default at the end of the flag's paragraph, which runs
        // until the next flag.
        let paragraph: String = help.lines().skip(line + 1).take_while(|l| !l.trim_start().starts_with('-')).collect();
        assert!(paragraph.contains(default), "{flag}: {paragraph}");
    }
    // --recipe's paragraph lists its values (lines starting with '-'), then clap's default.
    assert!(help.contains("[default: alexnet-tutorial]"), "--recipe's default");
    for flag in [
        "--recipe",
        "--model",
        "--dataset",
        "--test-every-epoch",
        "--no-augment",
        "--out",
        "--threads",
        "--resume",
        "--limit-train",
        "--limit-val",
        "--limit-test",
        "--amp",
        "--no-download",
        "--memory-format",
        "--save-every",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for example in ["evaluate", "predict"] {
        let f = run_bin(&example_bin(example), &["--help"]);
        assert_eq!(f.code, Some(0));
        assert!(f.stdout.contains("--checkpoint"));
    }
}

/// Each program's `-h` and `--help` open with what that program does (its doc comment), not
/// with the crate's description, which clap puts there when `about` is given without a value.
#[test]
fn every_program_s_help_says_what_it_does() {
    for (example, opening) in [
        ("train", "Train an image classifier"),
        ("evaluate", "Evaluate a checkpoint"),
        ("predict", "Classify PNG or JPEG images"),
        ("convert", "Convert checkpoints"),
        ("bench", "Measure images per second"),
        ("port_small", "SmallNet, a port of a small PyTorch"),
    ] {
        for flag in ["-h", "--help"] {
            let f = run_bin(&example_bin(example), &[flag]);
            assert_eq!(f.code, Some(0), "{example} {flag}: {}", f.stderr);
            assert!(f.stdout.starts_with(opening), "{example} {flag} opens with:\n{}", f.stdout);
            assert!(!f.stdout.contains(env!("CARGO_PKG_DESCRIPTION")), "{example} {flag}:\n{}", f.stdout);
        }
    }
}

#[test]
fn bad_flags_give_one_clear_error_line() {
    let train = example_bin("train");
    let data = synthetic_data_dir();
    let data = data.to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("run");
    let out = out.to_str().unwrap();
    for (args, message) in [
        (vec!["--batch-size", "0"], "batch size must be at least 1"),
        (vec!["--valid-size", "1.5"], "valid size must be in [0, 1)"),
        (vec!["--device", "cuda:7"], "cuda:7"),
        (vec!["--device", "tpu"], "unknown device"),
        (vec!["--threads", "0"], "threads must be at least 1"),
        (vec!["--lr=-1"], "learning rate"),
        (vec!["--epochs=-3"], "invalid value"),
        (vec!["--bogus"], "unexpected argument"),
    ] {
        let mut all = vec!["--data-dir", data, "--no-download", "--out", out];
        all.extend(args.iter().copied());
        let f = run_bin(&train, &all);
        assert_clean_failure(&f, message);
    }
    let f = run_bin(&train, &["--resume", "/nonexistent/run"]);
    assert_clean_failure(&f, "/nonexistent/run");
    let f = run_bin(&train, &["--data-dir", "/nonexistent/data", "--no-download", "--out", out]);
    assert_clean_failure(&f, "CIFAR-10 not found in /nonexistent/data");
    let missing = "/nonexistent/model.safetensors";
    let f = run_bin(&example_bin("evaluate"), &["--checkpoint", missing, "--data-dir", data, "--device", "cpu"]);
    assert_clean_failure(&f, missing);
    let png = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    image::RgbImage::new(8, 8).save(png.path()).unwrap();
    let f =
        run_bin(&example_bin("predict"), &["--checkpoint", missing, "--device", "cpu", png.path().to_str().unwrap()]);
    assert_clean_failure(&f, missing);
    let f = run_bin(&example_bin("predict"), &["--checkpoint", missing, "--device", "cpu", "/nonexistent/cat.png"]);
    assert_clean_failure(&f, "/nonexistent/cat.png");
}

/// tch's version in Cargo.lock, read here apart from build.rs.
fn locked_tch_version() -> String {
    let lock = std::fs::read_to_string(common::project_root().join("Cargo.lock")).unwrap();
    let at = lock.find("\nname = \"tch\"\nversion = \"").expect("tch in Cargo.lock") + 25;
    lock[at..].split('"').next().unwrap().to_string()
}

/// A program run with another libtorch than the one it was built against (`LD_LIBRARY_PATH`)
/// records in config.json the one it ran with: here the same library, hard-linked into another
/// folder whose `version.py` says another version.
#[test]
fn config_json_records_the_libtorch_the_program_runs_with() {
    let loaded = tch_alexnet::versions::loaded_libtorch().expect("libtorch_cpu is mapped");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let lib = dir.path().join("torch/lib");
    std::fs::create_dir_all(&lib).unwrap();
    let relocated = lib.join(loaded.path.file_name().unwrap());
    if let Err(e) = std::fs::hard_link(&loaded.path, &relocated) {
        common::skip_or_fail(&format!("cannot hard-link {} into the target folder: {e}", loaded.path.display()));
        return;
    }
    std::fs::write(dir.path().join("torch/version.py"), "__version__ = '2.99.0+relocated'\n").unwrap();
    // A wheel's libtorch finds NVIDIA's libraries at $ORIGIN/../../nvidia.
    let nvidia = loaded.path.parent().unwrap().join("../../nvidia");
    if nvidia.is_dir() {
        std::os::unix::fs::symlink(nvidia.canonicalize().unwrap(), dir.path().join("nvidia")).unwrap();
    }
    let data = synthetic_data_dir();
    let run = dir.path().join("run");
    let args = with_flags(cpu_train_args(data.to_str().unwrap(), run.to_str().unwrap()), &["--epochs", "0"]);
    let out =
        std::process::Command::new(example_bin("train")).args(&args).env("LD_LIBRARY_PATH", &lib).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["libtorch_loaded"]["path"].as_str(), relocated.to_str(), "{config}");
    assert_eq!(config["libtorch_loaded"]["version"], "2.99.0+relocated");
    // What it was built against is another matter: the headers it was compiled with.
    assert!(loaded.version.unwrap().starts_with(config["libtorch_version"].as_str().unwrap()));
    assert_eq!(config["tch_version"].as_str(), Some(locked_tch_version().as_str()));
}

/// Striped images of each class that `predict` must classify as their class (see below): 8 of
/// 10 measured; colour alone would give about 5, a transposed image in `predict` gave 0.
const PREDICT_CORRECT: usize = 7;

/// Two epochs on a small synthetic set: every output file exists with valid content, the model
/// learns the classes, and the checkpoints work with evaluate, predict and PyTorch. Colour alone
/// tells a class only from eight of the nine others (`data::synthetic`): the accuracy asked
/// for needs the stripes' orientation too.
#[test]
fn two_epoch_run_writes_every_file_and_learns() {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let (data_s, run_s) = (data.to_str().unwrap(), run.to_str().unwrap());
    let overrides =
        ["--epochs", "2", "--limit-train", "160", "--limit-val", "32", "--limit-test", "64", "--batch-size", "16"];
    let args = with_flags(cpu_train_args(data_s, run_s), &overrides);
    let f = run_bin(&example_bin("train"), &args);
    assert_eq!(f.code, Some(0), "stdout: {}\nstderr: {}", f.stdout, f.stderr);
    assert!(f.stdout.contains("epoch 2/2: train loss"), "{}", f.stdout);

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    for (key, value) in [
        ("epochs", 2.0),
        ("batch_size", 16.0),
        ("lr", 0.005),
        ("momentum", 0.9),
        ("weight_decay", 0.005),
        ("valid_size", 0.1),
        ("seed", 1.0),
    ] {
        assert_eq!(config[key].as_f64(), Some(value), "config.json {key}");
    }
    assert_eq!(config["resolved_device"], "cpu");
    assert_eq!(config["tch_version"].as_str(), Some(locked_tch_version().as_str()));
    // This test links the same libtorch as the programs: the one config.json says they ran with.
    let loaded = tch_alexnet::versions::loaded_libtorch().expect("libtorch_cpu is mapped");
    assert_eq!(config["libtorch_loaded"]["path"].as_str(), loaded.path.to_str());
    let (built, running) = (config["libtorch_version"].as_str().unwrap(), loaded.version.unwrap());
    assert!(running.starts_with(built), "built against libtorch {built}, runs with {running}");
    assert!(config["data_dir"].as_str().unwrap().contains("synthetic"));

    let lines = metrics(&run);
    assert_eq!(lines.len(), 2);
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m["epoch"], i as u64 + 1);
        for key in ["train_loss", "train_acc", "val_acc", "val_loss", "lr", "seconds", "images_per_sec"] {
            assert!(m[key].as_f64().is_some_and(f64::is_finite), "metrics {key}: {m}");
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let test_acc = summary["test_acc_best"].as_f64().unwrap();
    assert_eq!(summary["test_images"], 64);
    // Ten balanced-ish classes: chance is about 10%, colour alone gives at most 50%.
    assert!(test_acc > 0.65, "test accuracy {test_acc}: the model did not learn the stripes");
    assert!(summary["test_acc_last"].as_f64().is_some() && summary["best_epoch"].as_u64().is_some());
    assert!(std::fs::read_to_string(run.join("curves.svg")).unwrap().starts_with("<svg"));
    let leftovers = common::temporary_files(&run);
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // evaluate: the table and the JSON agree with summary.json.
    let json = dir.path().join("eval.json");
    let f = run_bin(
        &example_bin("evaluate"),
        &[
            "--checkpoint",
            run.join("best.safetensors").to_str().unwrap(),
            "--data-dir",
            data_s,
            "--device",
            "cpu",
            "--limit-test",
            "64",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(f.stdout.contains("accuracy") && f.stdout.contains("airplane"), "{}", f.stdout);
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!((eval["accuracy"].as_f64().unwrap() - test_acc).abs() < 1e-9);
    let confusion: Vec<Vec<i64>> = serde_json::from_value(eval["confusion"].clone()).unwrap();
    assert_eq!(confusion.len(), 10);
    assert_eq!(confusion.iter().flatten().sum::<i64>(), 64);
    // `--json -`: standard output is the JSON alone (for `| jq`), the table goes to stderr.
    let best = run.join("best.safetensors");
    let eval_args = ["--checkpoint", best.to_str().unwrap(), "--data-dir", data_s, "--device", "cpu"];
    let f = run_bin(&example_bin("evaluate"), &[&eval_args[..], &["--limit-test", "64", "--json", "-"]].concat());
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let piped: serde_json::Value = serde_json::from_str(&f.stdout).expect("stdout must be JSON alone");
    assert_eq!(piped["accuracy"], eval["accuracy"]);
    assert!(f.stderr.contains("confusion"), "{}", f.stderr);

    // predict: one image of each class's pattern (PNG, other sizes than 32×32, one JPEG). Each
    // class shares its colour with another and differs from it in the stripes' orientation only,
    // so a predict that transposed its input would take most images for their sibling class.
    let mut images = Vec::new();
    for class in 0..10u8 {
        let ext = if class == 9 { "jpg" } else { "png" };
        let path = dir.path().join(format!("class{class}.{ext}"));
        let (width, height) = (32 + 24 * (class as u32 % 4), 32 + 16 * (class as u32 % 3));
        let pixels = tch_alexnet::data::synthetic::rgb_image(class, width, height, 0.25);
        image::RgbImage::from_raw(width, height, pixels).unwrap().save(&path).unwrap();
        images.push(path);
    }
    let mut args = vec!["--checkpoint", best.to_str().unwrap(), "--device", "cpu", "--json"];
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let f = run_bin(&example_bin("predict"), &args);
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let predictions: serde_json::Value = serde_json::from_str(&f.stdout).unwrap();
    let mut correct = 0;
    for (class, p) in predictions.as_array().unwrap().iter().enumerate() {
        let top = p["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let probs: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-6);
        correct += usize::from(top[0]["class"].as_u64() == Some(class as u64));
    }
    eprintln!("predict: {correct} of 10 striped images get their class first (test accuracy {test_acc})");
    assert!(correct >= PREDICT_CORRECT, "only {correct} of 10 images were classified as their class:\n{}", f.stdout);

    // A checkpoint that went through PyTorch (strict load, saved by PyTorch) works in both tools.
    if let Some(python) = common::reference_python() {
        let torch_ckpt = dir.path().join("from_torch.safetensors");
        common::run_reference(
            &python,
            &["roundtrip", run.join("last.safetensors").to_str().unwrap(), torch_ckpt.to_str().unwrap()],
        );
        let f = run_bin(
            &example_bin("evaluate"),
            &[
                "--checkpoint",
                torch_ckpt.to_str().unwrap(),
                "--data-dir",
                data_s,
                "--device",
                "cpu",
                "--limit-test",
                "64",
            ],
        );
        assert_eq!(f.code, Some(0), "{}", f.stderr);
        assert!(
            f.stdout.contains(&format!("{:.2}%", 100.0 * summary["test_acc_last"].as_f64().unwrap())),
            "{}",
            f.stdout
        );
        let f = run_bin(
            &example_bin("predict"),
            &["--checkpoint", torch_ckpt.to_str().unwrap(), "--device", "cpu", images[0].to_str().unwrap()],
        );
        assert_eq!(f.code, Some(0), "{}", f.stderr);
    } else {
        common::skip_or_fail("PyTorch round trip of the run's checkpoint (no reference Python)");
    }
}

fn assert_same_numbers(a: &serde_json::Value, b: &serde_json::Value) {
    for key in ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"] {
        assert_eq!(a[key], b[key], "{key} differs: {a} vs {b}");
    }
}

fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs");
    }
}

/// Same seed on the CPU → identical numbers; `--resume` from the epoch-1 checkpoint → the same
/// epoch 2 and the same final weights as the uninterrupted run.
#[test]
fn runs_are_deterministic_and_resume_exactly() {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let data_s = data.to_str().unwrap();
    let train = example_bin("train");
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    let (a, b, c) = (path("a"), path("b"), path("c"));
    for run in [&a, &b] {
        let f = run_bin(&train, &tiny_run_args(data_s, run, "2"));
        assert_eq!(f.code, Some(0), "{}", f.stderr);
    }
    let (ma, mb) = (metrics(Path::new(&a)), metrics(Path::new(&b)));
    assert_eq!(ma.len(), 2);
    for (x, y) in ma.iter().zip(&mb) {
        assert_same_numbers(x, y);
    }
    assert_same_checkpoint(&Path::new(&a).join("last.safetensors"), &Path::new(&b).join("last.safetensors"));

    let f = run_bin(&train, &tiny_run_args(data_s, &c, "1"));
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_same_numbers(&metrics(Path::new(&c))[0], &ma[0]);
    let f = run_bin(&train, &["--resume", &c, "--epochs", "2"]);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    assert!(f.stdout.contains("Resuming"), "{}", f.stdout);
    let mc = metrics(Path::new(&c));
    assert_eq!(mc.len(), 2);
    assert_same_numbers(&mc[1], &ma[1]);
    assert_same_checkpoint(&Path::new(&c).join("last.safetensors"), &Path::new(&a).join("last.safetensors"));

    // A resumed run keeps its settings: changing one is refused.
    let f = run_bin(&train, &["--resume", &c, "--lr", "0.1"]);
    assert_clean_failure(&f, "--lr");
    // And a finished run is not overwritten by a new one.
    let f = run_bin(&train, &tiny_run_args(data_s, &c, "1"));
    assert_clean_failure(&f, "already holds a run");
}

/// The benchmark program runs end to end on a tiny configuration and reports every measure,
/// with the layout and oneDNN setting it was asked for (no timing is asserted).
#[test]
fn bench_reports_every_measure_as_json() {
    let data = synthetic_data_dir();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let f = run_bin(
        &example_bin("bench"),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--batch-size",
            "2",
            "--train-steps",
            "1",
            "--eval-batches",
            "1",
            "--data-batches",
            "2",
            "--reps",
            "1",
            "--memory-format",
            "contiguous",
            "--onednn",
            "false",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(f.code, Some(0), "bench failed: {}", f.stderr);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "train_images_per_sec",
        "eval_images_per_sec",
        "data_images_per_sec",
        "load_seconds",
        "peak_rss_mb",
        "checkpoint_load_seconds_pth",
        "checkpoint_load_seconds_safetensors",
    ] {
        let value = report[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {report}"));
        assert!(value > 0.0 && value.is_finite(), "{key} = {value}");
    }
    assert_eq!(report["memory_format"], "contiguous");
    assert_eq!(report["onednn"], false);
    assert_eq!(report["batch_size"], 2);
}
