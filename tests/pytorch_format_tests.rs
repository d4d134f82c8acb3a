//! PyTorch's own checkpoint files (`torch.save`): files that PyTorch 2.x wrote are read exactly
//! (bitwise), files written here load in PyTorch with `weights_only=True`, the formats that are
//! not supported say what to do, malicious pickles are refused without running anything, and
//! damaged files give errors, never panics.
//!
//! The PyTorch files are made at test time by tests/fixtures/make_pytorch_files.py with the
//! reference Python; the tests that need it say SKIPPED without it. The property tests need no
//! Python: they damage files written here.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use tch_alexnet::formats::pytorch::{self, PtValue, PytorchError};
use tch_alexnet::formats::safetensors as st;

fn script() -> PathBuf {
    common::project_root().join("tests/fixtures/make_pytorch_files.py")
}

/// The PyTorch-made files, written once per test run.
fn fixtures(python: &Path) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pytorch-fixtures");
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(python).arg(script()).arg("make").arg(&dir).output().expect("cannot run Python");
        assert!(out.status.success(), "make_pytorch_files.py make failed:\n{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// The JSON form of a value that make_pytorch_files.py's `describe` gives, its tensors named
/// t0, t1, … in the order met and collected into `tensors`.
fn describe(value: &PtValue, tensors: &mut Vec<(String, Tensor)>) -> Value {
    let all = |items: &[PtValue], tensors: &mut Vec<(String, Tensor)>| -> Vec<Value> {
        items.iter().map(|v| describe(v, tensors)).collect()
    };
    let pairs = |items: &[(PtValue, PtValue)], tensors: &mut Vec<(String, Tensor)>| -> Vec<Value> {
        items.iter().map(|(k, v)| json!([describe(k, tensors), describe(v, tensors)])).collect()
    };
    match value {
        PtValue::None => Value::Null,
        PtValue::Bool(b) => json!({ "bool": b }),
        PtValue::Int(i) => json!({ "int": i }),
        PtValue::Float(f) => json!({ "float": format!("{:016x}", f.to_bits()) }),
        PtValue::Str(s) => json!({ "str": s }),
        PtValue::List(items) => json!({ "list": all(items, tensors) }),
        PtValue::Tuple(items) => json!({ "tuple": all(items, tensors) }),
        PtValue::Dict(items) => json!({ "dict": pairs(items, tensors) }),
        PtValue::OrderedDict(items) => json!({ "odict": pairs(items, tensors) }),
        PtValue::Counter(items) => json!({ "counter": pairs(items, tensors) }),
        PtValue::Tensor(t) => {
            let name = format!("t{}", tensors.len());
            tensors.push((name.clone(), t.shallow_clone()));
            json!({ "tensor": name })
        }
    }
}

fn bytes_of(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut bytes, t.numel());
    bytes
}

/// Bitwise equality: kind, shape and bytes.
fn assert_same_tensor(name: &str, got: &Tensor, expected: &Tensor) {
    assert_eq!(got.kind(), expected.kind(), "{name}: kind");
    assert_eq!(got.size(), expected.size(), "{name}: shape");
    assert_eq!(bytes_of(got), bytes_of(expected), "{name}: bytes");
}

/// `value` equals what make_pytorch_files.py recorded for `stem` (CASE.json, CASE.safetensors).
fn assert_matches_expected(value: &PtValue, stem: &Path) {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(stem.with_extension("json")).unwrap()).unwrap();
    let mut tensors = Vec::new();
    let got = describe(value, &mut tensors);
    assert_eq!(got, expected, "structure of {}", stem.display());
    let wanted = st::load_tensors(&stem.with_extension("safetensors")).unwrap().tensors;
    assert_eq!(tensors.len(), wanted.len(), "tensor count of {}", stem.display());
    for (name, tensor) in &tensors {
        assert_same_tensor(name, tensor, &wanted[name]);
    }
}

