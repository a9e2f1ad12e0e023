//! The original driver's actuator (docs/reference/limiter.md §1.4), kept for side-by-side
//! benchmarks only: per *event* (every D-Bus signal) the raw percent is averaged
//! `0.2·new + 0.8·old`, and `ceil(average)` is written whenever the average moved more than 1
//! point from the last written value. The daemon does not use it.

use super::policy::{Decision, Target};
use super::strategy::{PercentOfRated, Setting};

const NEW_WEIGHT: f64 = 0.2;
const WRITE_THRESHOLD_POINTS: f64 = 1.0;

#[derive(Clone, Debug)]
pub struct ReferenceSmoother {
    rated_w: f64,
    percent: PercentOfRated,
    average: f64,
    written: u16,
    writes: u64,
}

impl ReferenceSmoother {
    /// Starts as after the original's start-up, at full power.
    pub fn new(rated_w: f64, percent: PercentOfRated) -> Self {
        Self {
            rated_w,
            percent,
            average: f64::from(percent.max),
            written: percent.max,
            writes: 0,
        }
    }

    /// One event with the decision it produced; returns the setting written, if any
    /// (the original assumed its writes succeeded).
    pub fn on_event(&mut self, decision: &Decision) -> Option<Setting> {
        let (min, max) = (f64::from(self.percent.min), f64::from(self.percent.max));
        let raw = match decision.target {
            Target::Hold => {
                // PV offline: the next limit starts from 100 %.
                self.average = max;
                return None;
            }
            // The original had no fail-safe and wrote nothing when not configured.
            Target::Release | Target::FailSafe => return None,
            Target::FullPower => max,
            Target::Limit(w) => (100.0 * w / self.rated_w).clamp(min, max),
        };
        if raw.is_nan() {
            return None;
        }
        self.average = NEW_WEIGHT * raw + (1.0 - NEW_WEIGHT) * self.average;
        if (self.average - f64::from(self.written)).abs() <= WRITE_THRESHOLD_POINTS {
            return None;
        }
        let value = self.average.ceil().clamp(min, max) as u16;
        self.written = value;
        self.writes = self.writes.saturating_add(1);
        Some(Setting(value))
    }

    pub fn writes(&self) -> u64 {
        self.writes
    }

    pub fn applied(&self) -> Setting {
        Setting(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Status;

    const PERCENT: PercentOfRated = PercentOfRated { min: 2, max: 100 };

    fn limit(watts: f64) -> Decision {
        Decision::new(Target::Limit(watts), Status::Limiting)
    }

    #[test]
    fn one_step_causes_a_train_of_writes() {
        let mut r = ReferenceSmoother::new(4200.0, PERCENT);
        let written: Vec<u16> = (0..40)
            .filter_map(|_| r.on_event(&limit(2100.0)).map(|s| s.0))
            .collect();
        // 100 → 50 %: the average is 50 + 50·0.8ⁿ after n events; ceil(average) is written each
        // time the average has moved more than 1 point below the last written value.
        assert_eq!(
            written,
            [90, 82, 76, 71, 67, 64, 61, 59, 57, 56, 55, 54, 53, 52, 51]
        );
        assert_eq!(r.writes(), 15);
    }

    #[test]
    fn pv_offline_resets_the_average_and_release_writes_nothing() {
        let mut r = ReferenceSmoother::new(4200.0, PERCENT);
        for _ in 0..40 {
            r.on_event(&limit(2100.0));
        }
        let writes = r.writes();
        assert_eq!(
            r.on_event(&Decision::new(Target::Release, Status::NotConfigured)),
            None
        );
        assert_eq!(
            r.on_event(&Decision::new(Target::Hold, Status::PvOffline)),
            None
        );
        assert_eq!(r.writes(), writes);
        // From a reset average of 100, a 50 % limit first writes 90 again.
        assert_eq!(r.on_event(&limit(2100.0)), Some(Setting(90)));
    }

    #[test]
    fn small_moves_are_not_written() {
        let mut r = ReferenceSmoother::new(4200.0, PERCENT);
        assert_eq!(r.on_event(&limit(4000.0)), None); // 95.2 % → average 99.0
        assert_eq!(r.on_event(&limit(f64::NAN)), None);
        assert_eq!(r.writes(), 0);
    }
}
