//! An image-classification data set in memory, whatever its source: the form every data set
//! takes before the split, the batches and the trainer see it (CIFAR-10, CIFAR-100, or a
//! user's own images).

use tch::{Device, Tensor};

/// Training and test images with their labels, on one device.
///
/// Images are `uint8 [N, C, H, W]` (any channel count and size; the transforms turn them into
/// the model's float input per batch), labels `int64 [N]` in `0..num_classes`.
#[derive(Debug)]
pub struct ImageDataset {
    /// What the data set is called in messages and `config.json` (`CIFAR-10`).
    pub name: String,
    pub train_images: Tensor,
    pub train_labels: Tensor,
    pub test_images: Tensor,
    pub test_labels: Tensor,
    pub num_classes: i64,
    /// One name per class, in label order.
    pub class_names: Vec<String>,
    /// Size and hash of each file read, in load order: what `config.json` records so that a
    /// resumed run can tell whether its data changed.
    pub fingerprint: Vec<FileFingerprint>,
}

impl ImageDataset {
    /// Moves the whole data set to `device` once, so that a batch costs only indexing there.
    pub fn to_device(&self, device: Device) -> ImageDataset {
        ImageDataset {
            name: self.name.clone(),
            train_images: self.train_images.to_device(device),
            train_labels: self.train_labels.to_device(device),
            test_images: self.test_images.to_device(device),
            test_labels: self.test_labels.to_device(device),
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Number of training images (before the train/validation split).
    pub fn train_len(&self) -> usize {
        self.train_labels.size()[0] as usize
    }

    /// Number of test images.
    pub fn test_len(&self) -> usize {
        self.test_labels.size()[0] as usize
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [i64; 3] {
        let size = self.train_images.size();
        [size[1], size[2], size[3]]
    }
}

/// One data file as a run saw it: its name, size and XXH3-64 hash (about 10 GB/s, so the
/// 184 MB of CIFAR-10 cost some 20 ms to hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileFingerprint {
    pub file: String,
    pub bytes: u64,
    pub xxh3: String,
}

impl FileFingerprint {
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        Self {
            file: name.to_string(),
            bytes: bytes.len() as u64,
            xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)),
        }
    }
}