/// Runs make_pytorch_files.py `check`: PyTorch loads each file (weights_only, and with mmap)
/// and finds exactly what its `stem`.json and `stem`.safetensors record.
fn assert_pytorch_reads(python: &Path, files: &[(PathBuf, PathBuf)]) {
    let mut check = Command::new(python);
    check.arg(script()).arg("check");
    for (file, stem) in files {
        check.arg(file).arg(stem.with_extension("json")).arg(stem.with_extension("safetensors"));
    }
    let out = check.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "OK",
        "PyTorch does not read the files as expected:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CASES: [&str; 7] =
    ["state_dict.pt", "checkpoint.pth", "dataparallel.bin", "dtypes.pt", "views.pt", "protocol4.pt", "values.pt"];

fn load_case(python: &Path, name: &str) -> (PtValue, PathBuf) {
    let path = fixtures(python).join(name);
    let value = pytorch::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    (value, path.with_extension(""))
}

/// The state_dict keys of the recipe's AlexNet (the fixture's tiny copy has the same ones).
fn alexnet_keys() -> Vec<String> {
    let mut keys = Vec::new();
    for block in 1..=5 {
        for (layer, names) in [
            (0, &["weight", "bias"][..]),
            (1, &["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
        ] {
            keys.extend(names.iter().map(|n| format!("conv_block{block}.{layer}.{n}")));
        }
    }
    for (fc, layer) in [(1, 1), (2, 1), (3, 0)] {
        keys.extend(["weight", "bias"].iter().map(|n| format!("fc{fc}.{layer}.{n}")));
    }
    keys.sort();
    keys
}

#[test]
fn reads_every_pytorch_file_exactly() {
    let python = require_reference_python!();
    for name in CASES {
        let (value, stem) = load_case(&python, name);
        assert_matches_expected(&value, &stem);
    }
}

#[test]
fn reads_a_state_dict_pt() {
    let python = require_reference_python!();
    let (value, _) = load_case(&python, "state_dict.pt");
    assert!(matches!(value, PtValue::OrderedDict(_)), "a state_dict is an OrderedDict");
    let sd = value.as_state_dict().expect("a state_dict");
    assert_eq!(sd.keys().cloned().collect::<Vec<_>>(), alexnet_keys());
    let counter = &sd["conv_block1.1.num_batches_tracked"];
    assert_eq!((counter.kind(), counter.size(), counter.int64_value(&[])), (Kind::Int64, vec![], 2));
    assert_eq!(sd["conv_block1.0.weight"].size(), [4, 3, 3, 3]);
}

#[test]
fn reads_a_training_checkpoint_pth() {
    let python = require_reference_python!();
    let (value, _) = load_case(&python, "checkpoint.pth");
    assert!(matches!(value, PtValue::Dict(_)));
    assert!(value.as_state_dict().is_none(), "a checkpoint is not a state_dict");
    assert_eq!(value.get("epoch").and_then(PtValue::as_int), Some(3));
    let model = value.get("model").and_then(PtValue::as_state_dict).expect("model state_dict");
    assert_eq!(model.keys().cloned().collect::<Vec<_>>(), alexnet_keys());

    let optimizer = value.get("optimizer").expect("optimizer");
    let group = &optimizer.get("param_groups").and_then(PtValue::as_list).expect("param_groups")[0];
    assert_eq!(group.get("lr").and_then(PtValue::as_float), Some(0.005));
    assert_eq!(group.get("momentum").and_then(PtValue::as_float), Some(0.9));
    assert_eq!(group.get("weight_decay").and_then(PtValue::as_float), Some(0.005));
    assert_eq!(group.get("dampening").and_then(PtValue::as_float), Some(0.0));
    assert_eq!(group.get("nesterov").and_then(PtValue::as_bool), Some(false));
    assert!(matches!(group.get("foreach"), Some(PtValue::None)));
    let params: Vec<i64> =
        group.get("params").and_then(PtValue::as_list).unwrap().iter().filter_map(PtValue::as_int).collect();
    assert_eq!(params, (0..26).collect::<Vec<_>>(), "parameters, not buffers, in model order");
    // The state is keyed by parameter index; each has a momentum buffer of the parameter's shape.
    let state = optimizer.get("state").and_then(PtValue::as_dict).expect("state");
    assert_eq!(state.len(), 26);
    let (key, first) = &state[0];
    assert_eq!(key.as_int(), Some(0));
    let buffer = first.get("momentum_buffer").and_then(PtValue::as_tensor).unwrap();
    assert_eq!(buffer.size(), model["conv_block1.0.weight"].size());
}

#[test]
fn keys_keep_their_module_prefix_until_the_caller_strips_it() {
    let python = require_reference_python!();
    let (value, _) = load_case(&python, "dataparallel.bin");
    let sd = value.as_state_dict().unwrap();
    assert!(sd.keys().all(|k| k.starts_with("module.")), "{:?}", sd.keys());
    let stripped = pytorch::strip_prefix(sd, "module.");
    assert_eq!(stripped.keys().cloned().collect::<Vec<_>>(), alexnet_keys());
    let plain = load_case(&python, "state_dict.pt").0.as_state_dict().unwrap();
    for (k, t) in &plain {
        assert_same_tensor(k, &stripped[k], t);
    }
}

#[test]
fn reads_half_bfloat16_and_every_other_dtype() {
    let python = require_reference_python!();
    let (value, _) = load_case(&python, "dtypes.pt");
    let kinds: BTreeMap<&str, Kind> =
        value.as_dict().unwrap().iter().map(|(k, v)| (k.as_str().unwrap(), v.as_tensor().unwrap().kind())).collect();
    let expected = [
        ("f32", Kind::Float),
        ("f16", Kind::Half),
        ("bf16", Kind::BFloat16),
        ("f64", Kind::Double),
        ("i64", Kind::Int64),
        ("i32", Kind::Int),
        ("i16", Kind::Int16),
        ("u8", Kind::Uint8),
        ("i8", Kind::Int8),
        ("bool", Kind::Bool),
        ("scalar", Kind::Float),
        ("empty", Kind::Float),
        ("parameter", Kind::Float),
    ];
    assert_eq!(kinds, expected.into_iter().collect());
    assert_eq!(value.get("empty").unwrap().as_tensor().unwrap().size(), [0, 3]);
    assert_eq!(value.get("scalar").unwrap().as_tensor().unwrap().size(), Vec::<i64>::new());
}

#[test]
fn views_of_one_storage_are_rebuilt_with_their_offsets_and_strides() {
    let python = require_reference_python!();
    let (value, _) = load_case(&python, "views.pt");
    let t = |k: &str| value.get(k).unwrap().as_tensor().unwrap().shallow_clone();
    let base = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([4, 6]);
    assert_same_tensor("base", &t("base"), &base);
    assert_same_tensor("row0", &t("row0"), &base.get(0));
    assert_same_tensor("rest", &t("rest"), &base.narrow(0, 1, 3));
    assert_same_tensor("transposed", &t("transposed"), &base.tr());
    assert_same_tensor("strided", &t("strided"), &base.slice(1, 0, 6, 2));
    assert_same_tensor("element", &t("element"), &base.get(2).get(3));
    assert_same_tensor("tied", &t("tied_a"), &t("tied_b"));
    // Partial views own their elements: they do not keep the whole storage alive.
    let rest = t("rest");
    assert!(rest.is_contiguous());
    assert_eq!(rest.numel(), 18);
}

#[test]
fn files_pytorch_wrote_round_trip_through_rust_into_pytorch() {
    let python = require_reference_python!();
    let out = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for name in CASES {
        let (value, stem) = load_case(&python, name);
        let copy = out.path().join(name);
        pytorch::save(&copy, &value).unwrap();
        assert_matches_expected(&pytorch::load(&copy).unwrap(), &stem);
        copies.push((copy, stem));
    }
    assert_pytorch_reads(&python, &copies);
}

/// A training checkpoint built here, with every kind of value and tensor.
fn rust_checkpoint() -> PtValue {
    let base = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]);
    let weight = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
    let bias = Tensor::randn([4], (Kind::Float, Device::Cpu));
    let counter = Tensor::from(7i64);
    let model =
        PtValue::state_dict([("conv.weight", &weight), ("conv.bias", &bias), ("bn.num_batches_tracked", &counter)]);
    let tensor = |t: Tensor| PtValue::Tensor(t);
    let s = |s: &str| PtValue::from(s);
    let dtypes = PtValue::Dict(vec![
        (s("f16"), tensor(Tensor::randn([5], (Kind::Half, Device::Cpu)))),
        (s("bf16"), tensor(Tensor::randn([2, 3], (Kind::BFloat16, Device::Cpu)))),
        (s("f64"), tensor(Tensor::randn([3], (Kind::Double, Device::Cpu)))),
        (s("i32"), tensor(Tensor::from_slice(&[-7i32, i32::MAX]))),
        (s("i16"), tensor(Tensor::from_slice(&[-300i16, 300]))),
        (s("u8"), tensor(Tensor::from_slice(&[0u8, 255]))),
        (s("i8"), tensor(Tensor::from_slice(&[-128i8, 127]))),
        (s("bool"), tensor(Tensor::from_slice(&[true, false]))),
        (s("transposed"), tensor(base.tr())),
        (s("row"), tensor(base.get(1))),
        (s("scalar"), tensor(Tensor::from(2.5f32))),
        (s("empty"), tensor(Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)))),
    ]);
    let group = PtValue::Dict(vec![
        (s("lr"), PtValue::Float(0.005)),
        (s("momentum"), PtValue::Float(0.9)),
        (s("dampening"), PtValue::Int(0)),
        (s("weight_decay"), PtValue::Float(0.005)),
        (s("nesterov"), PtValue::Bool(false)),
        (s("maximize"), PtValue::Bool(false)),
        (s("foreach"), PtValue::None),
        (s("differentiable"), PtValue::Bool(false)),
        (s("fused"), PtValue::None),
        (s("params"), PtValue::List(vec![PtValue::Int(0), PtValue::Int(1)])),
    ]);
    let state = PtValue::Dict(vec![(
        PtValue::Int(0),
        PtValue::Dict(vec![(s("momentum_buffer"), tensor(Tensor::randn([4], (Kind::Float, Device::Cpu))))]),
    )]);
    let optimizer = PtValue::Dict(vec![(s("state"), state), (s("param_groups"), PtValue::List(vec![group]))]);
    let ints = [0, 1, -1, 255, 256, 65535, 65536, i32::MIN as i64, i32::MAX as i64 + 1, 1 << 40, i64::MIN, i64::MAX];
    let floats = [0.0, -0.0, 1.5, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.1, -2.25e-300];
    let values = PtValue::Dict(vec![
        (s("ints"), PtValue::List(ints.into_iter().map(PtValue::Int).collect())),
        (s("floats"), PtValue::Tuple(floats.into_iter().map(PtValue::Float).collect())),
        (s("strings"), PtValue::List(vec![s(""), s("ünïcødé ✓"), s("a\nnewline")])),
        (s("tuples"), PtValue::List((0..6).map(|n| PtValue::Tuple((0..n).map(PtValue::Int).collect())).collect())),
        (s("empty"), PtValue::List(vec![PtValue::List(vec![]), PtValue::Dict(vec![]), PtValue::OrderedDict(vec![])])),
        (PtValue::Int(-5), PtValue::Bool(true)),
        // MultiStepLR's milestones.
        (
            s("milestones"),
            PtValue::Counter(vec![(PtValue::Int(30), PtValue::Int(1)), (PtValue::Int(80), PtValue::Int(2))]),
        ),
        (s("empty_counter"), PtValue::Counter(vec![])),
    ]);
    PtValue::Dict(vec![
        (s("model"), model),
        (s("optimizer"), optimizer),
        (s("epoch"), PtValue::Int(3)),
        (s("dtypes"), dtypes),
        (s("values"), values),
    ])
}

