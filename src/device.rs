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

/// The CPU's units for bf16 matrix products, which decide whether bf16 autocast (`--amp`) pays
/// on the CPU: oneDNN's bf16 kernels use AMX tiles or AVX-512-BF16's dot products, and without
/// either bf16 is converted to fp32 and back around fp32 arithmetic (slower than fp32 alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBf16 {
    /// AMX tiles (`amx_bf16`): Intel Xeon since Sapphire Rapids.
    Amx,
    /// AVX-512-BF16 dot products (`avx512_bf16`): AMD Zen 4 and later, Intel Cooper Lake.
    Avx512Bf16,
    /// Neither (or a system whose CPU flags this cannot read).
    None,
}

impl CpuBf16 {
    /// What the CPU of this machine has, from the flags in `/proc/cpuinfo` (Linux; elsewhere
    /// [`CpuBf16::None`]).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(&cpuinfo)
    }

    /// What the first `flags` line of a `/proc/cpuinfo` text lists.
    pub fn from_cpuinfo(cpuinfo: &str) -> Self {
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("flags").and_then(|rest| rest.trim_start().strip_prefix(':')))
            .map(|flags| flags.split_whitespace().collect())
            .unwrap_or_default();
        if flags.contains(&"amx_bf16") && flags.contains(&"amx_tile") {
            Self::Amx
        } else if flags.contains(&"avx512_bf16") {
            Self::Avx512Bf16
        } else {
            Self::None
        }
    }

    /// The units by their CPU flag, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Amx => "AMX (amx_bf16)",
            Self::Avx512Bf16 => "AVX-512-BF16 (avx512_bf16)",
            Self::None => "neither AMX nor AVX-512-BF16",
        }
    }
}

/// What a run on the CPU should know about bf16 at start-up: where the CPU has bf16 units and
/// `--amp` is off, a hint to turn it on; where it has none and `--amp` is on, a warning that
/// it will be slow. `None` on CUDA, and on the CPU when there is nothing to say beyond the
/// precision itself.
pub fn cpu_bf16_advice(device: Device, bf16: bool, units: CpuBf16) -> Option<String> {
    if device != Device::Cpu {
        return None;
    }
    match (bf16, units) {
        (true, CpuBf16::None) => Some(format!(
            "warning: --amp on a CPU with {}: bf16 autocast works but is emulated and slower than fp32 here",
            units.describe()
        )),
        (true, _) => Some(format!("bf16 autocast on the CPU's {}", units.describe())),
        (false, CpuBf16::None) => None,
        (false, _) => Some(format!(
            "this CPU has {}: --amp (bf16 autocast) trains and evaluates faster (README: \"bf16 on the CPU\")",
            units.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_units_come_from_the_flags_line() {
        let cpuinfo =
            |flags: &str| format!("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu {flags} sse\nbugs\t\t: amx_bf16\n");
        assert_eq!(CpuBf16::from_cpuinfo(&cpuinfo("avx512f amx_bf16 amx_tile avx512_bf16")), CpuBf16::Amx);
        assert_eq!(CpuBf16::from_cpuinfo(&cpuinfo("avx512f avx512_bf16")), CpuBf16::Avx512Bf16);
        assert_eq!(CpuBf16::from_cpuinfo(&cpuinfo("avx512f avx512_vnni")), CpuBf16::None);
        assert_eq!(CpuBf16::from_cpuinfo("no flags here"), CpuBf16::None);
    }

    #[test]
    fn bf16_advice_only_on_the_cpu() {
        assert_eq!(cpu_bf16_advice(Device::Cuda(0), true, CpuBf16::None), None);
        assert_eq!(cpu_bf16_advice(Device::Cpu, false, CpuBf16::None), None);
        assert!(cpu_bf16_advice(Device::Cpu, true, CpuBf16::None).unwrap().contains("slower"));
        assert!(cpu_bf16_advice(Device::Cpu, false, CpuBf16::Amx).unwrap().contains("--amp"));
        assert!(cpu_bf16_advice(Device::Cpu, true, CpuBf16::Avx512Bf16).unwrap().contains("AVX-512-BF16"));
    }
}
