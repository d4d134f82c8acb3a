//! Link settings that tch's own build script cannot pass on to our binaries.
//!
//! - An rpath to `$LIBTORCH/lib`, so that examples, tests and benchmarks run without
//!   `LD_LIBRARY_PATH`.
//! - `--no-as-needed` before libtorch's CUDA library: our code calls no symbol of
//!   `libtorch_cuda.so` directly, so the linker would otherwise drop it and
//!   `tch::Cuda::is_available()` would be false on a GPU machine.
//! - `src/ffi/*.cpp`, compiled against libtorch's headers, for what tch cannot do: select bf16
//!   for CUDA autocast, drop a gradient instead of zeroing it, switch oneDNN off (`src/ffi.rs`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        // torch-sys reports a missing libtorch itself, with its own message.
        return;
    };
    // The project's `.libtorch` is a link into a shared cache: resolve it so the rpath
    // names the real folder and stays valid whatever happens to the link.
    let libtorch = PathBuf::from(&libtorch);
    let libtorch = libtorch.canonicalize().unwrap_or(libtorch);
    let lib = libtorch.join("lib");
    println!("cargo:rerun-if-changed={}", lib.display());
    const FFI_SOURCES: [&str; 3] = ["src/ffi/autocast.cpp", "src/ffi/grad.cpp", "src/ffi/onednn.cpp"];
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
    if target_os == "linux" {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-L{}", lib.display());
            println!("cargo:rustc-link-arg=-ltorch_cuda");
        }
    } else if target_os == "macos" {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