/// Writes what PyTorch must find in a file made from `value`: STEM.json and STEM.safetensors.
fn write_expected(value: &PtValue, stem: &Path) {
    let mut tensors = Vec::new();
    let described = describe(value, &mut tensors);
    std::fs::write(stem.with_extension("json"), described.to_string()).unwrap();
    st::save_tensors(
        &stem.with_extension("safetensors"),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        &Default::default(),
    )
    .unwrap();
}

#[test]
fn files_written_here_load_in_pytorch_with_weights_only() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let value = rust_checkpoint();
    let stem = dir.path().join("expected");
    write_expected(&value, &stem);
    let mut files = Vec::new();
    for name in ["checkpoint.pt", "checkpoint.pth", "checkpoint.bin"] {
        let path = dir.path().join(name);
        pytorch::save(&path, &value).unwrap();
        files.push((path, stem.clone()));
    }
    assert_pytorch_reads(&python, &files);
}

#[test]
fn files_written_here_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let value = rust_checkpoint();
    let path = dir.path().join("checkpoint.pt");
    pytorch::save(&path, &value).unwrap();
    let (mut written, mut read) = (Vec::new(), Vec::new());
    let expected = describe(&value, &mut written);
    assert_eq!(describe(&pytorch::load(&path).unwrap(), &mut read), expected);
    for ((name, a), (_, b)) in written.iter().zip(&read) {
        assert_same_tensor(name, b, a);
    }
    // The state_dict helper writes an OrderedDict.
    let weight = Tensor::randn([2, 2], (Kind::Float, Device::Cpu));
    let sd_path = dir.path().join("sd.pt");
    pytorch::save_state_dict(&sd_path, [("fc.weight", &weight)]).unwrap();
    let sd = pytorch::load(&sd_path).unwrap();
    assert!(matches!(sd, PtValue::OrderedDict(_)));
    assert_same_tensor("fc.weight", &sd.as_state_dict().unwrap()["fc.weight"], &weight);
    assert!(common::temporary_files(dir.path()).is_empty());
}

