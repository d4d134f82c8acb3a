//! Links this crate's programs as tch-alexnet links its own: with an rpath to libtorch, so that
//! they start without LD_LIBRARY_PATH, and with libtorch's CUDA library, so that tch sees the
//! GPU. A library's link arguments do not reach the programs that use it: tch-alexnet's build
//! script hands them over through its `links` key instead.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let args = std::env::var("DEP_TCH_ALEXNET_LINK_ARGS")
        .expect("DEP_TCH_ALEXNET_LINK_ARGS is unset: this crate must depend on tch-alexnet directly");
    for arg in args.split('\t').filter(|arg| !arg.is_empty()) {
        println!("cargo:rustc-link-arg={arg}");
    }
}
