//! Turns decisions into writes of the inverter's limit [`Setting`], deduplicated, deadbanded and
//! paced by time.
//!
//! Writes are precious (an inverter may keep them in non-volatile memory:
//! docs/reference/growatt.md §4), so the actuator:
//! - never rewrites the setting it believes the inverter holds;
//! - lowers at once when the new setting is lower by more than the deadband **and the site is
//!   exporting** (or the grid is unknown): export protection is urgent. A lower target while
//!   importing comes from inputs caught mid-transient (PV or MultiPlus values older than the
//!   grid reading) and is treated like any other non-urgent change;
//! - never raises a tracking limit while the site exports (more output could only export more),
//!   nor on a decision whose grid or PV reading predates the last write (`grid + pv` is
//!   invariant while the inverter ramps only if both were read after the change; a PV value from
//!   before it overstates the demand), and such a decision does not count towards a waiting
//!   change;
//! - right after a lowering (within `min_write_interval`), acts on an export only with a PV
//!   value read after the write: the inverter still ramps down, and an older PV value would
//!   understate the demand and chase the limit further down;
//! - applies `Release` / `FailSafe` at once (each happens once: afterwards the inverter already
//!   holds the setting);
//! - any other change waits until `min_write_interval` has passed since the last write; a raise
//!   by more than the deadband then goes out at once, every other change must first persist in
//!   the same direction for `settle_time`. What is written is the smallest move seen while
//!   waiting, so a transient peak or dip is never chased and noise around a step boundary writes
//!   nothing; a raise that need not persist as long as the one waiting (a load coming on while
//!   a one-point raise settles) starts anew and is not held back by it;
//! - follows a load that comes and goes (an induction hob pulsing 2 kW, an oven's thermostat):
//!   a lowering within `reversal_window` of a raise, with the demand (`grid + pv`, the
//!   decision's `demand_w`) fallen since the raise by at least `load_fall_w` and by half the
//!   lowering, followed the load down as the raise followed it up. If the load stayed on long
//!   enough for a prompt raise to save more import than its lowering exports (twice the dead
//!   time and the bus delay, plus the ramp to the raise's size: the plant model's), it is worth
//!   following: any raise back-off is cleared and the next rise is raised at once;
//! - backs off raising when raises keep being reversed for nothing: a lowering by more than the
//!   deadband within `reversal_window` of a raise, with the demand unchanged, means the raise
//!   overshot (inputs mid-transient, or a policy threshold flapping), so raises then must
//!   persist for a back-off time that doubles with each reversal (from 2 × `min_write_interval`
//!   up to `max_raise_backoff`) and is cleared after `backoff_reset` without a reversal. This
//!   bounds limit cycles to a few writes a minute. A load that fell again too soon to be worth
//!   following (a hob pulsing faster than the inverter ramps), or by less than `load_fall_w`,
//!   is backed off the same way, but a too-short load only up to the time it would have had to
//!   last: a raise that persists that long is of a load worth following again. The back-off
//!   holds only raises of the size that was reversed: a raise clearly larger than the largest
//!   reversed one (by a quarter, at least the deadband) is a new load on top of the cycling one
//!   (a kettle while the hob pulses) and goes out at once;
//! - after a failed write retries no sooner than `retry_interval`, and forgets nothing else.
//!
//! The actuator's belief about the inverter is a `State`; each wanted change is handled one
//! of the ways `Handling` names.

use std::time::{Duration, Instant};

use super::estimate::PlantModel;
use super::policy::{Decision, Settings, Target};
use super::strategy::{PercentOfRated, Setting};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ActuatorConfig {
    pub rated_w: f64,
    /// How a limit in watts becomes a setting (the inverter's strategy).
    pub encoding: PercentOfRated,
    /// The setting for `Target::FailSafe` (the export limit, rounded down).
    pub failsafe: Setting,
    /// Changes of at most this many steps count as noise and must persist (≥ 1).
    pub deadband: u16,
    /// Shortest time between two non-urgent writes.
    pub min_write_interval: Duration,
    /// How long a non-urgent change other than a big raise must persist.
    pub settle_time: Duration,
    /// Export (W) above which a lower limit is urgent.
    pub urgent_export_w: f64,
    /// A lowering this soon after a raise counts as a reversal, unless it followed the load.
    pub reversal_window: Duration,
    /// A lowering followed the load, not an overshoot, when the demand fell by at least this
    /// much (W) since the raise, and by at least half the lowering.
    pub load_fall_w: f64,
    /// How the inverter follows a new limit: whether it could deliver a raise before the load
    /// fell again.
    pub plant: PlantModel,
    pub max_raise_backoff: Duration,
    /// The raise back-off is cleared this long after the last reversal.
    pub backoff_reset: Duration,
    pub retry_interval: Duration,
}

impl ActuatorConfig {
    pub(crate) fn new(settings: &Settings, encoding: PercentOfRated) -> Self {
        Self {
            rated_w: settings.rated_w,
            encoding,
            failsafe: encoding.failsafe(settings.export_limit_w, settings.rated_w),
            deadband: 1,
            min_write_interval: settings.min_write_interval,
            // House load noise moves the demand by a point every second or so; 5 s cut the
            // plant_day bench's writes by ~4x against 1 s at the same curtailment.
            settle_time: Duration::from_secs(5),
            // One point of rated power: less export than that is within the ceil rounding.
            urgent_export_w: settings.rated_w / 100.0,
            // A hob pulsing with a 5–10 s period reverses each raise within its on-phase
            // (≤ 5 s); a raise that held longer than this followed a real load.
            reversal_window: Duration::from_secs(6),
            // Five points of rated power: a load cycling by less is not worth two writes a
            // cycle, and meter noise or a drifting base load never moves the demand this far
            // within a reversal window.
            load_fall_w: settings.rated_w / 20.0,
            plant: PlantModel::default(),
            max_raise_backoff: Duration::from_secs(60),
            backoff_reset: Duration::from_secs(300),
            retry_interval: Duration::from_millis(250),
        }
    }

    fn sanitised(self) -> Self {
        Self {
            deadband: self.deadband.max(1),
            ..self
        }
    }
}