#[test]
fn storage_data_is_aligned_to_64_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd.pt");
    let marker = Tensor::full([16], 1234.5, (Kind::Float, Device::Cpu));
    pytorch::save_state_dict(&path, [("odd_name_length.x", &marker)]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let needle: Vec<u8> = bytes_of(&marker);
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap();
    assert_eq!(at % 64, 0);
}

/// Loading the fixture `name` fails with an error that `is_expected`, whose message names the
/// file and holds each of `phrases`.
fn assert_refused(python: &Path, name: &str, is_expected: fn(&PytorchError) -> bool, phrases: &[&str]) -> PytorchError {
    let path = fixtures(python).join(name);
    let err = pytorch::load(&path).unwrap_err();
    assert!(is_expected(&err), "{name}: {err:?}");
    let message = err.to_string();
    for phrase in [name].iter().chain(phrases) {
        assert!(message.contains(phrase), "{message:?} lacks {phrase:?}");
    }
    err
}

/// The module and name of a ForbiddenGlobal error.
fn forbidden(err: &PytorchError) -> Option<(&str, &str)> {
    match err {
        PytorchError::ForbiddenGlobal { module, name, .. } => Some((module, name)),
        _ => None,
    }
}

#[test]
fn legacy_files_say_how_to_re_save_them() {
    let python = require_reference_python!();
    let is_legacy = |e: &PytorchError| matches!(e, PytorchError::LegacyFormat { .. });
    assert_refused(&python, "legacy.pt", is_legacy, &["torch.save(torch.load(path), new_path)"]);
    assert!(pytorch::is_pytorch_file(&fixtures(&python).join("legacy.pt")));
}

