//! Whether a freshly read value may be published (issue 7).
//!
//! A CRC-valid frame can still carry nonsense: a meter booting answers zeros, a firmware glitch
//! gives 1e30 W, a counter steps back. Such values must not reach D-Bus (VRM graphs and the
//! limiter trust them), so every reading passes a [`Guard`] built from the model's rule table
//! (`Model::plausibility`, next to the register table in each device file), keyed by register:
//!
//! * a [`RuleKind::Range`] value outside the device's physical range is rejected and published
//!   invalid (fail safe, never fail stale);
//! * a [`RuleKind::Counter`] that goes backwards, or forward faster than the device's maximum
//!   power allows, is rejected and its last accepted value is published again, so an energy
//!   counter on D-Bus never goes backwards or to 0;
//! * non-finite values are always rejected; registers without a rule only get that check.
//!
//! Rejections are counted per quantity and logged once per episode: a warning at the first
//! rejection, an info line at the recovery, nothing per poll in between.
//!
//! Pure apart from the log lines; memory is fixed when the guard is built.

use std::time::Instant;

use crate::registers::{RegId, Register};

/// A limit: `fixed + per_rated_w × rated power (W)`. Growatt bounds scale with the unit's rated
/// power, which is only known after identification.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bound {
    pub fixed: f64,
    pub per_rated_w: f64,
}

impl Bound {
    pub(crate) const fn fixed(value: f64) -> Self {
        Bound {
            fixed: value,
            per_rated_w: 0.0,
        }
    }

    /// `factor × rated power`.
    pub(crate) const fn rated(factor: f64) -> Self {
        Bound {
            fixed: 0.0,
            per_rated_w: factor,
        }
    }

    /// The limit for a unit; `None` when it depends on a rated power that is not known, in which
    /// case it is not enforced (blanking a unit for want of a bound would be worse).
    pub(crate) fn resolve(self, rated_power_w: Option<f64>) -> Option<f64> {
        if self.per_rated_w == 0.0 {
            return Some(self.fixed);
        }
        rated_power_w.map(|rated| self.fixed + self.per_rated_w * rated)
    }
}

/// kWh per second at `watts`: the rate of an energy counter at full power.
pub(super) const fn kwh_per_s(watts: f64) -> f64 {
    watts / 3_600_000.0
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RuleKind {
    /// An instantaneous value: accepted when `min ≤ value ≤ max`.
    Range { min: Bound, max: Bound },
    /// A monotonic total. The first reading is accepted when `0 ≤ value ≤ ceiling`; later ones
    /// must not go backwards and may rise by at most `max_rate_per_s × elapsed + slack` since the
    /// last accepted reading (`slack`: one count of the register's resolution, for rounding).
    Counter {
        ceiling: f64,
        max_rate_per_s: Bound,
        slack: f64,
    },
}

/// The rule for one register of a model's table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rule {
    pub reg: RegId,
    pub kind: RuleKind,
}

impl Rule {
    pub(crate) const fn range(reg: RegId, min: Bound, max: Bound) -> Self {
        Rule {
            reg,
            kind: RuleKind::Range { min, max },
        }
    }

    /// A range with fixed bounds.
    pub(crate) const fn between(reg: RegId, min: f64, max: f64) -> Self {
        Rule::range(reg, Bound::fixed(min), Bound::fixed(max))
    }

    pub(crate) const fn counter(
        reg: RegId,
        ceiling: f64,
        max_rate_per_s: Bound,
        slack: f64,
    ) -> Self {
        Rule {
            reg,
            kind: RuleKind::Counter {
                ceiling,
                max_rate_per_s,
                slack,
            },
        }
    }
}

/// Why a reading was rejected, for the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Rejection {
    NotFinite,
    OutOfRange { min: f64, max: f64 },
    Backwards { last: f64 },
    Jump { last: f64, max_step: f64 },
}

/// What one reading does to its quantity's episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Event {
    /// Accepted, as was the reading before (or first reading).
    Accepted,
    /// Rejected, and the reading before was accepted: an episode starts (logged at warn).
    EpisodeStarted(Rejection),
    /// Rejected during an episode (not logged).
    StillRejected,
    /// Accepted after an episode (logged at info).
    Recovered,
    /// The same reading (value and read time) as the previous check: the same answer again,
    /// nothing counted.
    Repeated,
}

