//! The limiter as the daemon runs it: readings in, one decision per step, the next write out.
//!
//! Vendor-neutral and pure (no D-Bus, no Modbus, no clock of its own): the daemon
//! (`app/generation.rs`) and the `plant_day` benchmark drive this same code, so what the
//! benchmark measures is what the daemon does. The inverter's strategy enters only as the
//! [`PercentOfRated`] encoding of its limit setting; which registers a setting is written to is
//! the device's business.
//!
//! The PV power in the demand estimate is the inverter's expected output at the grid reading's
//! instant ([`OutputEstimate`]): modelled from the limits written (dead time, ramp, cap) and
//! re-anchored by each PV reading as it comes, so a sparse PV reading on a paced bus, or one
//! taken before the last write, still gives a consistent `grid + pv`.

use std::time::{Duration, Instant};

use super::actuator::{Actuator, ActuatorConfig};
use super::estimate::{OutputEstimate, PlantModel};
use super::policy::{
    BatteryReadings, Decision, ExternalLimit, Inputs, Reading, Settings, Status, Target, decide,
};
use super::strategy::{PercentOfRated, Setting};

/// While the limiter limits, the inverter's output is read once per this many of its command
/// slots while a write's effect is still to be seen: half the slots stay free for limit writes.
const PV_SLOTS_PER_READ: u32 = 2;
/// Once the output estimate is settled, the inverter's output is read this often (or every
/// `PV_SLOTS_PER_READ` slots if longer): only the sun can move it then, and a limit write
/// rarely finds the inverter's slot taken (issue 14: lowering on export p95 ≤ 0.5 s).
const PV_SETTLED_READ: Duration = Duration::from_secs(2);

/// How often the limiter wants the inverter's output read while it limits, for an inverter
/// that takes a command every `command_interval`; `settled`: [`Controller::pv_settled`]. The
/// estimate carries the output between readings. The daemon's schedule and the closed-loop
/// benchmark both take the pace from here.
pub fn pv_read_interval(settled: bool, command_interval: Duration) -> Duration {
    let slots = command_interval * PV_SLOTS_PER_READ;
    if settled {
        PV_SETTLED_READ.max(slots)
    } else {
        slots
    }
}

pub struct Controller {
    settings: Settings,
    inputs: Inputs,
    /// The inverter's expected output between PV readings.
    estimate: OutputEstimate,
    /// Paces the writes, once an inverter's encoding is known.
    actuator: Option<Actuator>,
    decision: Decision,
}

impl Controller {
    pub fn new(settings: Settings) -> Self {
        Controller {
            settings,
            inputs: Inputs::default(),
            estimate: OutputEstimate::default(),
            actuator: None,
            decision: Decision::new(Target::Hold, Status::NotConfigured),
        }
    }

    /// An inverter to drive, with its encoding: from now on decisions lead to writes. Attaching
    /// again (the inverter returned) keeps the write history and counters.
    pub fn attach_inverter(&mut self, encoding: PercentOfRated) {
        let config = self.actuator_config(encoding);
        match &mut self.actuator {
            Some(a) => a.reconfigure(config),
            None => self.actuator = Some(Actuator::new(config)),
        }
    }

    /// How the inverter is modelled to follow a new limit (default: 0.3 s dead time, 1000 W/s).
    pub fn set_plant_model(&mut self, model: PlantModel) {
        self.estimate.set_model(model);
        self.reconfigure_actuator();
    }

    /// The actuator's configuration for the settings, the plant model and `encoding`.
    fn actuator_config(&self, encoding: PercentOfRated) -> ActuatorConfig {
        ActuatorConfig {
            plant: self.estimate.model(),
            ..ActuatorConfig::new(&self.settings, encoding)
        }
    }

    /// Passes new settings or a new plant model on; what the inverter holds and the pacing
    /// state are kept.
    fn reconfigure_actuator(&mut self) {
        if let Some(encoding) = self.actuator.as_ref().map(|a| a.config().encoding) {
            let config = self.actuator_config(encoding);
            if let Some(a) = &mut self.actuator {
                a.reconfigure(config);
            }
        }
    }

