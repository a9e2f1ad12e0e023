//! The inverter's expected AC output between PV readings (issue 14): a model of how it follows
//! the limits written to it, corrected by each PV reading as it comes.
//!
//! On a paced bus the inverter is read every few hundred milliseconds at best, and every limit
//! write takes one of those reads' slots, so the demand estimate `grid + pv` cannot rely on a PV
//! value read beside each grid reading. Instead the output is modelled:
//! - a new limit acts after a **dead time** (default 0.3 s) from its write;
//! - the output then moves towards `min(cap, available)` at a **ramp** (default 1000 W/s, the
//!   same down unless configured);
//! - each PV reading re-anchors the trajectory at its own time. A reading is interpreted against
//!   the ramp: one that lies on the modelled ramp (or above it) says nothing about the sun, so the
//!   ramp goes on towards the cap; only an output *below* what any ramp towards the cap explains
//!   (by more than a tolerance for timing jitter) is sun-limited, and then the available power
//!   is taken to be that reading until a reading says otherwise.
//!
//! Pure: no clock of its own, every instant is passed in. Fixed-size state (a handful of cap
//! changes), no allocation.

use std::time::{Duration, Instant};

use super::policy::Reading;

/// How the inverter follows a new limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlantModel {
    /// From a limit's write to the moment the output starts to move.
    pub dead_time: Duration,
    /// How fast the output rises towards a higher cap (W/s).
    pub ramp_up_w_per_s: f64,
    /// How fast the output falls towards a lower cap (W/s).
    pub ramp_down_w_per_s: f64,
    /// A reading this far (W) below the modelled output, with no ramp under way, is
    /// sun-limited; noise and rounding stay within it.
    pub tolerance_w: f64,
    /// Timing uncertainty of a reading on a ramp (its `at` against the moment the inverter
    /// sampled, the dead time's spread): mid-ramp the tolerance grows by this × the ramp.
    pub timing_slack: Duration,
}

impl Default for PlantModel {
    fn default() -> Self {
        Self {
            dead_time: Duration::from_millis(300),
            ramp_up_w_per_s: 1000.0,
            ramp_down_w_per_s: 1000.0,
            tolerance_w: 40.0,
            timing_slack: Duration::from_millis(150),
        }
    }
}

/// A limit written to the inverter: its cap in watts and the write's instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct CapChange {
    pub cap_w: f64,
    pub at: Instant,
}

/// Writes remembered that may not have acted yet at the latest reading (a write acts a dead time
/// later; more than this many within one dead time are not expected at ≥ 1 write per slot).
const PENDING: usize = 4;

/// The expected output, anchored at the latest PV reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct OutputEstimate {
    model: PlantModel,
    /// The latest PV reading and the one before (for instants between them).
    anchor: Option<Reading>,
    before: Option<Reading>,
    /// The cap in force at the anchor (∞: unknown or not limited).
    base_cap_w: f64,
    /// Writes not yet acted at the anchor, oldest first.
    pending: [Option<CapChange>; PENDING],
    /// What the sun allows, when a reading showed the output held below its cap (∞: unknown,
    /// at least the output).
    available_w: f64,
}

impl Default for OutputEstimate {
    fn default() -> Self {
        Self::new(PlantModel::default())
    }
}

impl OutputEstimate {
    pub(super) fn new(model: PlantModel) -> Self {
        Self {
            model,
            anchor: None,
            before: None,
            base_cap_w: f64::INFINITY,
            pending: [None; PENDING],
            available_w: f64::INFINITY,
        }
    }

    pub(super) fn set_model(&mut self, model: PlantModel) {
        self.model = model;
    }

    pub(super) fn model(&self) -> PlantModel {
        self.model
    }

    /// The available power, when the latest readings showed the output sun-limited.
    #[cfg(test)]
    pub(super) fn available_w(&self) -> Option<f64> {
        self.available_w.is_finite().then_some(self.available_w)
    }

    /// A limit of `cap_w` was written at `at`.
    pub(super) fn on_write(&mut self, cap_w: f64, at: Instant) {
        let change = CapChange { cap_w, at };
        if let Some(slot) = self.pending.iter_mut().find(|c| c.is_none()) {
            *slot = Some(change);
            return;
        }
        // Full: the oldest is taken as acted (it is the furthest from mattering).
        if let Some(oldest) = self.pending[0] {
            self.base_cap_w = oldest.cap_w;
        }
        self.pending.rotate_left(1);
        self.pending[PENDING - 1] = Some(change);
    }

