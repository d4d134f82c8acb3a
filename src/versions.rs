//! What this binary was built against and the libtorch it runs with, for `config.json` and
//! the benchmark's report. The same sources build against other libtorch and tch versions
//! (`scripts/build-for-torch-2.11`), and a binary may load another libtorch than the one it was
//! built against (`LD_LIBRARY_PATH`), so none of this is a literal.
//!
//! - tch's version is read from `Cargo.lock` by `build.rs` (Cargo writes the lock file before
//!   any build script runs), libtorch's from its headers (`TORCH_VERSION_*`).
//! - At run time libtorch has no C entry point that gives its version (`TORCH_VERSION` is a
//!   header macro, compiled in); so the loaded `libtorch_cpu` is found among the process's
//!   mappings (`/proc/self/maps`), and its version read beside it: `build-version` in a
//!   libtorch archive, `version.py` in a PyTorch wheel.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The tch crate this binary was built with (from `Cargo.lock`), or `"unknown"`.
pub fn tch_built_with() -> &'static str {
    option_env!("TCH_ALEXNET_BUILT_WITH_TCH").unwrap_or("unknown")
}

/// The libtorch whose headers this binary was compiled against, or `"unknown"`.
pub fn libtorch_built_against() -> &'static str {
    option_env!("TCH_ALEXNET_BUILT_WITH_LIBTORCH").unwrap_or("unknown")
}

/// The libtorch this process has loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedLibtorch {
    /// The `libtorch_cpu` shared library, as mapped (symbolic links resolved).
    pub path: PathBuf,
    /// Its version, from the files beside it; `None` where they say nothing.
    pub version: Option<String>,
}

/// The `libtorch_cpu` this process runs with, where the platform says (Linux); `None`
/// elsewhere or when none is mapped.
pub fn loaded_libtorch() -> Option<LoadedLibtorch> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let path = libtorch_cpu_in_maps(&maps)?;
    let version = path.parent().and_then(Path::parent).and_then(version_beside);
    Some(LoadedLibtorch { path, version })
}

/// The path of the first mapping of `libtorch_cpu.so` (any suffix) in a `/proc/PID/maps` text.
fn libtorch_cpu_in_maps(maps: &str) -> Option<PathBuf> {
    maps.lines()
        // The path is the sixth field; it may contain spaces, so take the rest from its `/`.
        .filter_map(|line| line.find(" /").map(|at| &line[at + 1..]))
        .find(|path| path.rsplit('/').next().is_some_and(|name| name.starts_with("libtorch_cpu.so")))
        .map(PathBuf::from)
}

/// The version a libtorch installation (the folder above `lib/`) states: a libtorch archive's
/// `build-version` (`2.13.0+cpu`), or a wheel's `version.py` (`__version__ = '2.13.0+cu130'`).
pub fn version_beside(root: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        let version = text.trim();
        if !version.is_empty() {
            return Some(version.to_string());
        }
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix("__version__")?.trim_start().strip_prefix('=')?.trim();
        let unquoted = value.trim_matches(|c| c == '\'' || c == '"');
        (unquoted.len() + 2 == value.len()).then(|| unquoted.to_string())
    })
}

/// One line for reports: `tch 0.26.0, libtorch 2.13.0 (runs with 2.13.0+cu130)`.
pub fn summary() -> String {
    let runs_with = match loaded_libtorch() {
        Some(LoadedLibtorch { version: Some(v), .. }) => format!(" (runs with {v})"),
        Some(LoadedLibtorch { path, version: None }) => format!(" (runs with {})", path.display()),
        None => String::new(),
    };
    format!("tch {}, libtorch {}{runs_with}", tch_built_with(), libtorch_built_against())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libtorch_cpu_in_maps_and_reads_versions_beside_it() {
        let maps = "7f0000-7f1000 r--p 00000000 08:01 12 /usr/lib/libc.so.6\n\
                    7f2000-7f3000 r-xp 00001000 08:01 34 /opt/my torch/lib/libtorch_cpu.so\n";
        assert_eq!(libtorch_cpu_in_maps(maps), Some(PathBuf::from("/opt/my torch/lib/libtorch_cpu.so")));
        assert_eq!(libtorch_cpu_in_maps("7f2000-7f3000 r-xp 0 08:01 34 /x/libtorch_cuda.so\n"), None);

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(version_beside(dir.path()), None);
        std::fs::write(dir.path().join("version.py"), "__all__ = []\n__version__ = '2.11.0+cu128'\n").unwrap();
        assert_eq!(version_beside(dir.path()).as_deref(), Some("2.11.0+cu128"));
        std::fs::write(dir.path().join("build-version"), "2.13.0+cpu\n").unwrap();
        assert_eq!(version_beside(dir.path()).as_deref(), Some("2.13.0+cpu"));
    }

    /// The build script found both versions (a test binary links libtorch as the programs do).
    #[test]
    fn the_build_recorded_both_versions_and_libtorch_is_found_at_run_time() {
        for version in [tch_built_with(), libtorch_built_against()] {
            assert!(
                version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
                "{version}"
            );
        }
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        let loaded = loaded_libtorch().expect("libtorch_cpu is mapped");
        let version = loaded.version.expect("a version beside the loaded libtorch");
        assert!(version.starts_with(libtorch_built_against()), "{version} vs {}", libtorch_built_against());
    }
}
