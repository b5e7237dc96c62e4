//! `input::parse` on any text, and the Livy request built from what it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spark_activity_worker::input::{self, InvalidInput};
use spark_activity_worker::livy::CreateBatch;

const DEFAULT_FILE: &str = "local:///usr/lib/spark/examples/jars/spark-examples.jar";

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let input = match input::parse(&raw) {
        Ok(input) => input,
        Err(InvalidInput(msg)) => {
            assert!(!msg.is_empty(), "a rejection without a reason: {raw:?}");
            return;
        }
    };
    if let Some((host, port)) = &input.livy {
        assert!(*port >= 1, "port 0 accepted: {raw:?}");
        assert!(
            !host.is_empty() && host.trim() == host && host.to_ascii_lowercase() == *host,
            "host {host:?} not trimmed and lower-cased: {raw:?}"
        );
    }
    if let Some(name) = &input.job.name {
        assert!(name.chars().count() <= 200, "a name over 200 characters");
    }

    let job = &input.job;
    let name = "job-0123456789abcdef".to_owned();
    let with_default = job
        .to_request(name.clone(), Some(DEFAULT_FILE))
        .expect("a default file makes every accepted job a request");
    assert_eq!(
        with_default.file,
        job.file.as_deref().unwrap_or(DEFAULT_FILE)
    );
    assert_eq!(with_default.name, name);
    assert_eq!(
        job.to_request(name, None).is_ok(),
        job.file.is_some(),
        "without a default file, only a job with File is a request"
    );

    // What goes to Livy reads back as the same request.
    let body = serde_json::to_vec(&with_default).expect("a request serializes");
    let back: CreateBatch = serde_json::from_slice(&body).expect("a request reads back");
    assert_eq!(back, with_default);
});