#[test]
fn torchscript_files_say_to_save_a_state_dict() {
    let python = require_reference_python!();
    let is_torchscript = |e: &PytorchError| matches!(e, PytorchError::TorchScript { .. });
    assert_refused(&python, "scripted.pt", is_torchscript, &["TorchScript", "model.state_dict()"]);
    assert!(pytorch::is_pytorch_file(&fixtures(&python).join("scripted.pt")));
}

#[test]
fn a_whole_model_is_refused_with_a_hint_to_save_its_state_dict() {
    let python = require_reference_python!();
    let hint = "torch.save(model.state_dict(), new_path)";
    let err = assert_refused(&python, "whole_model.pt", |e| forbidden(e).is_some(), &[hint]);
    assert_eq!(forbidden(&err), Some(("__main__", "TinyAlexNet")));
}

#[test]
fn a_malicious_pickle_is_refused_and_its_command_never_runs() {
    let python = require_reference_python!();
    let dir = fixtures(&python);
    // Its command would touch MARKER beside the fixtures.
    let path = dir.join("malicious.pt");
    let marker = dir.join("MARKER");
    let _ = std::fs::remove_file(&marker);
    let err = assert_refused(&python, "malicious.pt", |e| forbidden(e).is_some(), &["posix.system"]);
    assert_eq!(forbidden(&err), Some(("posix", "system")));
    assert!(pytorch::read_raw(&path).is_ok(), "the archive itself is sound");
    assert!(!marker.exists(), "the command ran");
    // The file is really malicious: PyTorch without weights_only runs the command.
    let status = Command::new(&python).arg(script()).arg("unsafe-load").arg(&path).status().unwrap();
    assert!(status.success());
    assert!(marker.exists(), "the fixture did not do what it should");
    std::fs::remove_file(&marker).unwrap();
}