    /// Whether the PV power is settled at `now`: the latest reading shows every write done and
    /// nothing moves (the inverter may then be read sparsely: only the sun can change it).
    pub fn pv_settled(&self, now: Instant) -> bool {
        self.estimate.settled(now)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New settings (a setting changed, the rated power was read): what the inverter holds and
    /// the pacing state are kept.
    pub fn configure(&mut self, settings: Settings) {
        let rated_changed = settings.rated_w != self.settings.rated_w;
        self.settings = settings;
        self.reconfigure_actuator();
        if rated_changed {
            // The same setting is another cap in watts now.
            self.estimate.set_cap(self.applied_watts());
        }
    }

    /// A fresh grid power reading (W, + import).
    pub fn on_grid(&mut self, grid: Reading) {
        self.inputs.grid = Some(grid);
    }

    /// A fresh import − export energy reading (kWh).
    pub fn on_consumption(&mut self, consumption: Reading) {
        self.inputs.consumption = Some(consumption);
    }

    /// A PV (inverter AC power) reading; the same reading again changes nothing.
    pub fn on_pv(&mut self, pv: Reading) {
        self.estimate.on_reading(pv);
        self.inputs.pv = Some(pv);
    }

    /// The latest battery and MultiPlus values.
    pub fn on_battery(&mut self, battery: BatteryReadings) {
        self.inputs.battery = battery;
    }

    /// An accepted `/Ac/PowerLimit` write (external mode).
    pub fn on_external_limit(&mut self, limit: ExternalLimit) {
        self.inputs.external_limit = Some(limit);
    }

    pub fn meter_lost(&mut self) {
        self.inputs.grid = None;
        self.inputs.consumption = None;
    }

    /// The inverter stopped answering: no PV readings, its setting unknown until re-initialised.
    pub fn inverter_lost(&mut self) {
        self.inputs.pv = None;
        self.estimate.reset();
        if let Some(a) = &mut self.actuator {
            a.inverter_lost();
        }
    }

    /// The inverter's setting is no longer what was believed (it read back otherwise): the next
    /// decision is written at once, as after a start. Readings are kept.
    pub fn setting_unknown(&mut self) {
        if let Some(a) = &mut self.actuator {
            a.inverter_lost();
        }
        self.estimate.set_cap(None);
    }

    /// The inverter was (re)initialised and holds `setting`, as read back.
    pub fn inverter_reinitialised(&mut self, setting: Setting) {
        if let Some(a) = &mut self.actuator {
            a.inverter_reinitialised(setting);
        }
        self.estimate.set_cap(self.applied_watts());
    }

    /// The daemon's control step, made on each fresh grid reading: the inputs as they stood when
    /// the grid was read ([`inputs_at_grid_time`](Self::inputs_at_grid_time)), the policy's
    /// decision, and the setting to write now, if any (never while the inverter is offline). The
    /// caller writes it and reports back with [`written`](Self::written).
    pub fn step(&mut self, now: Instant, inverter_online: bool) -> Option<Setting> {
        let decision = decide(&self.inputs_at_grid_time(), &self.settings, now);
        self.decision = self.sampled_by_the_estimate(decision);
        match &mut self.actuator {
            Some(a) if inverter_online => a.next_write(&self.decision, now),
            _ => None,
        }
    }

    /// The inputs with the PV power estimated for the moment the grid power was read: `grid +
    /// pv` is only invariant while the inverter ramps if both stand for the same moment, and
    /// on a paced bus the PV reading may be a second old and predate the last write. The
    /// estimate keeps the PV reading's own instant, so rule 3's freshness still sees how old
    /// the data behind it is.
    pub fn inputs_at_grid_time(&self) -> Inputs {
        let pv = match (self.inputs.pv, self.inputs.grid) {
            (Some(_), Some(grid)) => self.estimate.output_at(grid.at),
            (pv, _) => pv,
        };
        Inputs { pv, ..self.inputs }
    }

    /// A tracking decision stands for the grid reading's instant when the model, with every
    /// write since the PV reading, expects the output at that instant where the reading left it
    /// (within the model's tolerance): the actuator's "readings predate the last write" rule,
    /// which made raises wait for a fresh PV reading, is then met. While the model expects the
    /// output to move (a ramp after a write) its value is only as good as its dead time and
    /// ramp, which a real inverter may not share; a raise then waits, as before, for a PV
    /// reading taken after the write (an export is still lowered at once). Without a known cap
    /// the model cannot account for a write at all.
    fn sampled_by_the_estimate(&self, decision: Decision) -> Decision {
        let (Some(_), Some(grid)) = (decision.sampled_at, self.inputs.grid) else {
            return decision;
        };
        if self.estimate.expects_no_move(grid.at) && self.estimate.cap_at(grid.at).is_finite() {
            decision.sampled_at(grid.at)
        } else {
            decision
        }
    }

    /// The result of writing `setting`.
    pub fn written(&mut self, setting: Setting, ok: bool, now: Instant) {
        if let Some(a) = &mut self.actuator {
            if ok {
                a.confirm_written(setting, now);
            } else {
                a.write_failed(now);
            }
        }
        if ok && let Some(watts) = self.applied_watts() {
            self.estimate.on_write(watts, now);
        }
    }

    /// The setting that restores full power on a clean stop, if one is needed.
    pub fn shutdown_write(&mut self, now: Instant) -> Option<Setting> {
        self.actuator
            .as_mut()?
            .next_write(&Decision::shutdown(), now)
    }

    /// The last decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The latest readings (for log lines).
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// The setting the inverter is believed to hold.
    pub fn applied(&self) -> Option<Setting> {
        self.actuator.as_ref()?.applied()
    }

    /// The applied limit in watts.
    pub fn applied_watts(&self) -> Option<f64> {
        self.actuator.as_ref()?.applied_watts()
    }

    /// Confirmed writes since start.
    pub fn writes(&self) -> u64 {
        self.actuator.as_ref().map_or(0, Actuator::writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PERCENT: PercentOfRated = PercentOfRated { min: 2, max: 100 };
    const MS: Duration = Duration::from_millis(1);

    fn limiting() -> Controller {
        let mut c = Controller::new(Settings {
            energy_difference: 1000,
            derate_enabled: true,
            ..Settings::default()
        });
        c.attach_inverter(PERCENT);
        c.inverter_reinitialised(Setting(100));
        c
    }

    #[test]
    fn a_step_decides_on_the_inputs_and_asks_for_the_write() {
        let t = Instant::now();
        let mut c = limiting();
        c.on_consumption(Reading::new(950.0, t));
        c.on_pv(Reading::new(2000.0, t));
        c.on_grid(Reading::new(-500.0, t + 10 * MS));
        // Demand 1500 W of 4200 W, exporting: lowered at once to 36 %.
        assert_eq!(c.step(t + 20 * MS, true), Some(Setting(36)));
        assert_eq!(c.decision().status, Status::Limiting);
        assert_eq!(c.decision().limit_w(), Some(1500.0));
        // Asked again until written; nothing while the inverter is offline.
        assert_eq!(c.step(t + 30 * MS, false), None);
        c.written(Setting(36), true, t + 40 * MS);
        assert_eq!(c.applied(), Some(Setting(36)));
        assert_eq!(c.applied_watts(), Some(1512.0));
        assert_eq!(c.writes(), 1);
    }

    #[test]
    fn a_setting_found_changed_is_rewritten_at_once() {
        let t = Instant::now();
        let mut c = limiting();
        c.on_consumption(Reading::new(950.0, t));
        c.on_pv(Reading::new(2000.0, t));
        c.on_grid(Reading::new(-500.0, t + 10 * MS));
        let limit = c.step(t + 20 * MS, true).unwrap();
        c.written(limit, true, t + 30 * MS);
        // Read back at full power (a reset), now importing: a raise the other way round would
        // wait, but the decision stands and goes out at once.
        c.setting_unknown();
        assert_eq!(c.applied(), None);
        c.on_grid(Reading::new(300.0, t + 40 * MS));
        c.on_pv(Reading::new(1200.0, t + 40 * MS));
        assert_eq!(c.step(t + 50 * MS, true), Some(limit));
        assert!(c.inputs().pv.is_some(), "readings kept");
    }

    #[test]
    fn pv_is_taken_at_the_grid_reading_time() {
        let t = Instant::now();
        let mut c = limiting();
        // Ramping up at 1000 W/s; the grid is read 100 ms after the last PV reading.
        c.on_pv(Reading::new(1000.0, t));
        c.on_pv(Reading::new(1200.0, t + 200 * MS));
        c.on_pv(Reading::new(1200.0, t + 200 * MS)); // the same reading again
        c.on_grid(Reading::new(0.0, t + 300 * MS));
        let pv = c.inputs_at_grid_time().pv.map(|r| r.value);
        assert!(pv.is_some_and(|w| (w - 1300.0).abs() < 1e-6), "{pv:?}");
        c.inverter_lost();
        assert_eq!(c.inputs_at_grid_time().pv, None);
        assert_eq!(c.applied(), None);
    }

    #[test]
    fn without_an_inverter_it_decides_but_writes_nothing() {
        let t = Instant::now();
        let mut c = Controller::new(Settings::default());
        assert_eq!(c.step(t, true), None);
        assert_eq!(c.decision().status, Status::NotConfigured);
        assert_eq!(c.shutdown_write(t), None);
        assert_eq!(c.writes(), 0);
    }

    #[test]
    fn settings_reach_the_actuator_and_shutdown_restores_full_power() {
        let t = Instant::now();
        let mut c = limiting();
        c.written(Setting(40), true, t);
        c.configure(Settings {
            rated_w: 3000.0,
            ..*c.settings()
        });
        assert_eq!(c.applied_watts(), Some(1200.0));
        assert_eq!(c.shutdown_write(t + MS), Some(Setting(100)));
    }

    /// A small closed loop for the estimate's tests: an inverter with a 0.3 s dead time and a
    /// 1000 W/s ramp, the grid read every 200 ms, the inverter every `pv_every` (sparse, as on
    /// a paced bus), writes landing at the decision's instant.
    struct Loop {
        c: Controller,
        t0: Instant,
        pv: f64,
        cap: f64,
        /// Caps written, acting 0.3 s later: (acts at, cap W); a handful at most.
        acting: Vec<(Instant, f64)>,
        pv_every: u32,
        writes: Vec<(Duration, u16)>,
        exported_wh: f64,
        imported_wh: f64,
        /// The meter's import − export energy (kWh) at a time (s), read with each grid reading.
        consumption: fn(f64) -> f64,
    }

    const STEP: Duration = Duration::from_millis(50);

    impl Loop {
        fn new(load: f64, pv_every: u32) -> Self {
            let t0 = Instant::now();
            let mut c = limiting();
            c.on_consumption(Reading::new(950.0, t0));
            let mut l = Loop {
                c,
                t0,
                pv: 4200.0,
                cap: 4200.0,
                acting: Vec::new(),
                pv_every,
                writes: Vec::new(),
                exported_wh: 0.0,
                imported_wh: 0.0,
                consumption: |_| 950.0,
            };
            // Settle on the load first.
            l.run(Duration::ZERO, Duration::from_secs(20), |_| load, |_| 0.0);
            l.writes.clear();
            l
        }

        /// Runs from `from` to `to` (since t0) with `load(s)` and grid noise `noise(k)`.
        fn run(
            &mut self,
            from: Duration,
            to: Duration,
            load: impl Fn(f64) -> f64,
            noise: impl Fn(u32) -> f64,
        ) {
            let mut k = (from.as_millis() / STEP.as_millis()) as u32;
            loop {
                let since = STEP * k;
                if since >= to {
                    break;
                }
                let now = self.t0 + since;
                if let Some(&(acts, cap)) = self.acting.first()
                    && acts <= now
                {
                    self.cap = cap;
                    self.acting.remove(0);
                }
                let step_w = 1000.0 * STEP.as_secs_f64();
                self.pv = (self.pv + (self.cap - self.pv).clamp(-step_w, step_w)).max(0.0);
                let grid = load(since.as_secs_f64()) - self.pv;
                let wh = grid * STEP.as_secs_f64() / 3600.0;
                if grid < 0.0 {
                    self.exported_wh -= wh;
                } else {
                    self.imported_wh += wh;
                }
                if k % (self.pv_every * 4) == 1 {
                    self.c.on_pv(Reading::new(self.pv, now));
                }
                if k.is_multiple_of(4) {
                    let kwh = (self.consumption)(since.as_secs_f64());
                    self.c.on_consumption(Reading::new(kwh, now));
                    self.c.on_grid(Reading::new(grid + noise(k), now));
                    if let Some(v) = self.c.step(now, true) {
                        self.c.written(v, true, now);
                        self.acting.push((now + 300 * MS, f64::from(v.0) * 42.0));
                        self.writes.push((since, v.0));
                    }
                }
                k += 1;
            }
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_load_rise_is_raised_at_the_first_grid_reading_without_waiting_for_a_pv_reading() {
        // The inverter read every 2 s: a PV reading beside each grid reading is long gone.
        let mut l = Loop::new(1500.0, 10);
        l.run(
            secs(20.0),
            secs(40.0),
            |s| if s < 30.0 { 1500.0 } else { 2500.0 },
            |_| 0.0,
        );
        let (at, percent) = l.writes[0];
        assert!(at >= secs(30.0) && at <= secs(30.25), "{:?}", l.writes);
        assert_eq!(percent, 60, "{:?}", l.writes);
        assert_eq!(l.writes.len(), 1, "one write per load step: {:?}", l.writes);
        // Soon after the write, another rise: the PV reading predates the write, the model
        // carries it (one more write, at once after the write interval).
        l.run(
            secs(40.0),
            secs(60.0),
            |s| if s < 41.5 { 2500.0 } else { 3300.0 },
            |_| 0.0,
        );
        let raised: Vec<_> = l.writes.iter().filter(|w| w.0 > secs(40.0)).collect();
        assert_eq!(raised.len(), 1, "{:?}", l.writes);
        assert!(raised[0].0 <= secs(41.8), "{:?}", l.writes);
        assert_eq!(raised[0].1, 79);
    }

    #[test]
    fn a_real_overshoot_into_export_is_lowered_at_once_and_not_chased_down() {
        let mut l = Loop::new(3000.0, 4);
        l.run(
            secs(20.0),
            secs(40.0),
            |s| if s < 30.0 { 3000.0 } else { 1500.0 },
            |_| 0.0,
        );
        let (at, percent) = l.writes[0];
        assert!(at >= secs(30.0) && at <= secs(30.25), "{:?}", l.writes);
        assert_eq!(percent, 36, "{:?}", l.writes);
        // While the inverter ramps down the grid still exports, the PV readings lag: the
        // model keeps `grid + pv` at the demand, so nothing lower follows.
        assert_eq!(l.writes.len(), 1, "{:?}", l.writes);
    }

    #[test]
    fn noise_at_a_percent_boundary_writes_nothing() {
        // 2100 W is exactly 50 %; the meter's noise moves the demand ±15 W around it.
        let mut l = Loop::new(2100.0, 4);
        let noise = |k: u32| {
            if (k / 4).is_multiple_of(3) {
                15.0
            } else {
                -12.0
            }
        };
        l.run(secs(20.0), secs(200.0), |_| 2100.0, noise);
        assert!(l.writes.len() <= 1, "{:?}", l.writes);
    }

    /// The writes from `from` on.
    fn writes_after(l: &Loop, from: f64) -> Vec<(Duration, u16)> {
        l.writes
            .iter()
            .copied()
            .filter(|w| w.0 >= secs(from))
            .collect()
    }

    #[test]
    fn a_hob_pulsing_slowly_enough_is_followed_pulse_after_pulse() {
        // 2 kW on for 4 s, off for 4 s, for 10 minutes: 75 pulses, each long enough for the
        // inverter (0.3 s dead time, 2 s of ramp) to deliver the raise and save more import
        // than its end exports.
        let mut l = Loop::new(1500.0, 4);
        let hob = |s: f64| 1500.0 + if (s % 8.0) < 4.0 { 2000.0 } else { 0.0 };
        l.run(secs(20.0), secs(620.0), hob, |_| 0.0);
        // Still followed after 50 pulses: every pulse raised within 0.5 s of coming on.
        for start in (424..616).step_by(8) {
            let start = f64::from(start);
            let raised = l
                .writes
                .iter()
                .any(|&(at, p)| at >= secs(start) && at <= secs(start + 0.5) && p >= 80);
            assert!(
                raised,
                "pulse at {start} s: {:?}",
                writes_after(&l, start - 8.0)
            );
        }
        let n = l.writes.len();
        assert!(n <= 2 * 75 + 5, "{n} writes for 75 pulses: {:?}", l.writes);
        // Holding would import 2 kW × 4 s = 2.2 Wh a pulse; following, the dead time and the
        // ramp's.
        let import_per_pulse = l.imported_wh / 75.0;
        assert!(import_per_pulse < 1.0, "{import_per_pulse:.2} Wh per pulse");
        let export_per_pulse = l.exported_wh / 75.0;
        assert!(export_per_pulse < 1.0, "{export_per_pulse:.2} Wh per pulse");
    }

    #[test]
    fn a_hob_pulsing_faster_than_the_inverter_follows_is_held() {
        // 2 kW on for 2 s, off for 2 s, for 10 minutes: 150 pulses. A raise would land and
        // ramp as the hob goes off, and export more than it saved: after a few pulses the limit
        // stays at the hob-off level.
        let mut l = Loop::new(1500.0, 4);
        let hob = |s: f64| 1500.0 + if (s % 4.0) < 2.0 { 2000.0 } else { 0.0 };
        l.run(secs(20.0), secs(620.0), hob, |_| 0.0);
        let n = l.writes.len();
        assert!(n <= 25, "{n} writes for 150 pulses: {:?}", l.writes);
        let export_per_pulse = l.exported_wh / 150.0;
        assert!(export_per_pulse < 0.2, "{export_per_pulse:.2} Wh per pulse");
    }

    #[test]
    fn a_kettle_while_the_hob_pulses_is_raised_at_once() {
        let mut l = Loop::new(1000.0, 4);
        let hob = |s: f64| 1000.0 + if (s % 4.0) < 2.0 { 2000.0 } else { 0.0 };
        // The hob cycles too fast to follow, long enough for the raise back-off to hold it.
        l.run(secs(20.0), secs(200.0), hob, |_| 0.0);
        let before = l.writes.len();
        let with_kettle = |s: f64| hob(s) + if s >= 200.0 { 2800.0 } else { 0.0 };
        l.run(secs(200.0), secs(260.0), with_kettle, |_| 0.0);
        let first = l.writes.get(before).copied();
        assert!(
            first.is_some_and(|(at, p)| at <= secs(200.5) && p >= 90),
            "{first:?} after {:?}",
            &l.writes[..before]
        );
        assert!(l.writes.len() - before <= 8, "{:?}", &l.writes[before..]);
    }

    #[test]
    fn a_policy_flapping_on_a_steady_load_backs_off() {
        // The meter's energy moves the offset across the limiting window's edge every 4 s
        // (rule 5 ↔ rule 6): full power, then the limit again, on a load that does not move.
        // Each raise is reversed with the demand unchanged: an overshoot, backed off.
        let mut l = Loop::new(1500.0, 4);
        l.consumption = |s| if (s % 8.0) < 4.0 { 950.0 } else { 999.0 };
        l.run(secs(20.0), secs(620.0), |_| 1500.0, |_| 0.0);
        // Without the back-off: two writes every 8 s, 150 in all.
        let n = l.writes.len();
        assert!(n <= 20, "{n} writes: {:?}", l.writes);
    }
}
