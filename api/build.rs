//! Rebuilds the crate when a dashboard file changes, since `include_dir!` embeds
//! the directory without telling cargo which files it read.

fn main() {
    println!("cargo:rerun-if-changed=../dashboards/web");
}
