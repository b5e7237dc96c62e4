//! What the fuzz targets share: the promise every text quoted from a remote server keeps.

use spark_activity_worker::http::MAX_QUOTE;

/// `text` is fit for a log line or a task's cause: one line (no whitespace but the plain space:
/// no `\n`, `\r`, tab, form feed, NEL, U+2028, ...) and at most [`MAX_QUOTE`] characters plus the
/// `…` that marks a cut.
pub fn assert_quotable(text: &str, input: &str) {
    assert!(
        !text.chars().any(|c| c.is_whitespace() && c != ' '),
        "not one line: {text:?} (from {input:?})"
    );
    let chars = text.chars().count();
    assert!(
        chars <= MAX_QUOTE + 1,
        "{chars} characters, more than {} (from {input:?})",
        MAX_QUOTE + 1
    );
    if chars == MAX_QUOTE + 1 {
        assert!(text.ends_with('…'), "cut without the mark: {text:?}");
    }
}

/// A remote error message as the clients quote it: quotable and never empty.
pub fn assert_message(text: &str, input: &str) {
    assert!(!text.is_empty(), "empty message (from {input:?})");
    assert_quotable(text, input);
}
