//! The data pipeline: split properties, the CIFAR reader, the flip, errors, the download against
//! a local HTTP server, parity of the transforms with torchvision, and the real data set.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use proptest::prelude::*;
use tch::{Device, Kind, Tensor};
use tch_alexnet::data::cifar::{self, DataError, FILE_BYTES, IMAGE_BYTES, RECORDS_PER_FILE};
use tch_alexnet::data::download::{self, DownloadError, Source};
use tch_alexnet::data::split::{self, epoch_plan, steps_per_epoch, train_valid_split, SplitRng};
use tch_alexnet::data::transforms::Preprocess;
use tch_alexnet::data::TransformSpec;

// ---------------------------------------------------------------- split

#[test]
fn recipe_split_sizes_and_steps() {
    let s = train_valid_split(50_000, 0.1, 1, SplitRng::Numpy).unwrap();
    assert_eq!((s.train.len(), s.valid.len()), (45_000, 5_000));
    assert_eq!(steps_per_epoch(s.train.len(), 64), 704);
    assert_eq!(steps_per_epoch(s.valid.len(), 64), 79);
    // floor, as the recipe's np.floor: 0.15 × 50,001 = 7,500.15 → 7,500.
    assert_eq!(train_valid_split(50_001, 0.15, 1, SplitRng::Numpy).unwrap().valid.len(), 7_500);
    assert_eq!(train_valid_split(100, 0.0, 1, SplitRng::Numpy).unwrap().valid.len(), 0);
}

#[test]
fn valid_size_outside_unit_interval_is_an_error() {
    for v in [1.0, 1.5, -0.1, f64::NAN, f64::INFINITY] {
        let err = train_valid_split(100, v, 1, SplitRng::Numpy).unwrap_err();
        assert!(err.to_string().contains("[0, 1)"), "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn split_is_disjoint_covering_and_deterministic(
        n in 1usize..3000, valid in 0.0f64..0.99, seed in any::<u32>(), numpy in any::<bool>()
    ) {
        let (seed, rng) = (seed as u64, if numpy { SplitRng::Numpy } else { SplitRng::Chacha });
        let s = train_valid_split(n, valid, seed, rng).unwrap();
        prop_assert_eq!(s.valid.len(), (valid * n as f64).floor() as usize);
        let mut all: Vec<i64> = s.train.iter().chain(&s.valid).copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n as i64).collect::<Vec<_>>());
        prop_assert_eq!(&s, &train_valid_split(n, valid, seed, rng).unwrap());
    }

    #[test]
    fn epoch_plans_are_permutations_and_deterministic(len in 1usize..2000, seed in any::<u64>(), epoch in 0usize..50) {
        let plan = epoch_plan(len, seed, epoch);
        let mut order = plan.order.clone();
        order.sort_unstable();
        prop_assert_eq!(order, (0..len).collect::<Vec<_>>());
        prop_assert_eq!(plan.flips.len(), len);
        prop_assert_eq!(&plan, &epoch_plan(len, seed, epoch));
    }
}

#[test]
fn different_seeds_and_epochs_draw_differently() {
    let a = train_valid_split(50_000, 0.1, 1, SplitRng::Numpy).unwrap();
    let b = train_valid_split(50_000, 0.1, 2, SplitRng::Numpy).unwrap();
    assert_ne!(a.valid, b.valid);
    let orders: HashSet<Vec<usize>> = (0..5).map(|e| epoch_plan(45_000, 1, e).order).collect();
    assert_eq!(orders.len(), 5, "every epoch must have its own order");
    assert_ne!(epoch_plan(1000, 1, 0), epoch_plan(1000, 2, 0));
    // The epoch streams are not the split's stream.
    let first: Vec<i64> = epoch_plan(50_000, 1, 0).order[..10].iter().map(|&i| i as i64).collect();
    assert_ne!(first, a.valid[..10].to_vec());
}

// ---------------------------------------------------------------- reader