/// Writes `pickle` as the data.pkl of a torch.save archive (with one f32 storage `0` of 2
/// elements) and loads it.
fn load_pickle(pickle: &[u8]) -> Result<PtValue, PytorchError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.pt");
    pytorch::write_raw(&path, pickle, &[("0", &[0u8; 8])]).unwrap();
    pytorch::load(&path)
}

#[test]
fn crafted_pickles_naming_other_globals_are_refused() {
    let named: [(&[u8], &str, &str); 5] = [
        (b"\x80\x02cposix\nsystem\nX\x0c\x00\x00\x00touch MARKER\x85R.", "posix", "system"),
        (b"\x80\x02cos\nsystem\nX\x0c\x00\x00\x00touch MARKER\x85R.", "os", "system"),
        (b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.", "builtins", "eval"),
        (b"\x80\x02c__builtin__\ngetattr\n.", "__builtin__", "getattr"),
        (b"\x80\x02ctorch._utils\n_rebuild_tensor\n.", "torch._utils", "_rebuild_tensor"),
    ];
    for (pickle, module, name) in named {
        let err = load_pickle(pickle).unwrap_err();
        assert_eq!(forbidden(&err), Some((module, name)), "{err:?}");
    }
    // Allowed globals used for anything but their purpose.
    let misused: [&[u8]; 4] = [
        b"\x80\x02ctorch\nFloatStorage\n)R.",         // calling a storage type
        b"\x80\x02ccollections\nOrderedDict\n)\x81.", // NEWOBJ
        b"\x80\x02ccollections\nOrderedDict\n.",      // a class as the value
        b"\x80\x02(X\x07\x00\x00\x00storageX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ.", // no storage type
    ];
    for pickle in misused {
        assert!(matches!(load_pickle(pickle), Err(PytorchError::Pickle { .. })), "{pickle:?}");
    }
}

#[test]
fn self_referencing_deep_and_exploding_pickles_are_refused() {
    // A list that contains itself.
    let cycle = b"\x80\x02]q\x00h\x00a.";
    // 100 000 nested lists.
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 100_000));
    deep.extend(std::iter::repeat_n(b'a', 99_999));
    deep.push(b'.');
    // 60 levels of (x, x): 2^60 leaves from a few hundred bytes.
    let mut bomb = b"\x80\x02]q\x00".to_vec();
    for i in 0..60u8 {
        bomb.extend_from_slice(&[b'h', i, b'h', i, 0x86, b'q', i + 1]);
    }
    bomb.push(b'.');
    for pickle in [&cycle[..], &deep, &bomb] {
        let err = load_pickle(pickle).unwrap_err();
        assert!(matches!(err, PytorchError::Pickle { .. }), "{err:?}");
    }
    // A tensor whose view reaches past its storage, and one with an absurd size.
    let tensor = |size: &[u8]| {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00".to_vec();
        p.extend_from_slice(size);
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR.");
        p
    };
    let fine = load_pickle(&tensor(b"K\x02\x85K\x01\x85")).unwrap();
    assert_eq!(fine.as_tensor().unwrap().size(), [2]);
    for size in [&b"K\x03\x85K\x01\x85"[..], b"J\xff\xff\xff\x7f\x85K\x00\x85", b"K\x02K\x02\x86K\x01K\x01\x86"] {
        let err = load_pickle(&tensor(size)).unwrap_err();
        assert!(matches!(err, PytorchError::Pickle { .. }), "{err:?}");
    }
}

