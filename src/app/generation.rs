//! The generation limiter wired into the daemon: its settings in com.victronenergy.settings, its
//! inputs (own meter and inverter read in-process, battery and vebus through the D-Bus watcher),
//! its paths on the PV inverter service, and the writes of the inverter's limit setting. The
//! decisions are the [`Controller`]'s; the registers are the inverter's [`PowerLimiter`]'s.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cli::Options;
use crate::devices::{GridMeter, LimitedInverter, PowerLimiter, RegisterWrite, RegisterWriter};
use crate::limiter::{
    BatteryReadings, Controller, ExternalLimit, Mode, Reading, Setting,
    Settings as LimiterSettings, Target,
};
use crate::registers::RegisterMap;
use crate::vedbus::{
    self, BusAddress, Format, Service, SettingDef, Settings, Value, Watcher, Writable,
};

pub const ENERGY_DIFFERENCE: &str = "/Settings/DynamicGeneration/energyDifference";
pub const DERATE_GENERATION: &str = "/Settings/DynamicGeneration/derateGeneration";
pub const MODE: &str = "/Settings/DynamicGeneration/Mode";
pub const EXPORT_LIMIT: &str = "/Settings/DynamicGeneration/ExportLimit";

const BATTERY: &str = "com.victronenergy.battery";
const VEBUS: &str = "com.victronenergy.vebus";
const WATCHED_PATHS: [&str; 7] = [
    "/Dc/0/Power",
    "/Dc/0/Voltage",
    "/Soc",
    "/Ac/ActiveIn/P",
    "/State",
    "/Leds/Bulk",
    "/Leds/Absorption",
];
/// Decisions are made on every fresh meter reading, and at least this often otherwise so that a
/// stale meter or an expired /Ac/PowerLimit is noticed.
const DECIDE_AT_LEAST_EVERY: Duration = Duration::from_millis(250);

/// Which of the limiter's inputs it needs read as fast as the bus allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadNeeds {
    pub grid: bool,
    pub pv: bool,
}

pub struct Generation {
    controller: Controller,
    /// Rated power from the command line, used until the inverter's own is read.
    rated_fallback: Option<f64>,
    /// The strategy of the inverter being driven, once one is found.
    limiter: Option<&'static dyn PowerLimiter>,
    watcher: Watcher,
    last_decided: Option<Instant>,
    /// The setting the controller wants written; cleared by [`written`](Self::written).
    pending: Option<Setting>,
}

impl Generation {
    pub fn new(
        bus: &BusAddress,
        settings: &mut Settings,
        opts: &Options,
    ) -> Result<Generation, vedbus::Error> {
        let defs = [
            SettingDef::new(ENERGY_DIFFERENCE, 0).range(0, 1_000_000),
            SettingDef::new(DERATE_GENERATION, 0).range(0, 1),
            SettingDef::new(MODE, 1).range(0, 2),
            SettingDef::new(EXPORT_LIMIT, opts.export_limit_w.round() as i32).range(0, 100_000),
        ];
        let values = settings.add_settings(&defs)?;
        let mut limiter = LimiterSettings {
            rated_w: opts.rated_power_w.unwrap_or(4200.0),
            export_limit_w: opts.export_limit_w,
            stale_grid: opts.stale_grid,
            external_timeout: opts.power_limit_timeout,
            ..LimiterSettings::default()
        };
        for (def, v) in defs.iter().zip(&values) {
            apply(&mut limiter, &def.path, v);
        }
        let watcher = Watcher::connect(bus, &[BATTERY, VEBUS], &WATCHED_PATHS)?;
        info!(
            "limiter: mode {:?}, energyDifference {}, derateGeneration {}, export limit {:.0} W",
            limiter.mode,
            limiter.energy_difference,
            limiter.derate_enabled as i32,
            limiter.export_limit_w
        );
        Ok(Generation {
            controller: Controller::new(limiter),
            rated_fallback: opts.rated_power_w,
            limiter: None,
            watcher,
            last_decided: None,
            pending: None,
        })
    }

    /// What the limiter needs read as fast as the bus allows: the grid power while it tracks the
    /// site's demand (its own limiter holding a limit), the inverter's output while it limits.
    /// Otherwise both are read at the ordinary pace (the publish interval, every few seconds).
    pub fn needs(&self) -> ReadNeeds {
        let tracking = self.controller.settings().mode == Mode::OwnLimiter
            && matches!(self.controller.decision().target, Target::Limit(_));
        ReadNeeds {
            grid: tracking,
            pv: tracking,
        }
    }

    /// When [`decide`](Self::decide) must run at the latest without a fresh meter reading.
    pub fn decide_by(&self) -> Option<Instant> {
        self.last_decided.map(|t| t + DECIDE_AT_LEAST_EVERY)
    }

    /// The register write the controller wants made, if any.
    pub fn pending_write(&self) -> Option<RegisterWrite> {
        Some(self.limiter?.write(self.pending?))
    }

    pub fn watcher(&mut self) -> &mut Watcher {
        &mut self.watcher
    }