/// Record `i` of file `f`: label `(i + f) % 10`; pixel `p` of plane R/G/B is `(p + i) % 256`,
/// `(2p + f) % 256`, `255 - p % 256`, so plane order and position can both be checked.
fn patterned_record(f: usize, i: usize) -> (u8, Vec<u8>) {
    let mut pixels = Vec::with_capacity(IMAGE_BYTES);
    pixels.extend((0..1024).map(|p| ((p + i) % 256) as u8));
    pixels.extend((0..1024).map(|p| ((2 * p + f) % 256) as u8));
    pixels.extend((0..1024).map(|p| (255 - p % 256) as u8));
    (((i + f) % 10) as u8, pixels)
}

fn write_patterned_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, name) in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]).enumerate() {
        cifar::write_records(&dir.join(name), (0..RECORDS_PER_FILE).map(|i| patterned_record(f, i))).unwrap();
    }
}

#[test]
fn synthetic_folder_loads_with_labels_pixels_and_channel_order() {
    let dir = tempfile::tempdir().unwrap();
    write_patterned_dataset(dir.path());
    let data = cifar::load_dir(dir.path()).unwrap();
    assert_eq!(data.train_images.size(), vec![50_000, 3, 32, 32]);
    assert_eq!(data.train_images.kind(), Kind::Uint8);
    assert_eq!(data.test_images.size(), vec![10_000, 3, 32, 32]);
    assert_eq!(data.train_labels.kind(), Kind::Int64);
    for (global, f, i) in [(0usize, 0usize, 0usize), (1, 0, 1), (12_345, 1, 2_345), (49_999, 4, 9_999)] {
        let (label, pixels) = patterned_record(f, i);
        assert_eq!(data.train_labels.int64_value(&[global as i64]), label as i64);
        for (c, y, x) in [(0, 0, 0), (0, 3, 7), (1, 0, 5), (1, 31, 31), (2, 10, 2)] {
            let want = pixels[c * 1024 + y * 32 + x] as i64;
            assert_eq!(
                data.train_images.int64_value(&[global as i64, c as i64, y as i64, x as i64]),
                want,
                "image {global} c{c} y{y} x{x}"
            );
        }
    }
    let (label, pixels) = patterned_record(5, 77);
    assert_eq!(data.test_labels.int64_value(&[77]), label as i64);
    assert_eq!(data.test_images.int64_value(&[77, 1, 2, 3]), pixels[1024 + 2 * 32 + 3] as i64);
}

#[test]
fn reader_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    assert!(matches!(cifar::load_dir(&missing), Err(DataError::MissingDir(p)) if p == missing));

    let data = dir.path().join("data");
    write_patterned_dataset(&data);
    std::fs::remove_file(data.join("data_batch_3.bin")).unwrap();
    let err = cifar::load_dir(&data).unwrap_err();
    assert!(matches!(&err, DataError::MissingFile(p) if p.ends_with("data_batch_3.bin")), "{err}");

    cifar::write_records(&data.join("data_batch_3.bin"), (0..RECORDS_PER_FILE - 1).map(|i| patterned_record(2, i)))
        .unwrap();
    let err = cifar::load_dir(&data).unwrap_err();
    assert!(matches!(&err, DataError::WrongSize { found, .. } if *found == FILE_BYTES - 3073), "{err}");
    assert!(err.to_string().contains("data_batch_3.bin") && err.to_string().contains("truncated"));

    let mut bytes = std::fs::read(data.join("test_batch.bin")).unwrap();
    std::fs::write(data.join("data_batch_3.bin"), &bytes).unwrap();
    bytes[3073 * 42] = 10;
    std::fs::write(data.join("test_batch.bin"), &bytes).unwrap();
    let err = cifar::load_dir(&data).unwrap_err();
    assert!(matches!(&err, DataError::BadLabel { record: 42, label: 10, .. }), "{err}");
    assert!(err.to_string().contains("test_batch.bin"));
}

// ---------------------------------------------------------------- transforms

/// Flip and resize to `size` with the same mean and std on all three channels.
fn stats_spec(mean: f64, std: f64, size: i64) -> TransformSpec {
    TransformSpec { mean: vec![mean; 3], std: vec![std; 3], resize: Some(size), random_crop_padding: None, flip: true }
}

