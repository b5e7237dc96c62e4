//! Fault injection, set through `POST /_control/faults`. For the Livy routes: a fraction of
//! requests fails with a bare-string error body, every response can be delayed, and the reply to
//! `POST /batches` can be delayed further or lost after the batch was created. For the RM routes:
//! a fraction of requests fails with a `RemoteException` body. Everything defaults to off.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

/// The current fault settings; the default injects nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Fraction of Livy requests, 0 to 1, answered with `error_status` before they run.
    #[serde(default)]
    pub error_rate: f64,
    /// Status of injected Livy errors; 500 when unset.
    pub error_status: Option<u16>,
    /// Delay added to every Livy-route response.
    #[serde(default)]
    pub latency_ms: u64,
    /// `POST /batches` runs (the batch is created) but the client gets a 503 instead.
    #[serde(default)]
    pub lose_post_responses: bool,
    /// Delay added to the reply of `POST /batches` only, after the batch was created.
    #[serde(default)]
    pub post_latency_ms: u64,
    /// Fraction of RM requests, 0 to 1, answered with `yarn_error_status`.
    #[serde(default)]
    pub yarn_error_rate: f64,
    /// Status of injected RM errors; 503 when unset.
    pub yarn_error_status: Option<u16>,
}

impl Faults {
    /// The status to fail this Livy request with, if the dice say so. `roll` is uniform in [0, 1).
    pub fn injected(&self, roll: f64) -> Option<StatusCode> {
        roll_status(roll, self.error_rate, self.error_status)
            .map(|s| s.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// The status to fail this RM request with, if the dice say so.
    pub fn yarn_injected(&self, roll: f64) -> Option<StatusCode> {
        roll_status(roll, self.yarn_error_rate, self.yarn_error_status)
            .map(|s| s.unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    pub fn post_latency(&self) -> Duration {
        Duration::from_millis(self.post_latency_ms)
    }
}

/// `Some(status)` when `roll` falls under `rate`; the inner `None` means "use the default".
fn roll_status(roll: f64, rate: f64, status: Option<u16>) -> Option<Option<StatusCode>> {
    (roll < rate).then(|| status.and_then(|s| StatusCode::from_u16(s).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_status_decide_the_injected_error() {
        let none = Faults::default();
        assert_eq!(none.injected(0.0), None);
        assert_eq!(none.yarn_injected(0.0), None);
        assert!(!none.lose_post_responses);
        let f: Faults =
            serde_json::from_str(r#"{"error_rate":0.5,"error_status":503}"#).expect("valid faults");
        assert_eq!(f.injected(0.2), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(f.injected(0.7), None);
        assert_eq!(f.yarn_injected(0.2), None);
        let all: Faults = serde_json::from_str(r#"{"error_rate":1}"#).expect("valid faults");
        assert_eq!(all.injected(0.999), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(serde_json::from_str::<Faults>(r#"{"rate":1}"#).is_err());
    }

    #[test]
    fn rm_faults_are_separate_and_default_to_503() {
        let f: Faults = serde_json::from_str(
            r#"{"yarn_error_rate":1,"lose_post_responses":true,"post_latency_ms":5}"#,
        )
        .expect("valid faults");
        assert_eq!(f.yarn_injected(0.5), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(f.injected(0.5), None);
        assert_eq!(f.post_latency(), Duration::from_millis(5));
        let f: Faults = serde_json::from_str(r#"{"yarn_error_rate":0.5,"yarn_error_status":500}"#)
            .expect("valid faults");
        assert_eq!(
            f.yarn_injected(0.1),
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        );
    }
}