    /// The inverter holds a cap of `cap_w` since long enough to have acted (read back at a
    /// set-up); `None`: unknown (lost, or found changed).
    pub(super) fn set_cap(&mut self, cap_w: Option<f64>) {
        self.base_cap_w = cap_w.filter(|w| w.is_finite()).unwrap_or(f64::INFINITY);
        self.pending = [None; PENDING];
    }

    /// The inverter stopped answering: nothing is known until it is read again.
    pub(super) fn reset(&mut self) {
        *self = Self::new(self.model);
    }

    /// A PV reading: re-anchors the trajectory and, if the output is lower than any ramp towards
    /// the cap explains, takes the sun to be the limit. Readings older than the anchor, or not
    /// finite, are ignored.
    pub(super) fn on_reading(&mut self, reading: Reading) {
        if !reading.value.is_finite() || self.anchor.is_some_and(|a| reading.at <= a.at) {
            return;
        }
        if let Some(anchor) = self.anchor {
            let at = reading.at;
            let unlimited = self.trajectory(anchor, f64::INFINITY, at);
            let cap = self.cap_at(at);
            let reachable = unlimited.min(cap);
            let moving = self.is_moving(anchor, at);
            let slack = if moving {
                self.model.ramp_up_w_per_s.max(self.model.ramp_down_w_per_s)
                    * self.model.timing_slack.as_secs_f64()
            } else {
                0.0
            };
            self.available_w = if reading.value < reachable - self.model.tolerance_w - slack {
                // Below the ramp and the cap: the sun is the limit now.
                reading.value
            } else {
                // On the ramp or at the cap: the sun allows at least this much.
                f64::INFINITY
            };
        } else {
            // A first reading: taken as settled, so below the cap it is the sun's.
            let below_cap = reading.value < self.cap_at(reading.at) - self.model.tolerance_w;
            self.available_w = if below_cap {
                reading.value
            } else {
                f64::INFINITY
            };
        }
        self.fold_acted(reading.at);
        self.before = self.anchor;
        self.anchor = Some(reading);
    }

    /// The expected output at `at` (e.g. a grid reading's instant), as a reading that keeps the
    /// latest PV reading's `at` (its freshness is that of the data behind it); `None` before
    /// the first PV reading.
    pub(super) fn output_at(&self, at: Instant) -> Option<Reading> {
        let anchor = self.anchor?;
        let value = if at >= anchor.at {
            self.trajectory(anchor, self.available_w, at)
        } else {
            // Between the two latest readings: along the line joining them (the ramp between
            // two readings is as straight as the model can tell); before both: the older one.
            match self.before {
                Some(b) if at > b.at => {
                    let span = anchor.at.duration_since(b.at).as_secs_f64();
                    let into = at.duration_since(b.at).as_secs_f64();
                    b.value + (anchor.value - b.value) * into / span
                }
                Some(b) => b.value,
                None => anchor.value,
            }
        };
        Some(Reading::new(value.max(0.0), anchor.at))
    }

    /// Whether the latest reading already shows the effect of every write and the model
    /// expects no move from it at `at`: the next reading can only tell what the sun did.
    pub(super) fn settled(&self, at: Instant) -> bool {
        let Some(anchor) = self.anchor else {
            return false;
        };
        let acted = self
            .pending
            .iter()
            .flatten()
            .all(|c| c.at + self.model.dead_time <= anchor.at);
        acted && self.expects_no_move(at) && self.base_cap_w.is_finite()
    }

    /// Whether the model expects the output at `at` where the latest reading left it (within
    /// its tolerance): a value there is as good as a reading, not only as good as the model.
    pub(super) fn expects_no_move(&self, at: Instant) -> bool {
        self.anchor.is_some_and(|anchor| {
            self.output_at(at)
                .is_some_and(|r| (r.value - anchor.value).abs() <= self.model.tolerance_w)
        })
    }

    /// The cap in force at `at` (∞ when unknown).
    pub(super) fn cap_at(&self, at: Instant) -> f64 {
        let dead = self.model.dead_time;
        self.pending
            .iter()
            .flatten()
            .take_while(|c| c.at + dead <= at)
            .last()
            .map_or(self.base_cap_w, |c| c.cap_w)
    }

    /// Whether the output, with the sun no limit, would still be moving at `at`, or had moved
    /// within the timing slack before it (a reading there could be off the ramp by the slack).
    fn is_moving(&self, anchor: Reading, at: Instant) -> bool {
        let slack = self.model.timing_slack;
        let earlier = at.checked_sub(slack).unwrap_or(at).max(anchor.at);
        let a = self.trajectory(anchor, f64::INFINITY, earlier);
        let b = self.trajectory(anchor, f64::INFINITY, at);
        let c = self.trajectory(anchor, f64::INFINITY, at + slack);
        (a - b).abs() > 1.0 || (c - b).abs() > 1.0
    }