    /// A change of one of the limiter's settings (from localsettings). Returns whether it was one.
    pub fn apply_setting(&mut self, path: &str, v: &Value) -> bool {
        if ![ENERGY_DIFFERENCE, DERATE_GENERATION, MODE, EXPORT_LIMIT].contains(&path) {
            return false;
        }
        let mut settings = *self.controller.settings();
        if apply(&mut settings, path, v) {
            info!("limiter: {path} = {v:?}");
            self.controller.configure(settings);
        } else {
            warn!("limiter: ignoring {path} = {v:?} (out of range or wrong type)");
        }
        true
    }

    /// A fresh reading of the limiter's meter: grid power and consumption energy.
    pub fn on_meter(&mut self, meter: &GridMeter, map: &RegisterMap) {
        if let Some(power) = meter.power(map) {
            self.controller.on_grid(power);
        }
        if let Some(consumption) = meter.consumption(map) {
            self.controller.on_consumption(consumption);
        }
    }

    pub fn meter_lost(&mut self) {
        self.controller.meter_lost();
    }

    /// The inverter the limiter drives from now on (found, or found again).
    pub fn attach_inverter(&mut self, inverter: &LimitedInverter) {
        self.limiter = Some(inverter.limiter);
        self.controller.attach_inverter(inverter.limiter.encoding());
    }

    /// A fresh inverter reading: AC power and, once known, its rated power.
    pub fn on_inverter(&mut self, inverter: &LimitedInverter, map: &RegisterMap) {
        if let Some(pv) = inverter.ac_power(map) {
            self.controller.on_pv(pv);
        }
        let settings = *self.controller.settings();
        if let Some(rated) = inverter.rated_power_w(map)
            && (rated - settings.rated_w).abs() > 0.5
        {
            info!("limiter: rated power {rated:.0} W (read from the inverter)");
            self.controller.configure(LimiterSettings {
                rated_w: rated,
                ..settings
            });
        }
    }

    pub fn inverter_lost(&mut self) {
        self.controller.inverter_lost();
        self.pending = None;
        if let Some(w) = self.rated_fallback {
            self.controller.configure(LimiterSettings {
                rated_w: w,
                ..*self.controller.settings()
            });
        }
    }

    /// The inverter's set-up on its (re)initialisation (docs/reference/limiter.md §3), through its
    /// registers; the controller starts from the setting read back. Without a readable setting
    /// the inverter counts as lost.
    pub fn set_up_inverter(&mut self, regs: &mut dyn RegisterWriter) {
        let Some(limiter) = self.limiter else {
            return;
        };
        let settings = self.controller.settings();
        match limiter.set_up(regs, settings.export_limit_w, settings.rated_w) {
            Some(setting) => self.controller.inverter_reinitialised(setting),
            None => self.inverter_lost(),
        }
    }

    fn refresh_battery(&mut self) {
        let w = &self.watcher;
        let get = |prefix: &str, path: &str| {
            w.get(prefix, path)
                .and_then(|(v, at)| v.as_f64().map(|x| Reading::new(x, at)))
        };
        self.controller.on_battery(BatteryReadings {
            power: get(BATTERY, "/Dc/0/Power"),
            voltage: get(BATTERY, "/Dc/0/Voltage"),
            soc: get(BATTERY, "/Soc"),
            multi_in: get(VEBUS, "/Ac/ActiveIn/P"),
            vebus_state: get(VEBUS, "/State"),
            led_bulk: get(VEBUS, "/Leds/Bulk"),
            led_absorption: get(VEBUS, "/Leds/Absorption"),
        });
    }

    /// Decides now if `fresh` (a new meter reading) or if the last decision is old; the setting
    /// to write, if any, while the inverter is online.
    pub fn decide(&mut self, now: Instant, fresh: bool, inverter_online: bool) -> Option<Setting> {
        let due = fresh
            || self
                .last_decided
                .is_none_or(|t| now.saturating_duration_since(t) >= DECIDE_AT_LEAST_EVERY);
        if due {
            self.refresh_battery();
            let status = self.controller.decision().status;
            let previous = self.pending;
            self.pending = self.controller.step(now, inverter_online);
            self.last_decided = Some(now);
            let decision = *self.controller.decision();
            if decision.status != status {
                info!("limiter: {}", decision.status);
            }
            if let Some(v) = self.pending.filter(|v| previous != Some(*v)) {
                // Writes are rare (a few per step): what led to each is worth a line.
                let w = |r: Option<Reading>| r.map_or(f64::NAN, |r| r.value);
                let inputs = self.controller.inputs();
                info!(
                    "limiter: limit {} % -> {v} % ({}; target {:?}, grid {:.0} W, pv {:.0} W)",
                    self.controller
                        .applied()
                        .map_or("?".to_string(), |p| p.to_string()),
                    decision.status,
                    decision.target,
                    w(inputs.grid),
                    w(inputs.pv),
                );
            }
        }
        self.pending
    }

    /// The result of the pending write.
    pub fn written(&mut self, ok: bool, now: Instant) {
        if let Some(setting) = self.pending.take() {
            self.controller.written(setting, ok, now);
        }
    }