#[test]
fn flip_mirrors_exactly_the_chosen_images_and_about_half() {
    // std = 1/255 and mean 0 make the normalisation the identity on 0..255; size 32 makes the
    // resize the identity, so the output is the flipped input itself.
    let pre = Preprocess::new(&stats_spec(0.0, 1.0 / 255.0, 32), Device::Cpu, false).unwrap();
    let images = Tensor::randint(256, [64, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let plan = epoch_plan(64, 7, 0);
    let flips: Vec<u8> = plan.flips.iter().map(|&f| f as u8).collect();
    let flips_t = Tensor::from_slice(&flips).to_kind(Kind::Bool);
    let out = pre.apply(&images, Some(&flips_t));
    let input = images.to_kind(Kind::Float);
    for i in 0..64 {
        let want = if plan.flips[i as usize] { input.get(i).flip([2]) } else { input.get(i) };
        let diff = (out.get(i) - want).abs().max().double_value(&[]);
        assert!(diff < 1e-3, "image {i} (flip {}) differs by {diff}", plan.flips[i as usize]);
    }
    let big = epoch_plan(45_000, 1, 3);
    let share = big.flips.iter().filter(|&&f| f).count() as f64 / big.flips.len() as f64;
    assert!((share - 0.5).abs() < 0.01, "flip share {share}");
}

#[test]
fn preprocess_gives_normalised_227_batches() {
    let pre = Preprocess::new(&TransformSpec::alexnet_tutorial(), Device::Cpu, false).unwrap();
    let images = Tensor::full([2, 3, 32, 32], 128, (Kind::Uint8, Device::Cpu));
    let out = pre.apply(&images, None);
    assert_eq!(out.size(), vec![2, 3, 227, 227]);
    for (c, (m, s)) in
        tch_alexnet::data::transforms::CIFAR_MEAN.iter().zip(tch_alexnet::data::transforms::CIFAR_STD).enumerate()
    {
        let want = (128.0 / 255.0 - m) / s;
        let got = out.get(1).get(c as i64).mean(Kind::Double).double_value(&[]);
        assert!((got - want).abs() < 1e-5, "channel {c}: {got} vs {want}");
    }
}

/// Resize + ToTensor + Normalize against torchvision on PIL images (which round to uint8).
#[test]
fn transforms_match_torchvision_on_pil_within_two_levels() {
    let python = require_reference_python!();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("noise.bin");
    let mut rng = 12345u64;
    let records: Vec<(u8, Vec<u8>)> = (0..16)
        .map(|i| {
            let pixels = (0..IMAGE_BYTES)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (rng >> 56) as u8
                })
                .collect();
            (i % 10, pixels)
        })
        .collect();
    cifar::write_records(&file, records).unwrap();
    common::run_reference(
        &python,
        &["transform-fixtures", file.to_str().unwrap(), dir.path().to_str().unwrap(), "--count", "16"],
    );
    let torch =
        tch_alexnet::formats::safetensors::load_tensors(&dir.path().join("transforms.safetensors")).unwrap().tensors;
    let (images, _) = cifar::parse_records(&file, &std::fs::read(&file).unwrap()).unwrap();
    let pre = Preprocess::new(&TransformSpec::alexnet_tutorial(), Device::Cpu, false).unwrap();
    let resized = pre.resize_unnormalised(&images);
    let diff = common::max_abs_diff(&resized, &torch["resized"]);
    eprintln!("resize vs torchvision/PIL: max |diff| = {:.3} levels of 255", diff * 255.0);
    assert!(diff <= 2.0 / 255.0, "resize differs from torchvision by {} levels", diff * 255.0);
    let normalized = pre.apply(&images, None);
    let diff = common::max_abs_diff(&normalized, &torch["normalized"]);
    // 2 levels of 255, divided by the smallest std.
    assert!(diff <= 2.0 / 255.0 / 0.1994, "normalised output differs by {diff}");
}

// ---------------------------------------------------------------- download

/// A tar.gz holding `cifar-10-batches-bin/` with six small-to-compress full-size files.
fn synthetic_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (f, name) in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]).enumerate() {
        let mut bytes = vec![0u8; FILE_BYTES as usize];
        for i in 0..RECORDS_PER_FILE {
            bytes[i * 3073] = ((i + f) % 10) as u8;
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(bytes))
}

