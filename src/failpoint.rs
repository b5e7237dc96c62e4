//! Test hooks. With the `failpoints` feature, `hit(name)` acts when the comma-separated
//! `SPARK_ACTIVITY_WORKER_FAILPOINTS` names it; without the feature it compiles to nothing, so a
//! normal build exposes no way to make the worker misbehave.

/// Acts at the named point when the failpoint is enabled (feature `failpoints` only): a
/// `crash-*` point aborts the process on the spot (no destructor, no flush: like SIGKILL), any
/// other point panics.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let enabled = std::env::var("SPARK_ACTIVITY_WORKER_FAILPOINTS").unwrap_or_default();
    if enabled.split(',').any(|n| n.trim() == name) {
        if name.starts_with("crash-") {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
        panic!("failpoint {name}");
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// An I/O failpoint: with the `failpoints` feature, fails with an error while the file named by
/// `SPARK_ACTIVITY_WORKER_FAILPOINT_<NAME>` (upper-case, `-` as `_`) exists, so a test can turn a
/// failure on and off while the worker runs. Without the feature it always succeeds.
#[cfg(feature = "failpoints")]
pub fn io(name: &str) -> std::io::Result<()> {
    match std::env::var_os(io_variable(name)) {
        Some(path) if std::path::Path::new(&path).exists() => Err(std::io::Error::other(format!(
            "failpoint {name}: No space left on device"
        ))),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn io(_name: &str) -> std::io::Result<()> {
    Ok(())
}

/// A stalling failpoint: with the `failpoints` feature, blocks the calling thread while the file
/// named as for [`io`] exists, as a disk that does not finish a flush would. Without the feature
/// it returns at once.
#[cfg(feature = "failpoints")]
pub fn stall(name: &str) {
    let Some(path) = std::env::var_os(io_variable(name)) else {
        return;
    };
    while std::path::Path::new(&path).exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn stall(_name: &str) {}

#[cfg(feature = "failpoints")]
fn io_variable(name: &str) -> String {
    format!(
        "SPARK_ACTIVITY_WORKER_FAILPOINT_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}
