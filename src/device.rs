//! Choosing the device from `--device` (`auto`, `cpu`, `cuda`, `cuda:N`), with a clear error
//! when the requested GPU is not there.

use tch::{Cuda, Device};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`: use auto, cpu, cuda or cuda:N")]
    Unknown(String),
    #[error("device `{requested}` requested, but {available}")]
    Unavailable { requested: String, available: String },
}

/// Parses and checks a device name against the GPUs libtorch can see.
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    let name = name.trim().to_ascii_lowercase();
    let count = || if Cuda::is_available() { Cuda::device_count() } else { 0 };
    let cuda = |index: usize| {
        let n = count();
        if (index as i64) < n {
            Ok(Device::Cuda(index))
        } else {
            let available = match n {
                0 => "no CUDA device is available (no GPU, no driver, or a CPU-only libtorch)".to_string(),
                1 => "only cuda:0 exists".to_string(),
                n => format!("only cuda:0 … cuda:{} exist", n - 1),
            };
            Err(DeviceError::Unavailable { requested: name.clone(), available })
        }
    };
    match name.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(DeviceError::Unknown(name.clone())),
        },
    }
}

/// The name `parse_device` accepts for `device`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}
