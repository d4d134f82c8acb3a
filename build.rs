//! Link settings that tch's own build script cannot pass on to our binaries.
//!
//! - An rpath to `$LIBTORCH/lib`, so that examples, tests and benchmarks run without
//!   `LD_LIBRARY_PATH`.
//! - `--no-as-needed` before libtorch's CUDA library: our code calls no symbol of
//!   `libtorch_cuda.so` directly, so the linker would otherwise drop it and
//!   `tch::Cuda::is_available()` would be false on a GPU machine.
//! - `src/ffi/*.cpp`, compiled against libtorch's headers, for what tch cannot do: select bf16
//!   for CUDA autocast, drop or set a gradient, switch oneDNN off, and the optimizers' tensor
//!   operations that tch binds without their scalar argument (`src/ffi/mod.rs`).
//! - `src/ffi/c10d.cpp`, the binding of libtorch's c10d for `src/distributed/`, in a build of
//!   its own: with `-DUSE_C10D_GLOO` only when gloo's headers are found, in `$GLOO_INCLUDE_DIR`
//!   or `/usr/include` (Debian's `libgloo-dev`, which `scripts/setup` installs; the PyTorch
//!   wheel ships none). Without them the crate still builds, and creating a Gloo process group
//!   fails with a message that says so.
//! - `src/ffi/nccl.cpp` (ProcessGroupNCCL), in the same archive, only where `libtorch_cuda.so`,
//!   `nccl.h` (`$NCCL_INCLUDE_DIR`, or the wheel's `nvidia/nccl/include`) and the CUDA
//!   toolkit's headers (`$CUDA_HOME/include`, the wheel's `nvidia/cu13/include` once
//!   `scripts/setup` has added NVIDIA's `nvidia-cuda-crt` to it, `/usr/local/cuda/include`: the
//!   wheel's CUDA runtime package lacks `crt/host_config.h`) are all there, and only if it compiles
//!   (`TCH_ALEXNET_NO_NCCL=1` skips it); otherwise NCCL is left out with a cargo warning, and
//!   creating a NCCL process group fails with a message.
//! - For crates that depend on this one: the link settings above that a program needs (the
//!   rpath and libtorch's CUDA library) as the `links` metadata `link_args`, which their build
//!   scripts read as `DEP_TCH_ALEXNET_LINK_ARGS` (tab-separated `-C link-arg`s; empty where
//!   there are none): a library's `rustc-link-arg` applies to its own targets only
//!   (`templates/dependent-crate/build.rs` passes them on).
//! - The versions the binary is built with, for `config.json` (`src/versions.rs`): tch's from
//!   `Cargo.lock` (Cargo writes it before any build script runs; a dependency cannot see its
//!   dependencies' `CARGO_PKG_VERSION`), libtorch's from its headers.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    record_tch_version();
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        // torch-sys reports a missing libtorch itself, with its own message.
        pass_link_args(&[]);
        return;
    };
    // The project's `.libtorch` is a link into a shared cache: resolve it so the rpath
    // names the real folder and stays valid whatever happens to the link.
    let libtorch = PathBuf::from(&libtorch);
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    record_libtorch_version(&libtorch);
    let lib = libtorch.join("lib");
    println!("cargo:rerun-if-changed={}", lib.display());
    const FFI_SOURCES: [&str; 4] =
        ["src/ffi/autocast.cpp", "src/ffi/grad.cpp", "src/ffi/onednn.cpp", "src/ffi/optim.cpp"];
    for source in FFI_SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // The same ABI flag torch-sys compiles its own C++ with.
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .files(FFI_SOURCES)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .warnings(false)
        .compile("tch_alexnet_ffi");
    build_c10d(&libtorch, &include, &cxx11_abi);
    let mut link_args = Vec::new();
    if target_os == "linux" || target_os == "macos" {
        link_args.push(format!("-Wl,-rpath,{}", lib.display()));
    }
    if target_os == "linux" {
        link_args.push("-Wl,--no-as-needed".to_string());
        if lib.join("libtorch_cuda.so").exists() {
            link_args.push(format!("-L{}", lib.display()));
            link_args.push("-ltorch_cuda".to_string());
        }
    }
    for arg in &link_args {
        println!("cargo:rustc-link-arg={arg}");
    }
    pass_link_args(&link_args);
}

/// Hands `link_args` to the build scripts of the crates that depend on this one directly, as
/// `DEP_TCH_ALEXNET_LINK_ARGS` (the `links` key in `Cargo.toml`), tab-separated: a value is one
/// line, and a path may hold spaces.
fn pass_link_args(link_args: &[String]) {
    println!("cargo:link_args={}", link_args.join("\t"));
}

