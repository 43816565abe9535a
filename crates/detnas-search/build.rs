//! Bakes libtorch's library folder into the binary's rpath (train feature), so `cargo run`, `cargo test`
//! and a bare binary find libtorch without `LD_LIBRARY_PATH` (which still overrides it).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
