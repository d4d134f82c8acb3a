//! Synthetic CIFAR-format data sets for tests and benchmarks (no network needed).
//!
//! Each image is a flat colour that depends on its class, plus seeded noise, so that a model
//! can learn the labels quickly; labels cycle through the ten classes in a shuffled order.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::cifar::{self, IMAGE_BYTES, RECORDS_PER_FILE};

/// The colour of class `c`: distinct, far apart RGB values.
pub fn class_colour(c: u8) -> [u8; 3] {
    const COLOURS: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [128, 128, 0],
        [0, 0, 128],
    ];
    COLOURS[c as usize % 10]
}

/// One synthetic image of class `label`: the class colour plus uniform noise of ±`noise`.
pub fn image(label: u8, noise: u8, rng: &mut impl Rng) -> Vec<u8> {
    let colour = class_colour(label);
    let mut pixels = Vec::with_capacity(IMAGE_BYTES);
    for plane in colour {
        for _ in 0..1024 {
            let n = rng.gen_range(-(noise as i16)..=noise as i16);
            pixels.push((plane as i16 + n).clamp(0, 255) as u8);
        }
    }
    pixels
}

/// Writes the six CIFAR-10 batch files (full size, 10,000 records each) into `dir`.
pub fn write_dataset(dir: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in cifar::TRAIN_FILES.iter().chain([&cifar::TEST_FILE]) {
        let records: Vec<(u8, Vec<u8>)> = (0..RECORDS_PER_FILE)
            .map(|_| {
                let label = rng.gen_range(0..10u8);
                (label, image(label, 40, &mut rng))
            })
            .collect();
        cifar::write_records(&dir.join(name), records)?;
    }
    std::fs::write(dir.join("batches.meta.txt"), cifar::CLASS_NAMES.join("\n") + "\n")
}