    /// The output at `at` ≥ the anchor's instant: from the anchor, towards `min(cap, available)`
    /// at the ramp, each pending write's cap acting a dead time after it.
    fn trajectory(&self, anchor: Reading, available_w: f64, at: Instant) -> f64 {
        let mut output = anchor.value;
        let mut t = anchor.at;
        let mut cap = self.base_cap_w;
        for change in self.pending.iter().flatten() {
            let acts = change.at + self.model.dead_time;
            if acts <= t {
                cap = change.cap_w;
                continue;
            }
            if acts >= at {
                break;
            }
            output = self.ramp(output, cap.min(available_w), acts.duration_since(t));
            t = acts;
            cap = change.cap_w;
        }
        if at > t {
            output = self.ramp(output, cap.min(available_w), at.duration_since(t));
        }
        output
    }

    /// `from` moved towards `target` for `dt` at the model's ramp.
    fn ramp(&self, from: f64, target: f64, dt: Duration) -> f64 {
        // No known cap nor sun limit: nothing to move towards, the reading stands.
        if !target.is_finite() {
            return from;
        }
        let dt = dt.as_secs_f64();
        if target >= from {
            (from + self.model.ramp_up_w_per_s * dt).min(target)
        } else {
            (from - self.model.ramp_down_w_per_s * dt).max(target)
        }
    }