/// What the actuator believes the inverter holds, and what it is waiting for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// The setting is unknown (before the set-up, after losing the inverter): whatever a
    /// decision wants is written at once.
    Unknown,
    /// The inverter holds `setting`, written at `written_at` (`None`: read back at set-up).
    Steady {
        setting: Setting,
        written_at: Option<Instant>,
    },
    /// As `Steady`, with a non-urgent change waiting for the write interval, to persist for the
    /// settle time, or for the raise back-off.
    Waiting {
        setting: Setting,
        written_at: Option<Instant>,
        change: WaitingChange,
    },
}

impl State {
    /// The setting held and when it was written, unless unknown.
    fn held(self) -> Option<(Setting, Option<Instant>)> {
        match self {
            State::Unknown => None,
            State::Steady {
                setting,
                written_at,
            }
            | State::Waiting {
                setting,
                written_at,
                ..
            } => Some((setting, written_at)),
        }
    }
}

/// A non-urgent change waiting for the write interval or to prove it is not a transient.
#[derive(Clone, Copy, Debug, PartialEq)]
struct WaitingChange {
    raising: bool,
    since: Instant,
    /// The wanted setting closest to the held one seen since `since`.
    least_move: Setting,
    /// The demand of the decision that wanted `least_move`.
    demand_w: Option<f64>,
}

impl WaitingChange {
    /// The change after a decision wanting `wanted` at `now` for `demand_w`: the same one,
    /// keeping its least move, while it goes the same way; a new one when the direction turns.
    fn update(
        previous: Option<Self>,
        raising: bool,
        wanted: Setting,
        demand_w: Option<f64>,
        now: Instant,
    ) -> Self {
        match previous {
            Some(c) if c.raising == raising => {
                let less = if raising {
                    wanted < c.least_move
                } else {
                    wanted > c.least_move
                };
                if less {
                    WaitingChange {
                        least_move: wanted,
                        demand_w,
                        ..c
                    }
                } else {
                    c
                }
            }
            _ => WaitingChange {
                raising,
                since: now,
                least_move: wanted,
                demand_w,
            },
        }
    }
}

/// How a wanted change of the held setting is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handling {
    /// `Release` / `FailSafe`: written at once.
    AtOnce,
    /// Lower by more than the deadband while the site exports: written at once.
    UrgentLowering,
    /// The decision's readings predate the last write: it cannot judge a change.
    StaleReadings,
    /// A tracking raise while the site exports: dropped.
    RaiseWhileExporting,
    /// Anything else waits for the write interval, the settle time and the raise back-off.
    Paced { raising: bool },
}

/// What a reversed raise was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reversal {
    /// It followed a load that stayed on long enough to be worth following.
    FollowedLoad,
    /// It followed a load that fell again too soon: raises of its size are held back, but
    /// never longer than such a load must last to be worth following, so that a load that
    /// comes to stay on longer is followed again.
    LoadTooShort { worth_following: Duration },
    /// The demand did not fall: the raise overshot (the policy flapped, or inputs were caught
    /// mid-transient).
    Overshoot,
}

/// What the actuator knew of a write it asked for, for the raise history once written.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Asked {
    setting: Setting,
    /// The demand behind it.
    demand_w: Option<f64>,
    /// When the change was first wanted (a paced change waited since then).
    wanted_since: Instant,
    /// When it was first asked to be written: from then on only the bus delayed it.
    asked_at: Instant,
}

/// Raises that were soon reversed, and the back-off they earned.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RaiseHistory {
    last_raise: Option<Instant>,
    /// The size of the last raise, in steps.
    last_raise_steps: i32,
    /// What the actuator knew of the last raise when it asked for it (the demand behind it,
    /// since when it was wanted, when it was asked: the bus took until `last_raise`).
    last_raise_asked: Option<Asked>,
    last_reversal: Option<Instant>,
    backoff: Duration,
    /// The largest reversed raise while the back-off holds, in steps.
    reversed_steps: i32,
}

impl RaiseHistory {
    /// How long a raise must persist now.
    fn backoff(&self, now: Instant, config: &ActuatorConfig) -> Duration {
        match self.last_reversal {
            Some(t) if elapsed(t, now) < config.backoff_reset => self.backoff,
            _ => Duration::ZERO,
        }
    }

    /// How long a raise of `steps` must persist now: a raise clearly larger than any reversed
    /// one is not the cycling load and is not held back.
    fn backoff_for(&self, steps: i32, now: Instant, config: &ActuatorConfig) -> Duration {
        let margin = (self.reversed_steps / 4).max(i32::from(config.deadband));
        if steps > self.reversed_steps.saturating_add(margin) {
            Duration::ZERO
        } else {
            self.backoff(now, config)
        }
    }

    /// A confirmed write from `previous` to `value` at `now`; `asked`: what the actuator knew
    /// of it (`None` for a write it did not ask for).
    fn note_write(
        &mut self,
        previous: Setting,
        value: Setting,
        asked: Option<Asked>,
        now: Instant,
        config: &ActuatorConfig,
    ) {
        if value > previous {
            self.last_raise = Some(now);
            self.last_raise_steps = value.steps_from(previous);
            self.last_raise_asked = asked;
            return;
        }
        let reverses = previous.steps_from(value) > i32::from(config.deadband)
            && self
                .last_raise
                .is_some_and(|t| elapsed(t, now) < config.reversal_window);
        if !reverses {
            return;
        }
        match self.reversal(previous, value, asked, now, config) {
            Reversal::FollowedLoad => {
                // The load cycles slowly enough to be followed: whatever the back-off held,
                // the next rise is followed at once.
                self.backoff = Duration::ZERO;
                self.last_reversal = None;
            }
            Reversal::LoadTooShort { worth_following } => {
                let cap = worth_following.min(config.max_raise_backoff);
                self.note_reversal(now, cap, config);
            }
            Reversal::Overshoot => self.note_reversal(now, config.max_raise_backoff, config),
        }
        self.last_raise = None;
    }

