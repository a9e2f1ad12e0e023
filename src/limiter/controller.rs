//! The limiter as the daemon runs it: readings in, one decision per step, the next write out.
//!
//! Vendor-neutral and pure (no D-Bus, no Modbus, no clock of its own): the daemon
//! (`app/generation.rs`) and the `plant_day` benchmark drive this same code, so what the
//! benchmark measures is what the daemon does. The inverter's strategy enters only as the
//! [`PercentOfRated`] encoding of its limit setting; which registers a setting is written to is
//! the device's business.

use std::time::Instant;

use super::actuator::{Actuator, ActuatorConfig};
use super::policy::{
    BatteryReadings, Decision, ExternalLimit, Inputs, Reading, Settings, Status, Target, decide,
    pv_extrapolated,
};
use super::strategy::{PercentOfRated, Setting};

pub struct Controller {
    settings: Settings,
    inputs: Inputs,
    /// The PV reading before `inputs.pv`, for its slope while the inverter ramps.
    pv_before: Option<Reading>,
    /// Paces the writes, once an inverter's encoding is known.
    actuator: Option<Actuator>,
    decision: Decision,
}

impl Controller {
    pub fn new(settings: Settings) -> Self {
        Controller {
            settings,
            inputs: Inputs::default(),
            pv_before: None,
            actuator: None,
            decision: Decision::new(Target::Hold, Status::NotConfigured),
        }
    }

    /// An inverter to drive, with its encoding: from now on decisions lead to writes. Attaching
    /// again (the inverter returned) keeps the write history and counters.
    pub fn attach_inverter(&mut self, encoding: PercentOfRated) {
        let config = ActuatorConfig::new(&self.settings, encoding);
        match &mut self.actuator {
            Some(a) => a.reconfigure(config),
            None => self.actuator = Some(Actuator::new(config)),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New settings (a setting changed, the rated power was read): what the inverter holds and
    /// the pacing state are kept.
    pub fn configure(&mut self, settings: Settings) {
        self.settings = settings;
        if let Some(a) = &mut self.actuator {
            let encoding = a.config().encoding;
            a.reconfigure(ActuatorConfig::new(&settings, encoding));
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
        if self.inputs.pv.is_some_and(|latest| latest.at != pv.at) {
            self.pv_before = self.inputs.pv;
        }
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
        self.pv_before = None;
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
    }

    /// The inverter was (re)initialised and holds `setting`, as read back.
    pub fn inverter_reinitialised(&mut self, setting: Setting) {
        if let Some(a) = &mut self.actuator {
            a.inverter_reinitialised(setting);
        }
    }

    /// The daemon's control step, made on each fresh grid reading: the inputs as they stood when
    /// the grid was read ([`inputs_at_grid_time`](Self::inputs_at_grid_time)), the policy's
    /// decision, and the setting to write now, if any (never while the inverter is offline). The
    /// caller writes it and reports back with [`written`](Self::written).
    pub fn step(&mut self, now: Instant, inverter_online: bool) -> Option<Setting> {
        self.decision = decide(&self.inputs_at_grid_time(), &self.settings, now);
        match &mut self.actuator {
            Some(a) if inverter_online => a.next_write(&self.decision, now),
            _ => None,
        }
    }

    /// The inputs with the PV power estimated for the moment the grid power was read: on one
    /// bus the two are read tens of milliseconds apart, and `grid + pv` is only invariant while
    /// the inverter ramps if both are taken at the same moment.
    pub fn inputs_at_grid_time(&self) -> Inputs {
        let pv = match (self.inputs.pv, self.inputs.grid) {
            (Some(pv), Some(grid)) => Some(pv_extrapolated(
                self.pv_before,
                pv,
                grid.at,
                self.applied_watts(),
            )),
            (pv, _) => pv,
        };
        Inputs { pv, ..self.inputs }
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
}
