//! Retry delays: capped exponential backoff with jitter, so many tasks retrying against one
//! recovering Livy or Step Functions endpoint do not arrive in lockstep.

use std::time::Duration;

use backon::BackoffBuilder;

/// An endless series of delays from `min` doubling up to `max`, each jittered.
pub fn delays(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max.max(min))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let d: Vec<Duration> = delays(Duration::from_millis(100), Duration::from_secs(2))
            .take(20)
            .collect();
        assert_eq!(d.len(), 20, "the series never ends");
        // Jitter adds up to one more delay on top, so the cap is at most doubled.
        assert!(
            d.iter()
                .all(|x| *x >= Duration::from_millis(100) && *x <= Duration::from_secs(4)),
            "{d:?}"
        );
        assert!(d[10] >= Duration::from_secs(2), "{d:?}");
    }
}