/// Compiles `src/ffi/c10d.cpp` (and `src/ffi/nccl.cpp` where it can), apart from the other
/// shims: they need headers and defines of their own, and may be left without a backend.
fn build_c10d(libtorch: &Path, include: &Path, cxx11_abi: &str) {
    for var in ["GLOO_INCLUDE_DIR", "NCCL_INCLUDE_DIR", "CUDA_HOME", "TCH_ALEXNET_NO_NCCL"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for source in ["src/ffi/c10d.cpp", "src/ffi/nccl.cpp"] {
        println!("cargo:rerun-if-changed={source}");
    }
    let base = || {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .include(include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi)
            .warnings(false);
        build
    };
    let mut c10d = base();
    c10d.file("src/ffi/c10d.cpp");
    match find_gloo_include() {
        Some(dir) => {
            // Rerun when libgloo-dev is removed or updated.
            println!("cargo:rerun-if-changed={}", dir.join("gloo/config.h").display());
            c10d.include(&dir).define("USE_C10D_GLOO", None);
        }
        None => {
            // Rerun when libgloo-dev is installed (it adds /usr/include/gloo), so that
            // `scripts/setup` + `cargo build` is all it takes. Naming the missing config.h
            // instead would rerun this script on every build.
            println!("cargo:rerun-if-changed=/usr/include");
            println!(
                "cargo:warning=gloo headers not found (in $GLOO_INCLUDE_DIR or /usr/include/gloo): distributed \
                 training over Gloo is unavailable in this build (install libgloo-dev, e.g. scripts/setup does it, \
                 and rebuild)"
            );
        }
    }
    // One archive for both: c10d.cpp calls into nccl.cpp, and two archives would depend on
    // the order the linker sees them in.
    if let Some(objects) = build_nccl(libtorch, &base) {
        c10d.objects(objects).define("TCH_ALEXNET_HAVE_NCCL", None);
    }
    c10d.compile("tch_alexnet_c10d");
}

/// The folder that holds `gloo/config.h`.
fn find_gloo_include() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("GLOO_INCLUDE_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from("/usr/include"));
    candidates.into_iter().find(|dir| dir.join("gloo/config.h").is_file())
}

/// Compiles `src/ffi/nccl.cpp` when everything it needs is there: its object files.
fn build_nccl(libtorch: &Path, base: &dyn Fn() -> cc::Build) -> Option<Vec<PathBuf>> {
    if std::env::var_os("TCH_ALEXNET_NO_NCCL").is_some_and(|v| v == "1") {
        return None;
    }
    if !libtorch.join("lib/libtorch_cuda.so").exists() {
        return None;
    }
    // The wheel's libtorch is `site-packages/torch`; NVIDIA's wheels are beside it.
    let site_packages = libtorch.parent().map(Path::to_path_buf).unwrap_or_default();
    let env_dir = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let nccl = env_dir("NCCL_INCLUDE_DIR")
        .into_iter()
        .chain([site_packages.join("nvidia/nccl/include"), PathBuf::from("/usr/include")])
        .find(|dir| dir.join("nccl.h").is_file());
    // ProcessGroupNCCL's headers include the CUDA runtime's, which need the toolkit's crt/.
    // scripts/setup adds them to the wheel's own headers (nvidia-cuda-crt).
    let cuda = env_dir("CUDA_HOME")
        .map(|home| home.join("include"))
        .into_iter()
        .chain([site_packages.join("nvidia/cu13/include"), PathBuf::from("/usr/local/cuda/include")])
        .find(|dir| dir.join("crt/host_config.h").is_file());
    let (Some(nccl), Some(cuda)) = (nccl, cuda) else {
        return None;
    };
    let mut build = base();
    build.file("src/ffi/nccl.cpp").define("USE_C10D_NCCL", None).include(&nccl);
    // The wheel's own CUDA headers (cu13, or cuda_runtime for CUDA 12) come first: they are the
    // ones libtorch was built with; the toolkit only fills in what they lack.
    for runtime in ["nvidia/cu13/include", "nvidia/cuda_runtime/include"] {
        let dir = site_packages.join(runtime);
        if dir.is_dir() {
            build.include(dir);
        }
    }
    build.include(&cuda);
    match build.try_compile_intermediates() {
        Ok(objects) => Some(objects),
        Err(error) => {
            println!("cargo:warning=src/ffi/nccl.cpp did not compile, so this build has no NCCL: {error}");
            None
        }
    }
}

/// Passes tch's version, as `Cargo.lock` pins it, to the crate (`TCH_ALEXNET_BUILT_WITH_TCH`).
fn record_tch_version() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    // The lock file is the workspace's: here, or in a folder above when this crate is a member.
    let Some(lock) = manifest_dir.ancestors().map(|d| d.join("Cargo.lock")).find(|p| p.is_file()) else {
        return;
    };
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    if let Some(version) = locked_version(&text, "tch") {
        println!("cargo:rustc-env=TCH_ALEXNET_BUILT_WITH_TCH={version}");
    }
}

/// The version of package `name` in a `Cargo.lock` text (its `[[package]]` entry's `name`
/// line is followed by its `version` line).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let name_line = format!("name = \"{name}\"");
    let mut lines = lock.lines().map(str::trim);
    lines.by_ref().find(|line| *line == name_line)?;
    let version = lines.next()?.strip_prefix("version = \"")?.strip_suffix('"')?;
    Some(version.to_string())
}

/// Passes the version of the libtorch compiled against (`TCH_ALEXNET_BUILT_WITH_LIBTORCH`):
/// `TORCH_VERSION_{MAJOR,MINOR,PATCH}` of its headers (`torch/headeronly/version.h` from 2.9,
/// `torch/version.h` before), else its `build-version` file.
fn record_libtorch_version(libtorch: &Path) {
    let headers = ["include/torch/headeronly/version.h", "include/torch/version.h"].map(|h| libtorch.join(h));
    let from_headers = headers.iter().find_map(|h| {
        let text = std::fs::read_to_string(h).ok()?;
        let number = |part: &str| {
            let prefix = format!("#define TORCH_VERSION_{part} ");
            text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<u32>().ok())
        };
        Some(format!("{}.{}.{}", number("MAJOR")?, number("MINOR")?, number("PATCH")?))
    });
    let from_file = || {
        let text = std::fs::read_to_string(libtorch.join("build-version")).ok()?;
        text.trim().split('+').next().filter(|v| !v.is_empty()).map(str::to_string)
    };
    if let Some(version) = from_headers.or_else(from_file) {
        println!("cargo:rustc-env=TCH_ALEXNET_BUILT_WITH_LIBTORCH={version}");
    }
}