/// Serves `body` to `connections` requests on 127.0.0.1, announcing `announced` bytes; returns
/// the URL. Stops by itself after those requests.
fn serve(body: Vec<u8>, announced: usize, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let header = format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn download_with_right_md5_extracts_into_place() {
    let archive = synthetic_archive();
    let source = Source { url: serve(archive.clone(), archive.len(), 1), md5: md5_hex(&archive) };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let folder = download::ensure_cifar10(&data_dir, true, &source).unwrap();
    assert_eq!(folder, data_dir.join("cifar-10-batches-bin"));
    assert_eq!(leftovers(&data_dir), vec!["cifar-10-batches-bin".to_string()]);
    let data = cifar::load_dir(&folder).unwrap();
    assert_eq!(data.train_labels.int64_value(&[10_001]), 2);
    // Present now: a second call does not download (the server is gone).
    assert_eq!(download::ensure_cifar10(&data_dir, true, &source).unwrap(), folder);
    // The batch folder itself is accepted as --data-dir too.
    assert_eq!(download::ensure_cifar10(&folder, false, &source).unwrap(), folder);
}

#[test]
fn download_with_wrong_md5_keeps_nothing() {
    let archive = synthetic_archive();
    let source = Source { url: serve(archive.clone(), archive.len(), 1), md5: "0".repeat(32) };
    let dir = tempfile::tempdir().unwrap();
    let err = download::ensure_cifar10(dir.path(), true, &source).unwrap_err();
    assert!(matches!(err, DownloadError::Md5 { .. }), "{err}");
    assert!(err.to_string().contains("MD5"));
    assert!(leftovers(dir.path()).is_empty(), "left behind: {:?}", leftovers(dir.path()));
}

#[test]
fn truncated_download_is_an_error_and_keeps_nothing() {
    let archive = synthetic_archive();
    let half = archive[..archive.len() / 2].to_vec();
    let source = Source { url: serve(half, archive.len(), 1), md5: md5_hex(&archive) };
    let dir = tempfile::tempdir().unwrap();
    let err = download::ensure_cifar10(dir.path(), true, &source).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DownloadError::Truncated { .. } | DownloadError::Fetch { .. }), "{msg}");
    assert!(leftovers(dir.path()).is_empty(), "left behind: {:?}", leftovers(dir.path()));
}

#[test]
fn unreachable_server_and_no_download_explain_what_to_do() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let source = Source { url: format!("http://127.0.0.1:{port}/x.tar.gz"), md5: "0".repeat(32) };
    let dir = tempfile::tempdir().unwrap();
    let err = download::ensure_cifar10(dir.path(), true, &source).unwrap_err();
    assert!(matches!(err, DownloadError::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("extract it into"), "{err}");
    let err = download::ensure_cifar10(dir.path(), false, &source).unwrap_err();
    assert!(matches!(err, DownloadError::NotFound { .. }), "{err}");
    assert!(leftovers(dir.path()).is_empty());
}

// ---------------------------------------------------------------- real data

/// Runs where CIFAR10_DIR points at the real data set (CI exports it when it is there).
#[test]
fn real_cifar10_has_the_documented_counts() {
    let Some(dir) = std::env::var_os("CIFAR10_DIR") else {
        common::skip_or_fail("CIFAR10_DIR is not set; the real-data checks did not run");
        return;
    };
    let data = cifar::load_dir(Path::new(&dir)).unwrap();
    assert_eq!(data.train_images.size()[0], 50_000);
    assert_eq!(data.test_images.size()[0], 10_000);
    let train_counts = data.train_labels.bincount::<Tensor>(None, 10);
    let test_counts = data.test_labels.bincount::<Tensor>(None, 10);
    assert!(train_counts.equal(&Tensor::full([10], 5_000, (Kind::Int64, Device::Cpu))), "{train_counts}");
    assert!(test_counts.equal(&Tensor::full([10], 1_000, (Kind::Int64, Device::Cpu))), "{test_counts}");
    let s = split::train_valid_split(50_000, 0.1, 1, SplitRng::Numpy).unwrap();
    assert_eq!((s.train.len(), s.valid.len()), (45_000, 5_000));
}