    /// Restores full power on a clean stop (G100 stays enforced by the inverter), if needed.
    pub fn shutdown(&mut self, regs: &mut dyn RegisterWriter, now: Instant) {
        let (Some(limiter), Some(setting)) = (self.limiter, self.controller.shutdown_write(now))
        else {
            return;
        };
        let RegisterWrite { addr, value } = limiter.write(setting);
        let ok = regs.write(addr, value).is_ok();
        info!(
            "restoring full power ({setting} % of rated){}",
            if ok { "" } else { " failed" }
        );
        self.controller.written(setting, ok, Instant::now());
    }

    /// An accepted SetValue on /Ac/PowerLimit: every write is a keep-alive
    /// (docs/reference/limiter.md §4).
    pub fn power_limit_write(&mut self, v: &Value, now: Instant) {
        if self.controller.settings().mode != Mode::External {
            return;
        }
        if let Some(watts) = v.as_f64() {
            self.controller.on_external_limit(ExternalLimit {
                watts,
                last_write: now,
            });
            self.last_decided = None;
        }
    }

    /// Adds the limiter's paths to the PV inverter's service (before it registers).
    pub fn add_paths(&self, svc: &mut Service) {
        svc.add_path(
            "/dynamicGenerationStatus",
            Value::Text(self.controller.decision().status.as_str().into()),
            Format::Plain,
            Writable::No,
        );
        svc.add_path(
            "/dynamicGenerationPower",
            Value::Invalid,
            Format::unit("W", 0),
            Writable::No,
        );
        svc.add_path(
            "/dynamicGenerationMaxPower",
            Value::Invalid,
            Format::unit("W", 0),
            Writable::No,
        );
        svc.add_path(
            "/Ac/PowerLimit",
            Value::Invalid,
            Format::unit("W", 0),
            self.power_limit_writable(),
        );
        svc.add_path(
            "/Internal/LimitWrites",
            Value::Int(0),
            Format::Plain,
            Writable::No,
        );
    }

    fn power_limit_writable(&self) -> Writable {
        match self.controller.settings().mode {
            // Out-of-range writes are accepted and clamped to 0..MaxPower, as dbus-fronius does.
            Mode::External => Writable::Double {
                min: -1e9,
                max: 1e9,
            },
            _ => Writable::No,
        }
    }

    /// Publishes the limiter's state on the PV inverter's service.
    pub fn publish(&self, svc: &mut Service) {
        let applied = self.controller.applied_watts();
        let decision = self.controller.decision();
        let watts = |w: Option<f64>| w.map_or(Value::Invalid, Value::Double);
        svc.set(
            "/dynamicGenerationStatus",
            Value::Text(decision.status.as_str().into()),
        );
        svc.set("/dynamicGenerationPower", watts(decision.limit_w()));
        svc.set("/dynamicGenerationMaxPower", watts(applied));
        svc.set("/Ac/PowerLimit", watts(applied));
        svc.set_writable("/Ac/PowerLimit", self.power_limit_writable());
        svc.set(
            "/Internal/LimitWrites",
            Value::Int(self.controller.writes().min(i32::MAX as u64) as i32),
        );
    }
}

/// Applies one setting value to the limiter's settings; false (nothing changed) when the value
/// is of the wrong type or out of range.
fn apply(s: &mut LimiterSettings, path: &str, v: &Value) -> bool {
    let Some(x) = v.as_f64().filter(|x| x.is_finite() && x.fract() == 0.0) else {
        return false;
    };
    match path {
        ENERGY_DIFFERENCE if (0.0..=1_000_000.0).contains(&x) => s.energy_difference = x as i64,
        DERATE_GENERATION if x == 0.0 || x == 1.0 => s.derate_enabled = x == 1.0,
        MODE => match Mode::from_setting(x as i64) {
            Some(m) => s.mode = m,
            None => return false,
        },
        EXPORT_LIMIT if (0.0..=100_000.0).contains(&x) => s.export_limit_w = x,
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_only_valid_values() {
        let mut s = LimiterSettings::default();
        assert!(apply(&mut s, ENERGY_DIFFERENCE, &Value::Int(1500)));
        assert_eq!(s.energy_difference, 1500);
        for bad in [
            Value::Int(-5),
            Value::Double(1.5),
            Value::Text("x".into()),
            Value::Invalid,
            Value::Int(2_000_000),
        ] {
            assert!(!apply(&mut s, ENERGY_DIFFERENCE, &bad), "{bad:?}");
        }
        assert_eq!(s.energy_difference, 1500);
        assert!(apply(&mut s, DERATE_GENERATION, &Value::Int(1)));
        assert!(s.derate_enabled);
        assert!(!apply(&mut s, DERATE_GENERATION, &Value::Int(2)));
        assert!(s.derate_enabled);
        assert!(apply(&mut s, MODE, &Value::Int(2)));
        assert_eq!(s.mode, Mode::External);
        assert!(!apply(&mut s, MODE, &Value::Int(3)));
        assert_eq!(s.mode, Mode::External);
        assert!(apply(&mut s, EXPORT_LIMIT, &Value::Double(3000.0)));
        assert_eq!(s.export_limit_w, 3000.0);
    }
}