/// Counters of one quantity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Readings rejected since the guard was built.
    pub rejections: u64,
    /// Runs of consecutive rejections (each logged once).
    pub episodes: u64,
    /// True while the latest reading was rejected.
    pub in_episode: bool,
    /// Rejections in the current (or last) episode, for the recovery log line.
    pub episode_rejections: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    stats: Stats,
    /// The last accepted counter reading and when it was first seen at that value.
    last: Option<(f64, Instant)>,
    /// The previous check: read time, value bits and the answer, so a caller may check the
    /// stored value of a register on every publish cycle without counting it again.
    previous: Option<(Instant, u64, Option<f64>)>,
}

/// Plausibility state of one unit. Keep it while the unit is lost and found again (same ident):
/// a new guard accepts any first counter reading.
#[derive(Debug)]
pub(crate) struct Guard {
    rules: &'static [Rule],
    /// The unit's register table, for the names in log lines.
    table: &'static [Register],
    /// For each row of `table`, the index of its rule in `rules` (and of its slot).
    rule_of: Vec<Option<usize>>,
    slots: Vec<Slot>,
    rated_power_w: Option<f64>,
    label: String,
}

impl Guard {
    /// A guard applying `rules` to the registers of `table` (a rule for a row the table does not
    /// have is ignored; of two rules for one register the first applies).
    pub(crate) fn new(rules: &'static [Rule], table: &'static [Register]) -> Self {
        let mut rule_of = vec![None; table.len()];
        for (i, rule) in rules.iter().enumerate() {
            if let Some(slot @ None) = rule_of.get_mut(rule.reg.row()) {
                *slot = Some(i);
            }
        }
        Guard {
            rules,
            table,
            rule_of,
            slots: vec![Slot::default(); rules.len()],
            rated_power_w: None,
            label: String::new(),
        }
    }

    /// The unit's rated power (W), for [`Bound::rated`] limits. A non-positive or non-finite
    /// value counts as unknown.
    pub(crate) fn with_rated_power(mut self, rated_power_w: Option<f64>) -> Self {
        self.rated_power_w = rated_power_w.filter(|w| w.is_finite() && *w > 0.0);
        self
    }

    /// The unit's name in log lines (e.g. its ident).
    pub(crate) fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    fn rule_index(&self, reg: RegId) -> Option<usize> {
        self.rule_of.get(reg.row()).copied().flatten()
    }

    /// The value to publish for a reading of `reg` taken at `now` (the read time, e.g.
    /// `RegisterMap::read_at`, not the publish time): the reading itself when plausible; for a
    /// rejected counter its last accepted value; otherwise `None` (publish invalid).
    /// Checking the same reading again (same value and read time) repeats the answer and counts
    /// nothing, so it may be called on every publish cycle with the stored value.
    pub(crate) fn check(&mut self, reg: impl Into<RegId>, value: f64, now: Instant) -> Option<f64> {
        let reg = reg.into();
        let (publish, event) = self.judge(reg, value, now);
        let name = self.table.get(reg.row()).map_or("?", |r| r.name);
        match event {
            Event::EpisodeStarted(why) => log::warn!(
                "{}: {name} = {value} rejected as implausible ({}); publishing {}",
                self.label,
                describe(why),
                publish.map_or_else(|| "invalid".to_string(), |v| v.to_string()),
            ),
            Event::Recovered => {
                let n = self.stats(reg).map_or(0, |s| s.episode_rejections);
                log::info!(
                    "{}: {name} plausible again ({value}) after {n} rejected readings",
                    self.label
                );
            }
            Event::Accepted | Event::StillRejected | Event::Repeated => {}
        }
        publish
    }

    /// [`Guard::check`] without the log line: the value to publish and the episode event.
    pub(crate) fn judge(
        &mut self,
        reg: impl Into<RegId>,
        value: f64,
        now: Instant,
    ) -> (Option<f64>, Event) {
        let rated = self.rated_power_w;
        let Some(i) = self.rule_index(reg.into()) else {
            // No rule: finiteness only, nothing to count against.
            return (value.is_finite().then_some(value), Event::Accepted);
        };
        let (rule, slot) = (&self.rules[i], &mut self.slots[i]);
        if let Some((at, bits, publish)) = slot.previous
            && at == now
            && bits == value.to_bits()
        {
            return (publish, Event::Repeated);
        }
        let verdict = if value.is_finite() {
            verdict(rule.kind, slot.last, value, now, rated)
        } else {
            Err(Rejection::NotFinite)
        };
        let stats = &mut slot.stats;
        let (publish, event) = match verdict {
            Ok(()) => {
                if matches!(rule.kind, RuleKind::Counter { .. })
                    && slot.last.is_none_or(|(last, _)| last != value)
                {
                    slot.last = Some((value, now));
                }
                let event = if stats.in_episode {
                    Event::Recovered
                } else {
                    Event::Accepted
                };
                stats.in_episode = false;
                (Some(value), event)
            }
            Err(why) => {
                stats.rejections = stats.rejections.saturating_add(1);
                let event = if stats.in_episode {
                    stats.episode_rejections = stats.episode_rejections.saturating_add(1);
                    Event::StillRejected
                } else {
                    stats.in_episode = true;
                    stats.episodes = stats.episodes.saturating_add(1);
                    stats.episode_rejections = 1;
                    Event::EpisodeStarted(why)
                };
                (slot.last.map(|(last, _)| last), event)
            }
        };
        slot.previous = Some((now, value.to_bits(), publish));
        (publish, event)
    }

