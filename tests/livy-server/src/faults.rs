//! Fault injection for the Livy routes, set through `POST /_control/faults`: a fraction of
//! requests fails with a bare-string error body, and every response can be delayed.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

/// The current fault settings; the default injects nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Fraction of requests, 0 to 1, answered with `error_status`.
    #[serde(default)]
    pub error_rate: f64,
    /// Status of injected errors; 500 when unset.
    pub error_status: Option<u16>,
    /// Delay added to every Livy-route response.
    #[serde(default)]
    pub latency_ms: u64,
}

impl Faults {
    /// The status to fail this request with, if the dice say so. `roll` is uniform in [0, 1).
    pub fn injected(&self, roll: f64) -> Option<StatusCode> {
        (roll < self.error_rate).then(|| {
            self.error_status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_status_decide_the_injected_error() {
        let none = Faults::default();
        assert_eq!(none.injected(0.0), None);
        let f: Faults =
            serde_json::from_str(r#"{"error_rate":0.5,"error_status":503}"#).expect("valid faults");
        assert_eq!(f.injected(0.2), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(f.injected(0.7), None);
        let all: Faults = serde_json::from_str(r#"{"error_rate":1}"#).expect("valid faults");
        assert_eq!(all.injected(0.999), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(serde_json::from_str::<Faults>(r#"{"rate":1}"#).is_err());
    }
}