    /// The last raise was reversed for nothing: raises of its size must persist twice as long
    /// as before, up to `cap`.
    fn note_reversal(&mut self, now: Instant, cap: Duration, config: &ActuatorConfig) {
        let held = self.backoff(now, config);
        let doubled = (held.saturating_mul(2)).max(config.min_write_interval.saturating_mul(2));
        self.backoff = doubled.min(cap.max(held));
        self.reversed_steps = if held.is_zero() {
            self.last_raise_steps
        } else {
            self.reversed_steps.max(self.last_raise_steps)
        };
        self.last_reversal = Some(now);
    }

    /// What the last raise was, now that this lowering (from `previous` to `value`, landed at
    /// `now`) reverses it.
    ///
    /// The demand tells a load that came and went ([`load_fell`](Self::load_fell)) from an
    /// overshoot. A load is worth following when a raise written promptly saves more import
    /// than its lowering exports. A raise of `A` W lands `d` after the load rose and the
    /// output then ramps at `r`; the lowering lands `d` after the load fell; the dead time `D`
    /// comes on top of each. For a load on for `T`, the import saved is `A·(T − d − D) −
    /// A²/2r`, the export after it `A·(d + D) + A²/2r`: following pays when `T ≥ 2·(d + D) +
    /// A/r`. `T` runs from the first decision that wanted the raise to the first that asked
    /// for the lowering (a raise the back-off delayed counts as prompt: the question is whether
    /// the load is worth following at all), `d` is the longer of the two writes' delays on the
    /// bus.
    fn reversal(
        &self,
        previous: Setting,
        value: Setting,
        asked: Option<Asked>,
        now: Instant,
        config: &ActuatorConfig,
    ) -> Reversal {
        let (Some(asked), Some(raise), Some(raised_at)) =
            (asked, self.last_raise_asked, self.last_raise)
        else {
            return Reversal::Overshoot;
        };
        let rose_at = raise.wanted_since;
        if !self.load_fell(previous, value, asked.demand_w, config) {
            return Reversal::Overshoot;
        }
        let bus_delay = elapsed(asked.asked_at, now).max(elapsed(raise.asked_at, raised_at));
        let reaction = bus_delay.saturating_add(config.plant.dead_time);
        let step_w = config.encoding.watts(Setting(1), config.rated_w);
        let raised_w = f64::from(self.last_raise_steps) * step_w;
        let ramp = Duration::try_from_secs_f64(raised_w / config.plant.ramp_up_w_per_s)
            .unwrap_or(Duration::MAX);
        let worth_following = reaction.saturating_mul(2).saturating_add(ramp);
        if elapsed(rose_at, asked.asked_at) >= worth_following {
            Reversal::FollowedLoad
        } else {
            Reversal::LoadTooShort { worth_following }
        }
    }

