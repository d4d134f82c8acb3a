//! Synthetic CIFAR-format data sets for tests and benchmarks (no network needed).
//!
//! Each image is a pattern of stripes plus seeded noise. Two classes share each of five
//! colours: class `2k` has colour `k` in horizontal stripes, class `2k + 1` the same colour in
//! vertical ones. A model must learn the spatial structure, not only the colour, to tell a
//! class from its sibling; so an image transposed on its way into the model (rows for columns)
//! is taken for its sibling, and one with its channels swapped (BGR for RGB) for a class of
//! another colour (every colour is warm, with R well above B, and none is another's BGR).
//! Labels are drawn at random.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::cifar::{self, IMAGE_BYTES, RECORDS_PER_FILE};
use crate::data::cifar100::{self, Record};

/// Stripes across an image: four light and four dark bands.
const STRIPES: f64 = 4.0;
/// The brightness of a dark band relative to the colour of a light one.
const DARK: f64 = 0.35;

/// The colour of class `c` (shared with its sibling `c ^ 1`).
pub fn class_colour(c: u8) -> [u8; 3] {
    const COLOURS: [[u8; 3]; 5] = [[220, 40, 40], [240, 150, 20], [230, 230, 40], [140, 230, 20], [240, 60, 160]];
    COLOURS[(c as usize % 10) / 2]
}

/// Whether the stripes of class `c` are vertical (odd classes) or horizontal (even ones).
pub fn class_is_vertical(c: u8) -> bool {
    c % 2 == 1
}

/// Pixel (`x`, `y`) of a `width`×`height` image of class `label`, without noise; `phase` in
/// [0, 1) shifts the stripes by that fraction of a band pair. The stripes scale with the image,
/// so any size scaled to 32×32 shows the same pattern.
pub fn pixel(label: u8, x: u32, y: u32, width: u32, height: u32, phase: f64) -> [u8; 3] {
    let (along, size) = if class_is_vertical(label) { (x, width) } else { (y, height) };
    let position = (along as f64 + 0.5) / size.max(1) as f64 * STRIPES + phase;
    let light = position.fract() < 0.5;
    class_colour(label).map(|v| if light { v } else { (v as f64 * DARK).round() as u8 })
}

/// An RGB image (interleaved, row by row) of class `label`, `width`×`height`, for image files.
pub fn rgb_image(label: u8, width: u32, height: u32, phase: f64) -> Vec<u8> {
    (0..height).flat_map(|y| (0..width).flat_map(move |x| pixel(label, x, y, width, height, phase))).collect()
}

/// One 32×32 CIFAR record's image of class `label` (planar: R, G, B planes), with a random
/// phase and uniform noise of ±`noise` on every value.
pub fn image(label: u8, noise: u8, rng: &mut impl Rng) -> Vec<u8> {
    let phase = rng.gen_range(0.0..1.0);
    let mut pixels = vec![0u8; IMAGE_BYTES];
    for y in 0..32 {
        for x in 0..32 {
            for (c, v) in pixel(label, x, y, 32, 32, phase).into_iter().enumerate() {
                let n = rng.gen_range(-(noise as i16)..=noise as i16);
                pixels[c * 1024 + (y * 32 + x) as usize] = (v as i16 + n).clamp(0, 255) as u8;
            }
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
                (label, image(label, 30, &mut rng))
            })
            .collect();
        cifar::write_records(&dir.join(name), records)?;
    }
    std::fs::write(dir.join("batches.meta.txt"), cifar::CLASS_NAMES.join("\n") + "\n")
}

/// Writes CIFAR-100's `train.bin` and `test.bin` (full size: 50,000 and 10,000 records) and
/// both class-name files into `dir`. Fine label `f` draws the pattern of CIFAR-10 class
/// `f % 10` and has coarse label `f / 5` (the release groups its classes otherwise; the reader
/// does not care).
pub fn write_cifar100_dataset(dir: &Path, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, count) in
        [(cifar100::TRAIN_FILE, cifar100::TRAIN_RECORDS), (cifar100::TEST_FILE, cifar100::TEST_RECORDS)]
    {
        let records: Vec<Record> = (0..count)
            .map(|_| {
                let fine = rng.gen_range(0..100u8);
                Record { coarse: fine / 5, fine, pixels: image(fine % 10, 30, &mut rng) }
            })
            .collect();
        cifar100::write_records(&dir.join(name), records)?;
    }
    let names = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}_{i}\n")).collect::<String>();
    std::fs::write(dir.join(cifar100::FINE_NAMES_FILE), names("fine", 100) + "\n")?;
    std::fs::write(dir.join(cifar100::COARSE_NAMES_FILE), names("coarse", 20) + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two properties the learning checks rely on: a transposed image is its sibling's,
    /// and a BGR image is of no class's colour.
    #[test]
    fn transposing_gives_the_sibling_and_no_colour_is_another_ones_bgr() {
        for label in 0..10u8 {
            for (x, y) in [(0, 0), (3, 17), (31, 5)] {
                assert_eq!(pixel(label, x, y, 32, 32, 0.3), pixel(label ^ 1, y, x, 32, 32, 0.3));
            }
            let [r, g, b] = class_colour(label);
            for other in 0..10u8 {
                let [r2, g2, b2] = class_colour(other);
                let distance =
                    (b as i32 - r2 as i32).abs() + (g as i32 - g2 as i32).abs() + (r as i32 - b2 as i32).abs();
                assert!(distance > 150, "class {label}'s BGR is close to class {other}'s colour");
            }
        }
        // Light and dark bands in equal parts, along the class's direction only.
        let row: Vec<[u8; 3]> = (0..32).map(|x| pixel(1, x, 0, 32, 32, 0.0)).collect();
        assert_eq!(row.iter().filter(|p| **p == class_colour(1)).count(), 16);
        assert!((0..32).all(|x| pixel(0, x, 0, 32, 32, 0.0) == pixel(0, 0, 0, 32, 32, 0.0)));
    }
}