    /// What the last check of `reg` said to publish: `Some(None)` = invalid, `None` when the
    /// register has no rule or was not checked yet.
    #[cfg(test)]
    fn current(&self, reg: impl Into<RegId>) -> Option<Option<f64>> {
        let i = self.rule_index(reg.into())?;
        self.slots[i].previous.map(|(_, _, publish)| publish)
    }

    /// Rejected readings of `reg` so far (0 for a register without a rule).
    #[cfg(test)]
    fn rejections(&self, reg: impl Into<RegId>) -> u64 {
        self.stats(reg).map_or(0, |s| s.rejections)
    }

    /// The counters of `reg`; `None` for a register without a rule.
    pub(crate) fn stats(&self, reg: impl Into<RegId>) -> Option<Stats> {
        Some(self.slots[self.rule_index(reg.into())?].stats)
    }
}

fn verdict(
    kind: RuleKind,
    last: Option<(f64, Instant)>,
    value: f64,
    now: Instant,
    rated: Option<f64>,
) -> Result<(), Rejection> {
    match kind {
        RuleKind::Range { min, max } => {
            let min = min.resolve(rated).unwrap_or(f64::NEG_INFINITY);
            let max = max.resolve(rated).unwrap_or(f64::INFINITY);
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(Rejection::OutOfRange { min, max })
            }
        }
        RuleKind::Counter {
            ceiling,
            max_rate_per_s,
            slack,
        } => {
            if !(0.0..=ceiling).contains(&value) {
                return Err(Rejection::OutOfRange {
                    min: 0.0,
                    max: ceiling,
                });
            }
            let Some((last, at)) = last else {
                return Ok(());
            };
            if value < last {
                return Err(Rejection::Backwards { last });
            }
            // A first reading of 0 is a meter that has not counted yet or one still booting: no
            // baseline for the jump check, or a booting meter would freeze its counter at 0.
            if last == 0.0 {
                return Ok(());
            }
            let Some(rate) = max_rate_per_s.resolve(rated) else {
                return Ok(());
            };
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            let max_step = rate * elapsed + slack;
            if value - last <= max_step {
                Ok(())
            } else {
                Err(Rejection::Jump { last, max_step })
            }
        }
    }
}

