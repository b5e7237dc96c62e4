//! Livy's replies: batches and log pages on success, error bodies of any shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spark_activity_worker::livy::{self, Batch, BatchState, LogPage};
use spark_activity_worker_fuzz::assert_message;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = livy::parse_reply::<Batch>(data) {
        let state = BatchState::parse(&batch.state);
        assert_eq!(state.as_str(), batch.state, "a state does not read back");
        assert_eq!(
            state.is_terminal(),
            ["success", "dead", "killed", "error"].contains(&batch.state.as_str())
        );
    }
    let _ = livy::parse_reply::<LogPage>(data);

    let body = String::from_utf8_lossy(data);
    assert_message(&livy::error_message(&body), &body);
});
