//! Embeds the git revision for `--version` (`SPARK_ACTIVITY_WORKER_GIT_REV` overrides it, for
//! builds from a source tarball).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SPARK_ACTIVITY_WORKER_GIT_REV");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let rev = std::env::var("SPARK_ACTIVITY_WORKER_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SPARK_ACTIVITY_WORKER_GIT_REV={rev}");
}