/// The fused CPU pipeline (gather, flip, normalise, resize in one kernel) against the same steps
/// as libtorch ops, in both layouts, with repeated and out-of-order indices.
#[test]
fn fused_cpu_pipeline_matches_libtorch_ops() {
    let images = Tensor::randint(256, [10, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let indices = [7i64, 0, 3, 3, 9, 1];
    let flips = [true, false, true, false, false, true];
    let (scale, shift) = ([0.02f32, 0.019, 0.0195], [-2.43f32, -2.42, -2.22]);
    let idx = Tensor::from_slice(&indices);
    let flip_mask = Tensor::from_slice(&flips).view([-1, 1, 1, 1]);
    let xs = images.index_select(0, &idx).to_kind(Kind::Float);
    let xs = xs.flip([3]).where_self(&flip_mask, &xs);
    let xs = xs * Tensor::from_slice(&scale).view([1, 3, 1, 1]) + Tensor::from_slice(&shift).view([1, 3, 1, 1]);
    for size in [227i64, 32, 45] {
        let want = xs.upsample_bilinear2d([size, size], false, None, None);
        for channels_last in [false, true] {
            let got = tch_alexnet::data::resize::gather_normalise_resize_cpu(
                &images,
                &indices,
                Some(&flips),
                (&scale, &shift),
                size,
                channels_last,
            )
            .unwrap();
            assert_eq!(got.size(), want.size());
            let diff = common::max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "size {size}, channels_last {channels_last}: max diff {diff}");
            assert_eq!(got.stride()[1] == 1, channels_last, "layout of {:?}", got.stride());
        }
    }
    // Preprocess takes the same path for a batch drawn from a split.
    let pre = Preprocess::new(&stats_spec(0.5, 0.25, 227), Device::Cpu, true).unwrap();
    let flips_t = Tensor::from_slice(&flips);
    let gathered = pre.apply_gathered(&images, &idx, Some(&flips_t), None);
    let direct = pre.apply(&images.index_select(0, &idx), Some(&flips_t));
    assert!(gathered.equal(&direct), "apply_gathered and apply differ");
}

/// Degenerate batches through both CPU kernels, in both layouts: an empty batch is an empty
/// result (as in libtorch), images without pixels and output sizes below 1 are errors (libtorch
/// refuses them too), an absurd size is an allocation error. Before the checks, these read
/// through a null pointer or out of bounds (`taps` wrapped `0 - 1` in release builds); run it
/// with `--release` as well.
#[test]
fn resize_kernels_refuse_images_without_pixels_and_return_empty_batches() {
    use tch_alexnet::data::resize::{gather_normalise_resize_cpu, upsample_bilinear_cpu, ResizeError};
    let floats = |shape: &[i64]| Tensor::ones(shape, (Kind::Float, Device::Cpu));
    let bytes = |shape: &[i64]| Tensor::ones(shape, (Kind::Uint8, Device::Cpu));
    let gather = |images: &Tensor, indices: &[i64], size, channels_last| {
        let c = images.size().get(1).copied().unwrap_or(0).max(0) as usize;
        let (scale, shift) = (vec![1.0f32; c], vec![0.0f32; c]);
        gather_normalise_resize_cpu(images, indices, None, (&scale, &shift), size, channels_last)
    };
    for channels_last in [false, true] {
        let empty = upsample_bilinear_cpu(&floats(&[0, 3, 32, 32]), 227, channels_last).expect("empty batch");
        assert_eq!(empty.size(), [0, 3, 227, 227]);
        for images in [bytes(&[0, 3, 32, 32]), bytes(&[4, 3, 32, 32])] {
            let empty = gather(&images, &[], 227, channels_last).expect("no indices");
            assert_eq!(empty.size(), [0, 3, 227, 227]);
        }
        for shape in [[2i64, 3, 0, 32], [2, 3, 32, 0], [2, 0, 32, 32], [0, 3, 0, 0], [1, 1, 0, 1]] {
            let no_pixels = ResizeError::NoPixels(shape.to_vec());
            assert_eq!(upsample_bilinear_cpu(&floats(&shape), 5, channels_last).unwrap_err(), no_pixels);
            let indices: Vec<i64> = (0..shape[0]).collect();
            assert_eq!(gather(&bytes(&shape), &indices, 5, channels_last).unwrap_err(), no_pixels);
        }
        for size in [0, -1, i64::MIN] {
            let error = upsample_bilinear_cpu(&floats(&[2, 3, 4, 4]), size, channels_last).unwrap_err();
            assert_eq!(error, ResizeError::BadSize(size));
            assert_eq!(
                gather(&bytes(&[2, 3, 4, 4]), &[1], size, channels_last).unwrap_err(),
                ResizeError::BadSize(size)
            );
        }
        let error = upsample_bilinear_cpu(&floats(&[1, 3, 2, 2]), 1 << 40, channels_last).unwrap_err();
        assert!(matches!(error, ResizeError::Alloc { .. }), "{error}");
        let error = upsample_bilinear_cpu(&floats(&[3, 32, 32]), 5, channels_last).unwrap_err();
        assert_eq!(error, ResizeError::NotFourDimensional(vec![3, 32, 32]));
        assert!(error.to_string().contains("[N, C, H, W]"), "{error}");
    }
    let message = upsample_bilinear_cpu(&floats(&[2, 3, 0, 32]), 5, false).unwrap_err().to_string();
    assert!(message.contains("[2, 3, 0, 32] have no pixels"), "{message}");
}

/// One-pixel axes, in and out, against libtorch: every tap of such an axis is pixel 0.
#[test]
fn resize_kernels_handle_one_pixel_axes() {
    use tch_alexnet::data::resize::{gather_normalise_resize_cpu, upsample_bilinear_cpu};
    for (n, c, h, w, s) in
        [(2i64, 3i64, 1i64, 1i64, 5i64), (1, 1, 1, 7, 1), (2, 3, 5, 4, 1), (1, 3, 32, 32, 1), (1, 2, 1, 1, 1)]
    {
        let xs = Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu));
        let want = xs.upsample_bilinear2d([s, s], false, None, None);
        let images = Tensor::randint(256, [n, c, h, w], (Kind::Uint8, Device::Cpu));
        let want_gathered = images.to_kind(Kind::Float).upsample_bilinear2d([s, s], false, None, None);
        let (scale, shift) = (vec![1.0f32; c as usize], vec![0.0f32; c as usize]);
        let indices: Vec<i64> = (0..n).collect();
        for channels_last in [false, true] {
            let got = upsample_bilinear_cpu(&xs, s, channels_last).unwrap();
            let diff = common::max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "[{n},{c},{h},{w}] → {s} (channels_last {channels_last}): max diff {diff}");
            let got = gather_normalise_resize_cpu(&images, &indices, None, (&scale, &shift), s, channels_last).unwrap();
            let diff = common::max_abs_diff(&got, &want_gathered);
            assert!(diff < 1e-3, "gathered [{n},{c},{h},{w}] → {s} (channels_last {channels_last}): max diff {diff}");
        }
    }
}

/// The CPU resize kernel against libtorch's `upsample_bilinear2d(align_corners = false)`, in
/// both layouts and for several shapes (odd sizes, one row, down- and upsampling).
#[test]
fn cpu_resize_kernel_matches_libtorch() {
    for (n, c, h, w, s) in
        [(5i64, 3i64, 32i64, 32i64, 227i64), (1, 1, 1, 7, 9), (3, 2, 17, 9, 40), (2, 3, 32, 32, 32), (2, 3, 32, 32, 20)]
    {
        let xs = Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu));
        let want = xs.upsample_bilinear2d([s, s], false, None, None);
        for channels_last in [false, true] {
            let got = tch_alexnet::data::resize::upsample_bilinear_cpu(&xs, s, channels_last).unwrap();
            assert_eq!(got.size(), want.size());
            let diff = common::max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "[{n},{c},{h},{w}] → {s} (channels_last {channels_last}): max diff {diff}");
            if channels_last {
                assert_eq!(got.stride()[1], 1, "channels-last strides expected, got {:?}", got.stride());
            } else {
                assert!(got.is_contiguous(), "NCHW strides expected, got {:?}", got.stride());
            }
        }
    }
}