fn describe(why: Rejection) -> String {
    match why {
        Rejection::NotFinite => "not a finite number".to_string(),
        Rejection::OutOfRange { min, max } => format!("outside {min}..{max}"),
        Rejection::Backwards { last } => format!("counter went back from {last}"),
        Rejection::Jump { last, max_step } => {
            format!("counter rose from {last} by more than {max_step:.3} possible")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{Access, Kind, Refresh};
    use std::time::Duration;

    const VOLTAGE: RegId = RegId::new(0);
    const AC_POWER: RegId = RegId::new(1);
    const ENERGY: RegId = RegId::new(2);
    const TEMPERATURE: RegId = RegId::new(3);

    const fn register(name: &'static str, addr: u16) -> Register {
        Register::new(name, Access::Input, addr, Kind::F32, 1.0, Refresh::Fast)
    }

    static TABLE: [Register; 4] = [
        register("voltage", 0),
        register("ac_power", 2),
        register("energy", 4),
        register("temperature", 6),
    ];

    static RULES: [Rule; 3] = [
        Rule::between(VOLTAGE, 0.0, 300.0),
        Rule::range(AC_POWER, Bound::fixed(-50.0), Bound::rated(1.1)),
        // 3.6 kW: 0.001 kWh per second.
        Rule::counter(ENERGY, 1e7, Bound::fixed(kwh_per_s(3600.0)), 0.01),
    ];

    fn guard() -> Guard {
        Guard::new(&RULES, &TABLE)
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn range_accepts_inside_and_rejects_outside_and_non_finite() {
        let mut g = guard();
        let t = Instant::now();
        assert_eq!(g.check(VOLTAGE, 0.0, t), Some(0.0));
        assert_eq!(g.check(VOLTAGE, 300.0, t), Some(300.0));
        assert_eq!(g.check(VOLTAGE, 230.4, t), Some(230.4));
        assert_eq!(g.check(VOLTAGE, 300.1, t), None);
        assert_eq!(g.check(VOLTAGE, -0.1, t), None);
        assert_eq!(g.check(VOLTAGE, f64::NAN, t), None);
        assert_eq!(g.check(VOLTAGE, f64::INFINITY, t), None);
        assert_eq!(g.rejections(VOLTAGE), 4);
    }

    #[test]
    fn rated_bounds_apply_only_with_a_rated_power() {
        let t = Instant::now();
        let mut g = guard().with_rated_power(Some(4200.0));
        assert_eq!(g.check(AC_POWER, 4620.0, t), Some(4620.0));
        assert_eq!(g.check(AC_POWER, 4621.0, t), None);
        assert_eq!(g.check(AC_POWER, -50.0, t), Some(-50.0));
        assert_eq!(g.check(AC_POWER, -51.0, t), None);
        // Unknown rated power: the rated upper bound is not enforced, the fixed lower one is.
        let mut g = guard().with_rated_power(Some(f64::NAN));
        assert_eq!(g.check(AC_POWER, 1e6, t), Some(1e6));
        assert_eq!(g.check(AC_POWER, -51.0, t), None);
        assert_eq!(g.check(AC_POWER, f64::NAN, t), None);
    }

    #[test]
    fn the_same_reading_checked_again_is_answered_the_same_and_counted_once() {
        let t0 = Instant::now();
        let mut g = guard();
        assert_eq!(g.current(VOLTAGE), None, "not checked yet");
        assert_eq!(
            g.judge(VOLTAGE, 999.0, t0),
            (
                None,
                Event::EpisodeStarted(Rejection::OutOfRange {
                    min: 0.0,
                    max: 300.0
                })
            )
        );
        assert_eq!(g.judge(VOLTAGE, 999.0, t0), (None, Event::Repeated));
        assert_eq!(g.judge(VOLTAGE, f64::NAN, t0).1, Event::StillRejected);
        assert_eq!(g.judge(VOLTAGE, f64::NAN, t0), (None, Event::Repeated));
        assert_eq!(g.current(VOLTAGE), Some(None));
        assert_eq!(g.rejections(VOLTAGE), 2);
        // A new read of the same value is a new reading.
        assert_eq!(
            g.judge(VOLTAGE, f64::NAN, secs(t0, 1)).1,
            Event::StillRejected
        );
        assert_eq!(g.check(VOLTAGE, 231.0, secs(t0, 2)), Some(231.0));
        assert_eq!(
            g.judge(VOLTAGE, 231.0, secs(t0, 2)),
            (Some(231.0), Event::Repeated)
        );
        assert_eq!(g.current(VOLTAGE), Some(Some(231.0)));
        assert_eq!(g.stats(VOLTAGE).map(|s| s.rejections), Some(3));
        assert_eq!(g.current(TEMPERATURE), None, "no rule");
    }

    #[test]
    fn registers_without_a_rule_only_need_to_be_finite() {
        let mut g = guard();
        let t = Instant::now();
        assert_eq!(g.check(TEMPERATURE, -1e9, t), Some(-1e9));
        assert_eq!(g.check(TEMPERATURE, f64::NAN, t), None);
        assert_eq!(g.rejections(TEMPERATURE), 0);
        assert_eq!(g.stats(TEMPERATURE), None);
    }

    #[test]
    fn first_counter_reading_is_accepted_within_its_ceiling() {
        let t = Instant::now();
        let mut g = guard();
        assert_eq!(g.check(ENERGY, 12345.6, t), Some(12345.6));
        assert_eq!(g.rejections(ENERGY), 0);
        let mut g = guard();
        assert_eq!(g.check(ENERGY, 2e7, t), None, "above the ceiling");
        assert_eq!(g.check(ENERGY, -1.0, t), None, "negative");
        assert_eq!(g.check(ENERGY, f64::NAN, t), None);
        assert_eq!(g.rejections(ENERGY), 3);
    }

    #[test]
    fn counter_going_backwards_or_to_zero_keeps_the_last_accepted_value() {
        let t0 = Instant::now();
        let mut g = guard();
        assert_eq!(g.check(ENERGY, 100.0, t0), Some(100.0));
        assert_eq!(g.check(ENERGY, 99.99, secs(t0, 1)), Some(100.0));
        assert_eq!(g.check(ENERGY, 0.0, secs(t0, 2)), Some(100.0));
        assert_eq!(g.check(ENERGY, f64::NAN, secs(t0, 3)), Some(100.0));
        assert_eq!(g.rejections(ENERGY), 3);
        assert_eq!(g.check(ENERGY, 100.0, secs(t0, 4)), Some(100.0));
        assert_eq!(g.check(ENERGY, 100.01, secs(t0, 5)), Some(100.01));
    }

    #[test]
    fn counter_jump_is_bounded_by_max_power_times_elapsed_plus_slack() {
        let t0 = Instant::now();
        let mut g = guard();
        assert_eq!(g.check(ENERGY, 100.0, t0), Some(100.0));
        // 10 s at 3.6 kW = 0.01 kWh, plus 0.01 slack.
        assert_eq!(g.check(ENERGY, 100.021, secs(t0, 10)), Some(100.0));
        assert_eq!(g.stats(ENERGY).map(|s| s.in_episode), Some(true));
        assert_eq!(g.check(ENERGY, 100.019, secs(t0, 10)), Some(100.019));
        // Elapsed counts from the last accepted reading, so a long gap allows a long climb.
        assert_eq!(g.check(ENERGY, 101.0, secs(t0, 1000)), Some(101.0));
        assert_eq!(g.rejections(ENERGY), 1);
    }

    #[test]
    fn repeated_equal_readings_do_not_shrink_the_allowed_climb() {
        let t0 = Instant::now();
        let mut g = guard();
        assert_eq!(g.check(ENERGY, 100.0, t0), Some(100.0));
        assert_eq!(g.check(ENERGY, 100.0, secs(t0, 99)), Some(100.0));
        assert_eq!(g.check(ENERGY, 100.1, secs(t0, 100)), Some(100.1));
    }

    #[test]
    fn a_zero_baseline_does_not_freeze_the_counter() {
        let t0 = Instant::now();
        let mut g = guard();
        assert_eq!(g.check(ENERGY, 0.0, t0), Some(0.0));
        assert_eq!(g.check(ENERGY, 5000.0, secs(t0, 1)), Some(5000.0));
        assert_eq!(g.check(ENERGY, 0.0, secs(t0, 2)), Some(5000.0));
    }

    #[test]
    fn episodes_are_counted_once_and_recover() {
        let t0 = Instant::now();
        let mut g = guard();
        let mut events = Vec::new();
        for (i, v) in [230.0, 999.0, 999.0, f64::NAN, 231.0, 231.0, -5.0, 232.0]
            .into_iter()
            .enumerate()
        {
            events.push(g.judge(VOLTAGE, v, secs(t0, i as u64)).1);
        }
        let range = Rejection::OutOfRange {
            min: 0.0,
            max: 300.0,
        };
        assert_eq!(
            events,
            [
                Event::Accepted,
                Event::EpisodeStarted(range),
                Event::StillRejected,
                Event::StillRejected,
                Event::Recovered,
                Event::Accepted,
                Event::EpisodeStarted(range),
                Event::Recovered,
            ]
        );
        let stats = g.stats(VOLTAGE).unwrap();
        assert_eq!(stats.rejections, 4);
        assert_eq!(stats.episodes, 2);
        assert!(!stats.in_episode);
        assert_eq!(stats.episode_rejections, 1);
    }

    #[test]
    fn counter_episode_reports_why_it_started() {
        let t0 = Instant::now();
        let mut g = guard();
        g.check(ENERGY, 50.0, t0);
        assert_eq!(
            g.judge(ENERGY, 40.0, secs(t0, 1)),
            (
                Some(50.0),
                Event::EpisodeStarted(Rejection::Backwards { last: 50.0 })
            )
        );
        assert_eq!(
            g.judge(ENERGY, 45.0, secs(t0, 2)),
            (Some(50.0), Event::StillRejected)
        );
        assert_eq!(
            g.judge(ENERGY, 50.001, secs(t0, 3)),
            (Some(50.001), Event::Recovered)
        );
    }
}