    /// Whether lowering from `previous` to `value` at `demand_w` follows the demand falling since
    /// the last raise (by `load_fall_w` at least, and by half the lowering: the rest may be
    /// rounding or the allowances). Otherwise the raise itself overshot: the demand did not
    /// move, so the policy flapped or the raise came from inputs caught mid-transient. Without
    /// both demands nothing tells the two apart, and the lowering counts as a reversal.
    fn load_fell(
        &self,
        previous: Setting,
        value: Setting,
        demand_w: Option<f64>,
        config: &ActuatorConfig,
    ) -> bool {
        let (Some(raised_at_w), Some(now_w)) =
            (self.last_raise_asked.and_then(|a| a.demand_w), demand_w)
        else {
            return false;
        };
        let watts = |s: Setting| config.encoding.watts(s, config.rated_w);
        let lowered_w = watts(previous) - watts(value);
        let fell_w = raised_at_w - now_w;
        fell_w >= config.load_fall_w && fell_w >= lowered_w / 2.0
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Actuator {
    config: ActuatorConfig,
    state: State,
    /// When the last write failed; nothing is written within `retry_interval` of it.
    last_failure: Option<Instant>,
    raises: RaiseHistory,
    /// The write last asked for, for the raise history once written.
    asked: Option<Asked>,
    writes: u64,
    failures: u64,
}

impl Actuator {
    pub(crate) fn new(config: ActuatorConfig) -> Self {
        Self {
            config: config.sanitised(),
            state: State::Unknown,
            last_failure: None,
            raises: RaiseHistory::default(),
            asked: None,
            writes: 0,
            failures: 0,
        }
    }

    pub(crate) fn config(&self) -> &ActuatorConfig {
        &self.config
    }

    /// New settings (e.g. rated power read from the inverter): keeps what the inverter holds
    /// and the pacing state.
    pub(crate) fn reconfigure(&mut self, config: ActuatorConfig) {
        self.config = config.sanitised();
    }

    /// The setting to write now for this decision, if any. The caller writes it and reports
    /// back with [`confirm_written`](Self::confirm_written) or [`write_failed`](Self::write_failed);
    /// until then the same setting is asked for again on the next call (that is the retry).
    pub(crate) fn next_write(&mut self, decision: &Decision, now: Instant) -> Option<Setting> {
        let Some((setting, demand_w, wanted_since)) = self.write_for(decision, now) else {
            // Whatever was asked before is withdrawn (the caller drops it).
            self.asked = None;
            return None;
        };
        // Asked again while the bus delays it: the same write, asked since the first time.
        let asked_at = match self.asked {
            Some(a) if a.setting == setting => a.asked_at,
            _ => now,
        };
        self.asked = Some(Asked {
            setting,
            demand_w,
            wanted_since: wanted_since.min(asked_at),
            asked_at,
        });
        Some(setting)
    }

    /// The setting to write now, the demand behind it and since when it was wanted.
    fn write_for(
        &mut self,
        decision: &Decision,
        now: Instant,
    ) -> Option<(Setting, Option<f64>, Instant)> {
        let Some(wanted) = self.wanted(decision.target) else {
            self.drop_waiting_change();
            return None;
        };
        if self
            .last_failure
            .is_some_and(|t| elapsed(t, now) < self.config.retry_interval)
        {
            return None;
        }
        let (setting, written_at, change) = match self.state {
            State::Unknown => return Some((wanted, decision.demand_w, now)),
            State::Steady {
                setting,
                written_at,
            } => (setting, written_at, None),
            State::Waiting {
                setting,
                written_at,
                change,
            } => (setting, written_at, Some(change)),
        };
        if wanted == setting {
            self.drop_waiting_change();
            return None;
        }
        match self.handling(decision, setting, wanted, written_at, now) {
            Handling::AtOnce => Some((wanted, decision.demand_w, now)),
            Handling::UrgentLowering => {
                self.drop_waiting_change();
                Some((wanted, decision.demand_w, now))
            }
            Handling::StaleReadings => None,
            Handling::RaiseWhileExporting => {
                self.drop_waiting_change();
                None
            }
            Handling::Paced { raising } => {
                // A raise that need not persist as long as the waiting one starts its own
                // change: a load stepping up while a raise within the deadband settles, or a
                // new load on top of a cycling one the back-off holds, is not held back by the
                // least move of the waiting one.
                let change = match change {
                    Some(c)
                        if raising
                            && c.raising
                            && self.persistence(setting, wanted, now)
                                < self.persistence(setting, c.least_move, now) =>
                    {
                        None
                    }
                    other => other,
                };
                let change = WaitingChange::update(change, raising, wanted, decision.demand_w, now);
                self.state = State::Waiting {
                    setting,
                    written_at,
                    change,
                };
                self.ready(setting, written_at, change, now).then_some((
                    change.least_move,
                    change.demand_w,
                    change.since,
                ))
            }
        }
    }

    /// The setting a decision's target asks for; `None` for `Hold`.
    fn wanted(&self, target: Target) -> Option<Setting> {
        let encoding = self.config.encoding;
        match target {
            Target::Hold => None,
            Target::Limit(w) => Some(encoding.setting_for(w, self.config.rated_w)),
            Target::FullPower | Target::Release => Some(encoding.full_power()),
            Target::FailSafe => Some(self.config.failsafe.min(encoding.full_power())),
        }
    }

    fn handling(
        &self,
        decision: &Decision,
        setting: Setting,
        wanted: Setting,
        written_at: Option<Instant>,
        now: Instant,
    ) -> Handling {
        if matches!(decision.target, Target::Release | Target::FailSafe) {
            return Handling::AtOnce;
        }
        let step = wanted.steps_from(setting);
        let deadband = i32::from(self.config.deadband);
        let exporting = decision
            .grid_w
            .is_none_or(|grid| grid < -self.config.urgent_export_w);
        let predates_last_write = decision
            .sampled_at
            .is_some_and(|at| written_at.is_some_and(|w| at <= w));
        // Right after a lowering the inverter ramps down and still exports for a while; a PV
        // value from before the write overstates its output, so `grid + pv` understates the
        // demand and would chase the limit further down. The inverter is re-read within a
        // fraction of a second; an export that outlasts `min_write_interval` is acted on anyway.
        let just_wrote =
            written_at.is_some_and(|w| elapsed(w, now) < self.config.min_write_interval);
        if step < -deadband && exporting && !(predates_last_write && just_wrote) {
            return Handling::UrgentLowering;
        }
        if predates_last_write {
            return Handling::StaleReadings;
        }
        let raising = step > 0;
        // More output while the site exports can only export more: the estimate is
        // mid-transient (MultiPlus values older than the grid reading). Full power by rule 4 or
        // 6 is no estimate and goes out whatever the grid shows.
        let tracking = matches!(decision.target, Target::Limit(_));
        if raising && exporting && decision.grid_w.is_some() && tracking {
            return Handling::RaiseWhileExporting;
        }
        Handling::Paced { raising }
    }

    /// Whether a waiting change may be written now.
    fn ready(
        &self,
        setting: Setting,
        written_at: Option<Instant>,
        change: WaitingChange,
        now: Instant,
    ) -> bool {
        let interval_passed =
            written_at.is_none_or(|t| elapsed(t, now) >= self.config.min_write_interval);
        let persisted =
            elapsed(change.since, now) >= self.persistence(setting, change.least_move, now);
        interval_passed && persisted
    }

    /// How long a non-urgent change from `setting` to `to` must persist before it is written: a
    /// raise by more than the deadband only its back-off, every other change the settle time.
    fn persistence(&self, setting: Setting, to: Setting, now: Instant) -> Duration {
        let steps = to.steps_from(setting);
        if steps <= 0 {
            return self.config.settle_time;
        }
        let backoff = self.raises.backoff_for(steps, now, &self.config);
        if steps > i32::from(self.config.deadband) {
            backoff
        } else {
            self.config.settle_time.max(backoff)
        }
    }

    fn drop_waiting_change(&mut self) {
        if let State::Waiting {
            setting,
            written_at,
            ..
        } = self.state
        {
            self.state = State::Steady {
                setting,
                written_at,
            };
        }
    }

    /// How long a raise must persist now (zero unless raises were reversed recently).
    #[cfg(test)]
    pub(crate) fn raise_backoff(&self, now: Instant) -> Duration {
        self.raises.backoff(now, &self.config)
    }

    /// The write of `setting` succeeded at `now`.
    pub(crate) fn confirm_written(&mut self, setting: Setting, now: Instant) {
        let asked = self.asked.take().filter(|a| a.setting == setting);
        if let Some((previous, _)) = self.state.held() {
            self.raises
                .note_write(previous, setting, asked, now, &self.config);
        }
        self.state = State::Steady {
            setting,
            written_at: Some(now),
        };
        self.last_failure = None;
        self.writes = self.writes.saturating_add(1);
    }

    /// The write failed (timeout, exception): retry after `retry_interval`. The setting is kept
    /// as believed; if the write did land, the retry finds nothing to do or rewrites it once.
    pub(crate) fn write_failed(&mut self, now: Instant) {
        self.last_failure = Some(now);
        self.failures = self.failures.saturating_add(1);
    }

    /// The inverter was (re)initialised (set-up run) and holds `setting`, as read back.
    pub(crate) fn inverter_reinitialised(&mut self, setting: Setting) {
        self.state = State::Steady {
            setting,
            written_at: None,
        };
        self.last_failure = None;
    }

    /// The inverter stopped answering: its setting is unknown until re-initialised.
    pub(crate) fn inverter_lost(&mut self) {
        self.state = State::Unknown;
    }

    /// Confirmed writes since start (for the published write counter).
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    #[cfg(test)]
    fn failures(&self) -> u64 {
        self.failures
    }

    /// The setting the inverter is believed to hold.
    pub(crate) fn applied(&self) -> Option<Setting> {
        self.state.held().map(|(setting, _)| setting)
    }

    /// The applied limit in watts (`/dynamicGenerationMaxPower`, `/Ac/PowerLimit`).
    pub(crate) fn applied_watts(&self) -> Option<f64> {
        self.applied()
            .map(|s| self.config.encoding.watts(s, self.config.rated_w))
    }
}

fn elapsed(since: Instant, now: Instant) -> Duration {
    now.saturating_duration_since(since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Status;

    const MS: Duration = Duration::from_millis(1);

    fn limit(watts: f64) -> Decision {
        Decision::new(Target::Limit(watts), Status::Limiting)
    }

    /// Whole percent of rated power, 2…100, as the Growatt takes it.
    const PERCENT: PercentOfRated = PercentOfRated { min: 2, max: 100 };

    fn config() -> ActuatorConfig {
        ActuatorConfig::new(&Settings::default(), PERCENT)
    }

    fn actuator() -> Actuator {
        Actuator::new(config())
    }

    /// `next_write` in whole percent, as the tests read.
    fn next(a: &mut Actuator, decision: &Decision, now: Instant) -> Option<u16> {
        a.next_write(decision, now).map(|s| s.0)
    }

    /// An actuator whose register holds `percent`, last written at `at`.
    fn holding(percent: u16, at: Instant) -> Actuator {
        let mut a = actuator();
        a.confirm_written(Setting(percent), at);
        a
    }

    /// Feeds the decision at `now` and confirms whatever it asks to write.
    fn step(a: &mut Actuator, decision: &Decision, now: Instant) -> Option<u16> {
        let value = a.next_write(decision, now);
        if let Some(v) = value {
            a.confirm_written(v, now);
        }
        value.map(|s| s.0)
    }

    #[test]
    fn failsafe_is_the_export_limit_rounded_down() {
        assert_eq!(config().failsafe, Setting(87));
    }

    #[test]
    fn unknown_register_is_written_at_once() {
        let t = Instant::now();
        let mut a = actuator();
        assert_eq!(next(&mut a, &limit(2100.0), t), Some(50));
        // Not confirmed yet: asked again (the retry path).
        assert_eq!(next(&mut a, &limit(2100.0), t + MS), Some(50));
    }

    #[test]
    fn never_rewrites_an_unchanged_value() {
        let t = Instant::now();
        let mut a = holding(50, t);
        for i in 1..50 {
            assert_eq!(step(&mut a, &limit(2090.0), t + i * 100 * MS), None);
        }
        assert_eq!(a.writes(), 1);
    }

    #[test]
    fn lowering_beyond_the_deadband_is_immediate() {
        let t = Instant::now();
        let mut a = holding(100, t);
        assert_eq!(step(&mut a, &limit(2100.0), t + 10 * MS), Some(50));
        assert_eq!(step(&mut a, &limit(2000.0), t + 20 * MS), Some(48));
        assert_eq!(a.writes(), 3);
    }

    #[test]
    fn raising_is_paced_by_the_write_interval() {
        let t = Instant::now();
        let mut a = holding(50, t);
        assert_eq!(step(&mut a, &limit(3360.0), t + 300 * MS), None);
        assert_eq!(step(&mut a, &limit(3360.0), t + 999 * MS), None);
        assert_eq!(step(&mut a, &limit(3360.0), t + 1000 * MS), Some(80));
        // After a long quiet time a raise goes out at once.
        assert_eq!(step(&mut a, &limit(4200.0), t + 5000 * MS), Some(100));
    }

    #[test]
    fn noise_around_a_percent_boundary_causes_no_writes() {
        let t = Instant::now();
        let mut a = holding(50, t);
        for i in 1..200u32 {
            let watts = if i % 3 == 0 { 2110.0 } else { 2095.0 }; // 51 % now and then
            assert_eq!(step(&mut a, &limit(watts), t + i * 250 * MS), None, "i {i}");
        }
        let mut b = holding(50, t);
        for i in 1..200u32 {
            let watts = if i % 2 == 0 { 2110.0 } else { 2050.0 }; // 51 % / 49 % alternating
            assert_eq!(step(&mut b, &limit(watts), t + i * 250 * MS), None, "i {i}");
        }
    }

    #[test]
    fn release_and_failsafe_are_immediate_and_once() {
        let t = Instant::now();
        let mut a = holding(40, t);
        let release = Decision::new(Target::Release, Status::G100);
        assert_eq!(step(&mut a, &release, t + MS), Some(100));
        assert_eq!(step(&mut a, &release, t + 2 * MS), None);
        let failsafe = Decision::new(Target::FailSafe, Status::MeterStale);
        assert_eq!(step(&mut a, &failsafe, t + 3 * MS), Some(87));
        for i in 4..100 {
            assert_eq!(step(&mut a, &failsafe, t + i * 100 * MS), None);
        }
        // Raising from a low limit to the fail-safe rate is not paced either.
        let mut b = holding(30, t);
        assert_eq!(step(&mut b, &failsafe, t + MS), Some(87));
        assert_eq!(step(&mut b, &Decision::shutdown(), t + 2 * MS), Some(100));
        assert_eq!(b.writes(), 3);
    }

    #[test]
    fn full_power_is_paced_like_a_raise() {
        let t = Instant::now();
        let mut a = holding(30, t);
        let full = Decision::new(Target::FullPower, Status::Charging);
        assert_eq!(step(&mut a, &full, t + 100 * MS), None);
        assert_eq!(step(&mut a, &full, t + 1000 * MS), Some(100));
    }

    #[test]
    fn failed_write_is_retried_after_the_retry_interval() {
        let t = Instant::now();
        let mut a = holding(100, t);
        assert_eq!(next(&mut a, &limit(1000.0), t + MS), Some(24));
        a.write_failed(t + 20 * MS);
        assert_eq!(next(&mut a, &limit(1000.0), t + 100 * MS), None);
        assert_eq!(next(&mut a, &limit(1000.0), t + 270 * MS), Some(24));
        a.confirm_written(Setting(24), t + 290 * MS);
        assert_eq!((a.writes(), a.failures()), (2, 1));
        assert_eq!(a.applied().map(|s| s.0), Some(24));
        assert_eq!(a.applied_watts(), Some(1008.0));
    }

    #[test]
    fn inverter_loss_and_reinitialisation() {
        let t = Instant::now();
        let mut a = holding(30, t);
        a.inverter_lost();
        assert_eq!(a.applied().map(|s| s.0), None);
        assert_eq!(next(&mut a, &limit(1260.0), t + MS), Some(30));
        a.inverter_reinitialised(Setting(100));
        // Right after the G100 set-up wrote 100 %, full power needs no write and a limit is urgent.
        let full = Decision::new(Target::FullPower, Status::NotLimiting);
        assert_eq!(next(&mut a, &full, t + 2 * MS), None);
        assert_eq!(next(&mut a, &limit(1260.0), t + 3 * MS), Some(30));
    }

    fn limit_at_grid(watts: f64, grid_w: f64) -> Decision {
        limit(watts).with_grid(grid_w)
    }

    /// The default settle time, so the tests follow the configuration.
    fn settle() -> Duration {
        actuator().config().settle_time
    }

    #[test]
    fn a_deadband_sized_change_must_persist() {
        let t = Instant::now();
        let mut a = holding(50, t);
        let s0 = t + 5000 * MS;
        let down = limit(2058.0); // 49 %
        assert_eq!(step(&mut a, &down, s0), None);
        assert_eq!(step(&mut a, &down, s0 + settle() - MS), None);
        assert_eq!(step(&mut a, &down, s0 + settle()), Some(49));
        let up = limit(2100.0); // 50 %
        let s1 = s0 + settle() + 250 * MS;
        assert_eq!(step(&mut a, &up, s1), None);
        assert_eq!(step(&mut a, &up, s1 + settle()), Some(50));
    }

    #[test]
    fn hold_writes_nothing_and_drops_a_pending_change() {
        let t = Instant::now();
        let mut a = holding(50, t);
        let hold = Decision::new(Target::Hold, Status::PvOffline);
        let s0 = t + 2000 * MS;
        assert_eq!(step(&mut a, &limit(2058.0), s0), None);
        assert_eq!(step(&mut a, &hold, s0 + settle() - MS), None);
        // The 49 % change starts over after the hold.
        let s1 = s0 + settle();
        assert_eq!(step(&mut a, &limit(2058.0), s1), None);
        assert_eq!(step(&mut a, &limit(2058.0), s1 + settle() - MS), None);
        assert_eq!(step(&mut a, &limit(2058.0), s1 + settle()), Some(49));
        let mut unknown = actuator();
        assert_eq!(next(&mut unknown, &hold, t), None);
    }

    #[test]
    fn lowering_is_urgent_only_while_exporting() {
        let t = Instant::now();
        let mut a = holding(80, t);
        // Exporting beyond one point of rated power (42 W): at once.
        assert_eq!(
            step(&mut a, &limit_at_grid(2100.0, -100.0), t + 10 * MS),
            Some(50)
        );
        // Exporting within the rounding, or importing: waits to settle.
        let mut b = holding(80, t);
        assert_eq!(
            step(&mut b, &limit_at_grid(2100.0, -30.0), t + 10 * MS),
            None
        );
        let settled = t + 10 * MS + settle();
        assert_eq!(
            step(&mut b, &limit_at_grid(2100.0, 100.0), settled - MS),
            None
        );
        assert_eq!(
            step(&mut b, &limit_at_grid(2100.0, 100.0), settled),
            Some(50)
        );
    }

    #[test]
    fn never_raises_while_exporting() {
        let t = Instant::now();
        let mut a = holding(50, t);
        for i in 1..40 {
            let at = t + i * 250 * MS;
            assert_eq!(step(&mut a, &limit_at_grid(3360.0, -200.0), at), None);
        }
        // The same target once the export is gone goes out at once (a big raise).
        assert_eq!(
            step(&mut a, &limit_at_grid(3360.0, 0.0), t + 10_000 * MS),
            Some(80)
        );
    }

    #[test]
    fn right_after_a_lowering_an_export_waits_for_a_pv_reading_taken_after_it() {
        let t = Instant::now();
        let mut a = holding(100, t);
        let first = limit_at_grid(1260.0, -2000.0).sampled_at(t + 10 * MS);
        assert_eq!(step(&mut a, &first, t + 20 * MS), Some(30));
        // Ramping down: the grid still exports, the PV value is from before the write.
        let stale = limit_at_grid(800.0, -1800.0).sampled_at(t + 10 * MS);
        assert_eq!(step(&mut a, &stale, t + 200 * MS), None);
        // A consistent sample that still asks for less is urgent.
        let fresh = limit_at_grid(800.0, -300.0).sampled_at(t + 300 * MS);
        assert_eq!(step(&mut a, &fresh, t + 300 * MS), Some(20));
        // An export that outlasts the write interval is acted on even without a fresh PV value.
        let stuck = limit_at_grid(400.0, -300.0).sampled_at(t + 250 * MS);
        assert_eq!(step(&mut a, &stuck, t + 1400 * MS), Some(10));
    }

    #[test]
    fn full_power_is_not_held_back_by_an_export() {
        let t = Instant::now();
        let mut a = holding(13, t);
        let full = Decision::new(Target::FullPower, Status::NotLimiting).with_grid(-46.0);
        assert_eq!(step(&mut a, &full, t + 1000 * MS), Some(100));
    }

    #[test]
    fn readings_from_before_the_last_write_cannot_raise() {
        let t = Instant::now();
        let mut a = holding(50, t + 2000 * MS);
        let stale = limit_at_grid(3360.0, 0.0).sampled_at(t + 1000 * MS);
        for i in 0..40 {
            assert_eq!(step(&mut a, &stale, t + (3000 + i * 250) * MS), None);
        }
        // Stale samples may not lower without an export either, but an export lowers at once.
        let stale_low = limit_at_grid(840.0, 0.0).sampled_at(t + 1000 * MS);
        assert_eq!(step(&mut a, &stale_low, t + 20_000 * MS), None);
        let stale_export = limit_at_grid(840.0, -300.0).sampled_at(t + 1000 * MS);
        assert_eq!(step(&mut a, &stale_export, t + 20_000 * MS), Some(20));
        let fresh = limit_at_grid(3360.0, 0.0).sampled_at(t + 21_500 * MS);
        assert_eq!(step(&mut a, &fresh, t + 21_500 * MS), Some(80));
    }

    #[test]
    fn a_non_urgent_change_writes_the_least_move_seen_while_waiting() {
        let t = Instant::now();
        let mut a = holding(80, t);
        let s0 = t + 5000 * MS;
        assert_eq!(step(&mut a, &limit_at_grid(2100.0, 50.0), s0), None); // 50 %
        assert_eq!(step(&mut a, &limit_at_grid(2520.0, 50.0), s0 + MS), None); // 60 %
        let s1 = s0 + settle();
        assert_eq!(step(&mut a, &limit_at_grid(2310.0, 50.0), s1), Some(60)); // 55 %
        // A raise waiting for the write interval takes the lowest value seen meanwhile.
        assert_eq!(
            step(&mut a, &limit_at_grid(3780.0, 0.0), s1 + 200 * MS),
            None
        ); // 90 %
        assert_eq!(
            step(&mut a, &limit_at_grid(2940.0, 0.0), s1 + 500 * MS),
            None
        ); // 70 %
        assert_eq!(
            step(&mut a, &limit_at_grid(3990.0, 0.0), s1 + 1000 * MS),
            Some(70)
        ); // 95 %
    }

    #[test]
    fn a_transient_dip_that_returns_is_never_written() {
        let t = Instant::now();
        let mut a = holding(80, t);
        let s0 = t + 5000 * MS;
        assert_eq!(step(&mut a, &limit_at_grid(2100.0, 200.0), s0), None);
        assert_eq!(
            step(&mut a, &limit_at_grid(3360.0, 0.0), s0 + 500 * MS),
            None
        ); // 80 % again
        let s1 = s0 + 1000 * MS;
        assert_eq!(step(&mut a, &limit_at_grid(2940.0, 100.0), s1), None); // 70 %, anew
        assert_eq!(
            step(&mut a, &limit_at_grid(2940.0, 100.0), s1 + settle() - MS),
            None
        );
        assert_eq!(
            step(&mut a, &limit_at_grid(2940.0, 100.0), s1 + settle()),
            Some(70)
        );
        assert_eq!(a.writes(), 2);
    }

    #[test]
    fn reversed_raises_back_off_exponentially_and_recover() {
        let t = Instant::now();
        let mut a = holding(20, t);
        let cfg = *a.config();
        let mut now = t + 10_000 * MS;
        let mut backoffs = Vec::new();
        // The target flaps (a battery allowance, a MultiPlus value caught mid-transient) while
        // the demand `grid + pv` stays at 1180 W: the raises overshoot.
        let up = limit_at_grid(1680.0, 0.0).with_demand(1180.0);
        let down = limit_at_grid(840.0, -500.0).with_demand(1180.0);
        for _ in 0..8 {
            // Raise to 40 % as soon as allowed, then an export forces it back down at once.
            let mut raised = None;
            for _ in 0..400 {
                now += 250 * MS;
                raised = step(&mut a, &up, now);
                if raised.is_some() {
                    break;
                }
            }
            assert_eq!(raised, Some(40));
            now += 500 * MS;
            assert_eq!(step(&mut a, &down, now), Some(20));
            backoffs.push(a.raise_backoff(now).as_secs());
        }
        assert_eq!(backoffs, [2, 4, 8, 16, 32, 60, 60, 60]);
        // A raise clearly larger than the reversed ones (a new load on top of the cycling
        // one) is not held back, once the write interval has passed.
        let bigger = now + cfg.min_write_interval;
        assert_eq!(step(&mut a, &limit_at_grid(2100.0, 0.0), bigger), Some(50));
        assert_eq!(a.raise_backoff(now + cfg.backoff_reset), Duration::ZERO);
        // A lowering long after a raise is no reversal.
        let mut b = holding(20, t);
        assert_eq!(
            step(&mut b, &limit_at_grid(1680.0, 0.0), t + 2000 * MS),
            Some(40)
        );
        let later = t + 2000 * MS + cfg.reversal_window;
        assert_eq!(step(&mut b, &limit_at_grid(840.0, -500.0), later), Some(20));
        assert_eq!(b.raise_backoff(later), Duration::ZERO);
    }

    /// A pulse of a 2 kW load on a 300 W base: the raise when it comes on (at `on`, at once if
    /// allowed), the lowering when it goes off `on_for` later (urgent: the site exports).
    fn pulse(a: &mut Actuator, on: Instant, on_for: Duration) -> (Option<u16>, Option<u16>) {
        let hob_on = limit_at_grid(2300.0, 2000.0).with_demand(2300.0);
        let hob_off = limit_at_grid(300.0, -2000.0).with_demand(300.0);
        (step(a, &hob_on, on), step(a, &hob_off, on + on_for))
    }

    #[test]
    fn a_load_that_comes_and_goes_is_followed_pulse_after_pulse() {
        let t = Instant::now();
        let mut a = holding(8, t);
        // A hob pulsing 4 s on, 4 s off: each pulse lasts long enough for the inverter (0.3 s
        // dead time, 2 s of ramp) to deliver the raise and save more than its end exports.
        for k in 0..20u32 {
            let on = t + 10_000 * MS + k * 8000 * MS;
            assert_eq!(
                pulse(&mut a, on, 4000 * MS),
                (Some(55), Some(8)),
                "pulse {k}"
            );
            assert_eq!(a.raise_backoff(on + 4000 * MS), Duration::ZERO, "pulse {k}");
        }
        assert_eq!(a.writes(), 41);
    }

    #[test]
    fn a_load_too_short_to_follow_is_held_until_a_pulse_proves_worth_following() {
        let t = Instant::now();
        let mut a = holding(8, t);
        // 1.5 s on: the raise would barely have acted when the load goes again.
        let on = t + 10_000 * MS;
        assert_eq!(pulse(&mut a, on, 1500 * MS), (Some(55), Some(8)));
        assert_eq!(
            a.raise_backoff(on + 1500 * MS),
            2 * a.config().min_write_interval
        );
        // Held for the back-off: the next short pulse is not followed at all.
        let on = on + 4000 * MS;
        assert_eq!(pulse(&mut a, on, 1500 * MS), (None, None));
        // A longer one is raised once the back-off has passed, and is then reversed as too
        // short again (1.1 s since the raise): the back-off grows only up to what a load must
        // last to be worth following (2 × 0.3 s dead time + 2 s of ramp to 2 kW), not to 60 s.
        let on = on + 4000 * MS;
        let hob_on = limit_at_grid(2300.0, 2000.0).with_demand(2300.0);
        let hob_off = limit_at_grid(300.0, -2000.0).with_demand(300.0);
        assert_eq!(step(&mut a, &hob_on, on), None);
        assert_eq!(step(&mut a, &hob_on, on + 2000 * MS), Some(55));
        assert_eq!(step(&mut a, &hob_off, on + 2500 * MS), Some(8));
        let held = a.raise_backoff(on + 2500 * MS);
        assert!(held > 2000 * MS && held < 2700 * MS, "{held:?}");
        // A pulse that stays long enough is raised after the back-off, and being worth
        // following clears it: the next pulse is followed at once.
        let on = on + 6000 * MS;
        assert_eq!(step(&mut a, &hob_on, on), None);
        assert_eq!(step(&mut a, &hob_on, on + held), Some(55));
        assert_eq!(step(&mut a, &hob_off, on + 4000 * MS), Some(8));
        assert_eq!(a.raise_backoff(on + 4000 * MS), Duration::ZERO);
        assert_eq!(
            pulse(&mut a, on + 8000 * MS, 4000 * MS),
            (Some(55), Some(8))
        );
    }

    #[test]
    fn a_small_load_cycling_is_not_worth_two_writes_a_cycle() {
        let t = Instant::now();
        let mut a = holding(10, t);
        // 150 W on and off: the demand falls by less than five points of rated power.
        let up = limit_at_grid(550.0, 150.0).with_demand(550.0);
        let down = limit_at_grid(400.0, -150.0).with_demand(400.0);
        let on = t + 10_000 * MS;
        assert_eq!(step(&mut a, &up, on), Some(14));
        assert_eq!(step(&mut a, &down, on + 4000 * MS), Some(10));
        assert_eq!(
            a.raise_backoff(on + 4000 * MS),
            2 * a.config().min_write_interval
        );
    }

    #[test]
    fn a_load_step_is_not_held_back_by_a_deadband_raise_settling() {
        let t = Instant::now();
        let mut a = holding(7, t);
        // Noise asks for one point more: it must persist for the settle time...
        let s0 = t + 5000 * MS;
        assert_eq!(step(&mut a, &limit_at_grid(310.0, 20.0), s0), None);
        // ...and a load coming on meanwhile is raised at once, not after that settle time.
        let s1 = s0 + 2000 * MS;
        assert_eq!(step(&mut a, &limit_at_grid(2300.0, 2000.0), s1), Some(55));
    }

    #[test]
    fn extreme_configuration_and_inputs_do_not_panic() {
        let t = Instant::now();
        let cfg = ActuatorConfig {
            rated_w: f64::NAN,
            encoding: PERCENT,
            failsafe: Setting(u16::MAX),
            deadband: u16::MAX,
            min_write_interval: Duration::MAX,
            settle_time: Duration::MAX,
            urgent_export_w: f64::NAN,
            reversal_window: Duration::MAX,
            load_fall_w: f64::NAN,
            plant: PlantModel {
                dead_time: Duration::MAX,
                ramp_up_w_per_s: 0.0,
                ramp_down_w_per_s: f64::NAN,
                tolerance_w: f64::NAN,
                timing_slack: Duration::MAX,
            },
            max_raise_backoff: Duration::MAX,
            backoff_reset: Duration::MAX,
            retry_interval: Duration::ZERO,
        };
        let mut a = Actuator::new(cfg);
        let decisions = [
            limit(f64::NAN),
            limit(f64::INFINITY).with_grid(f64::NEG_INFINITY),
            Decision::new(Target::FailSafe, Status::MeterStale),
            Decision::shutdown(),
            limit(-1e300).with_grid(f64::NAN),
        ];
        for (i, d) in decisions.iter().cycle().take(50).enumerate() {
            let now = t + (i as u32) * 100 * MS;
            if let Some(v) = a.next_write(d, now) {
                assert!(v <= PERCENT.full_power());
                a.confirm_written(v, now);
            }
        }
        assert!(a.writes() > 0);
    }

    #[test]
    fn zero_deadband_is_raised_to_one() {
        let cfg = ActuatorConfig {
            deadband: 0,
            ..config()
        };
        assert_eq!(Actuator::new(cfg).config().deadband, 1);
        let mut a = actuator();
        a.reconfigure(cfg);
        assert_eq!(a.config().deadband, 1);
    }

    #[test]
    fn reconfiguring_rated_power_keeps_the_register_state() {
        let t = Instant::now();
        let mut a = holding(50, t);
        let settings = Settings {
            rated_w: 3000.0,
            ..Settings::default()
        };
        a.reconfigure(ActuatorConfig::new(&settings, PERCENT));
        assert_eq!(a.applied_watts(), Some(1500.0));
        assert_eq!(next(&mut a, &limit(1500.0), t + 10 * MS), None);
        assert_eq!(next(&mut a, &limit(900.0), t + 20 * MS), Some(30));
    }
}