    /// Writes acted by `at` become the base cap.
    fn fold_acted(&mut self, at: Instant) {
        let dead = self.model.dead_time;
        while let Some(first) = self.pending[0] {
            if first.at + dead > at {
                break;
            }
            self.base_cap_w = first.cap_w;
            self.pending.rotate_left(1);
            self.pending[PENDING - 1] = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(t: Instant, ms: u64) -> Instant {
        t + Duration::from_millis(ms)
    }

    fn value(e: &OutputEstimate, when: Instant) -> f64 {
        e.output_at(when).map_or(f64::NAN, |r| r.value)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// Steady at a cap of `cap` W, read at `cap` W at `t`.
    fn steady(cap: f64, t: Instant) -> OutputEstimate {
        let mut e = OutputEstimate::default();
        e.set_cap(Some(cap));
        e.on_reading(Reading::new(cap, t));
        e
    }

    #[test]
    fn nothing_before_the_first_reading() {
        let t = Instant::now();
        let mut e = OutputEstimate::default();
        assert_eq!(e.output_at(t), None);
        e.on_write(1000.0, t);
        assert_eq!(e.output_at(at(t, 500)), None);
    }

    #[test]
    fn a_raise_acts_after_the_dead_time_and_ramps_to_the_cap() {
        let t = Instant::now();
        let mut e = steady(1000.0, t);
        e.on_write(2000.0, at(t, 100));
        // Dead time 0.3 s: unchanged until 400 ms, then +1000 W/s until the cap.
        assert!(close(value(&e, at(t, 400)), 1000.0));
        assert!(close(value(&e, at(t, 900)), 1500.0));
        assert!(close(value(&e, at(t, 1400)), 2000.0));
        assert!(close(value(&e, at(t, 5000)), 2000.0));
        // The reading's own instant is kept (freshness).
        assert_eq!(e.output_at(at(t, 900)).map(|r| r.at), Some(t));
    }

    #[test]
    fn a_lowering_ramps_down_and_two_writes_act_in_turn() {
        let t = Instant::now();
        let mut e = steady(3000.0, t);
        e.on_write(1000.0, at(t, 0));
        e.on_write(2500.0, at(t, 200)); // acts at 500 ms
        assert!(close(value(&e, at(t, 300)), 3000.0));
        assert!(close(value(&e, at(t, 500)), 2800.0));
        // From 500 ms towards 2500 W.
        assert!(close(value(&e, at(t, 700)), 2600.0));
        assert!(close(value(&e, at(t, 2000)), 2500.0));
    }

    #[test]
    fn a_reading_mid_ramp_is_taken_as_a_point_on_the_ramp_not_the_final_value() {
        let t = Instant::now();
        let mut e = steady(1000.0, t);
        e.on_write(3000.0, at(t, 1000)); // acts at 1300 ms
        // Read at 1800 ms: 1500 W, as the model says (half a second into the ramp).
        e.on_reading(Reading::new(1500.0, at(t, 1800)));
        assert_eq!(
            e.available_w(),
            None,
            "a point on the ramp says nothing of the sun"
        );
        assert!(close(value(&e, at(t, 2300)), 2000.0));
        assert!(close(value(&e, at(t, 4000)), 3000.0));
        // A reading a little behind the ramp (the dead time was longer): still the ramp, from
        // the reading on.
        let mut late = steady(1000.0, t);
        late.on_write(3000.0, at(t, 1000));
        late.on_reading(Reading::new(1380.0, at(t, 1800)));
        assert_eq!(late.available_w(), None);
        assert!(close(value(&late, at(t, 2300)), 1880.0));
    }

    #[test]
    fn an_output_held_below_the_ramp_is_the_sun() {
        let t = Instant::now();
        let mut e = steady(1000.0, t);
        e.on_write(3000.0, at(t, 1000));
        // At 2300 ms the ramp would be at 2000 W; the output is 1300 W: a cloud.
        e.on_reading(Reading::new(1300.0, at(t, 2300)));
        assert_eq!(e.available_w(), Some(1300.0));
        assert!(close(value(&e, at(t, 4000)), 1300.0));
        // The sun brightens slowly: each reading below where a ramp would be is the sun's.
        e.on_reading(Reading::new(1900.0, at(t, 4000)));
        assert_eq!(e.available_w(), Some(1900.0));
        assert!(close(value(&e, at(t, 4500)), 1900.0));
        // A reading on the ramp from there towards the cap lifts the sun's limit.
        e.on_reading(Reading::new(2890.0, at(t, 5000)));
        assert_eq!(e.available_w(), None);
        assert!(close(value(&e, at(t, 5500)), 3000.0));
        // Steady sun-limited output with noise stays sun-limited (no ramp is invented).
        let mut s = steady(3000.0, t);
        s.on_reading(Reading::new(1800.0, at(t, 500)));
        for i in 1..20u64 {
            let noisy = 1800.0 + if i % 2 == 0 { 4.0 } else { -4.0 };
            s.on_reading(Reading::new(noisy, at(t, 500 + i * 800)));
            assert!(value(&s, at(t, 900 + i * 800)) < 1810.0, "i {i}");
        }
    }

    #[test]
    fn between_readings_the_line_joining_them_and_never_below_zero() {
        let t = Instant::now();
        let mut e = OutputEstimate::default();
        e.on_reading(Reading::new(1000.0, t));
        e.on_reading(Reading::new(1400.0, at(t, 400)));
        assert!(close(value(&e, at(t, 100)), 1100.0));
        assert!(close(value(&e, t - 100 * MS), 1000.0));
        // Older or non-finite readings change nothing.
        let before = e;
        e.on_reading(Reading::new(5.0, at(t, 300)));
        e.on_reading(Reading::new(f64::NAN, at(t, 900)));
        assert_eq!(e, before);
        let mut z = steady(500.0, t);
        z.on_write(-100.0, t);
        assert_eq!(value(&z, at(t, 5000)), 0.0);
    }

    #[test]
    fn an_unknown_cap_holds_the_last_reading_and_reset_forgets() {
        let t = Instant::now();
        let mut e = steady(2000.0, t);
        e.set_cap(None);
        assert!(close(value(&e, at(t, 3000)), 2000.0));
        e.reset();
        assert_eq!(e.output_at(t), None);
        assert_eq!(e.cap_at(t), f64::INFINITY);
    }

    #[test]
    fn many_writes_within_a_dead_time_do_not_overflow() {
        let t = Instant::now();
        let mut e = steady(4000.0, t);
        for i in 0..10u64 {
            e.on_write(4000.0 - 100.0 * i as f64, at(t, 10 * i));
        }
        assert!(close(e.cap_at(at(t, 1000)), 3100.0));
        assert!(value(&e, at(t, 10_000)) >= 3100.0 - 1e-6);
        e.on_reading(Reading::new(3100.0, at(t, 10_000)));
        assert!(close(value(&e, at(t, 11_000)), 3100.0));
    }

    #[test]
    fn settled_once_a_reading_shows_the_last_write_done() {
        let t = Instant::now();
        let mut e = steady(1000.0, t);
        assert!(e.settled(at(t, 100)));
        e.on_write(2000.0, at(t, 200));
        assert!(!e.settled(at(t, 300)), "a write not yet seen");
        e.on_reading(Reading::new(1500.0, at(t, 1000)));
        assert!(!e.settled(at(t, 1100)), "mid-ramp");
        e.on_reading(Reading::new(2000.0, at(t, 2000)));
        assert!(e.settled(at(t, 2100)));
        e.set_cap(None);
        assert!(!e.settled(at(t, 2100)), "cap unknown");
    }
}