#[test]
fn other_files_are_not_pytorch_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pt");
    std::fs::write(&text, "hello").unwrap();
    let empty = dir.path().join("empty.pt");
    std::fs::write(&empty, "").unwrap();
    let safetensors = dir.path().join("model.safetensors");
    let w = Tensor::ones([2], (Kind::Float, Device::Cpu));
    st::save_tensors(&safetensors, [("w", &w)], &Default::default()).unwrap();
    for path in [&text, &empty, &safetensors] {
        assert!(!pytorch::is_pytorch_file(path), "{}", path.display());
        let err = pytorch::load(path).unwrap_err();
        assert!(matches!(err, PytorchError::NotPytorch { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }
    let missing = dir.path().join("missing.pt");
    assert!(!pytorch::is_pytorch_file(&missing));
    assert!(matches!(pytorch::load(&missing), Err(PytorchError::Read { .. })));
    let ours = dir.path().join("ours.pt");
    pytorch::save_state_dict(&ours, [("w", &w)]).unwrap();
    assert!(pytorch::is_pytorch_file(&ours));
}

#[test]
fn a_failed_save_leaves_the_old_file_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pt");
    let w = Tensor::ones([2], (Kind::Float, Device::Cpu));
    pytorch::save_state_dict(&path, [("w", &w)]).unwrap();
    let before = std::fs::read(&path).unwrap();
    let complex = Tensor::ones([2], (Kind::ComplexFloat, Device::Cpu));
    let err = pytorch::save_state_dict(&path, [("w", &complex)]).unwrap_err();
    assert!(matches!(err, PytorchError::Tensor { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let nowhere = dir.path().join("no-such-folder/model.pt");
    assert!(matches!(pytorch::save_state_dict(&nowhere, [("w", &w)]), Err(PytorchError::Write { .. })));
    assert!(common::temporary_files(dir.path()).is_empty());
}

/// A small file written here, damaged in the property tests.
fn sample_file(dir: &Path) -> PathBuf {
    let path = dir.join("sample.pt");
    let base = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
    let value = PtValue::Dict(vec![
        ("model".into(), PtValue::state_dict([("w", &base), ("b", &base.get(0))])),
        ("half".into(), PtValue::Tensor(base.to_kind(Kind::Half).tr())),
        ("epoch".into(), PtValue::Int(3)),
        ("lr".into(), PtValue::List(vec![PtValue::Float(0.1), PtValue::None, PtValue::Tuple(vec![])])),
    ]);
    pytorch::save(&path, &value).unwrap();
    path
}

fn sample() -> &'static (Vec<u8>, pytorch::RawArchive) {
    static SAMPLE: OnceLock<(Vec<u8>, pytorch::RawArchive)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_file(dir.path());
        (std::fs::read(&path).unwrap(), pytorch::read_raw(&path).unwrap())
    })
}

fn load_bytes(bytes: &[u8]) -> Result<PtValue, PytorchError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.pt");
    std::fs::write(&path, bytes).unwrap();
    pytorch::load(&path)
}

fn load_mutated_pickle(pickle: &[u8]) -> Result<PtValue, PytorchError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.pt");
    let storages: Vec<(&str, &[u8])> = sample().1.storages.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    pytorch::write_raw(&path, pickle, &storages).unwrap();
    pytorch::load(&path)
}

#[test]
fn the_sample_file_loads() {
    let (bytes, raw) = sample();
    let value = load_bytes(bytes).unwrap();
    assert_eq!(value.get("epoch").and_then(PtValue::as_int), Some(3));
    assert!(load_mutated_pickle(&raw.pickle).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn truncated_files_give_errors(cut in 0usize..1_000_000) {
        let bytes = &sample().0;
        let cut = cut % bytes.len();
        prop_assert!(load_bytes(&bytes[..cut]).is_err());
    }

    #[test]
    fn corrupted_files_never_panic(flips in prop::collection::vec((0usize..1_000_000, 1u8..=255), 1..6)) {
        let mut bytes = sample().0.clone();
        let len = bytes.len();
        for (at, xor) in flips {
            bytes[at % len] ^= xor;
        }
        let _ = load_bytes(&bytes);
    }

    #[test]
    fn mutated_pickles_never_panic(
        edits in prop::collection::vec((0usize..1_000_000, any::<u8>(), 0u8..3), 1..6),
        cut in prop::option::of(0usize..1_000_000),
    ) {
        let mut pickle = sample().1.pickle.clone();
        for (at, byte, how) in edits {
            let at = at % (pickle.len() + 1);
            match how {
                0 if at < pickle.len() => pickle[at] = byte,
                1 => pickle.insert(at, byte),
                _ if at < pickle.len() => { pickle.remove(at); }
                _ => {}
            }
        }
        if let Some(cut) = cut {
            pickle.truncate(cut % (pickle.len() + 1));
        }
        let _ = load_mutated_pickle(&pickle);
    }

    #[test]
    fn random_pickles_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut pickle = b"\x80\x02".to_vec();
        pickle.extend(body);
        let _ = load_mutated_pickle(&pickle);
    }
}
