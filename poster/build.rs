//! Embeds libtorch's directory as an rpath so this crate's tests run with no environment set
//! (docs/architecture.md, "libtorch at run time").

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
