//! The generation limiter wired into the daemon: its settings in com.victronenergy.settings, its
//! inputs (own meter and inverter read in-process, battery and vebus through the D-Bus watcher),
//! its paths on the PV inverter service, and the HR3 writes the actuator asks for.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cli::Options;
use crate::devices::Values;
use crate::limiter::{
    Actuator, ActuatorConfig, Decision, ExternalLimit, Inputs, Mode, Reading,
    Settings as LimiterSettings, Target, decide, g100_setup, percent_to_watts, pv_extrapolated,
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

pub struct Generation {
    settings: LimiterSettings,
    /// Rated power from the command line, used until the inverter's own is read.
    rated_fallback: Option<f64>,
    inputs: Inputs,
    /// The PV reading before `inputs.pv`, for its slope while the inverter ramps.
    pv_previous: Option<Reading>,
    actuator: Actuator,
    watcher: Watcher,
    decision: Decision,
    last_decided: Option<Instant>,
    /// The HR3 value the actuator wants written; cleared by [`written`](Self::written).
    pending: Option<u16>,
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
            actuator: Actuator::new(ActuatorConfig::from_settings(&limiter)),
            settings: limiter,
            rated_fallback: opts.rated_power_w,
            inputs: Inputs::default(),
            pv_previous: None,
            watcher,
            decision: Decision::new(Target::Hold, crate::limiter::Status::NotConfigured),
            last_decided: None,
            pending: None,
        })
    }

    /// The HR3 value waiting to be written, if any.
    pub fn pending(&self) -> Option<u16> {
        self.pending
    }

    pub fn watcher(&mut self) -> &mut Watcher {
        &mut self.watcher
    }

    /// A change of one of the limiter's settings (from localsettings). Returns whether it was one.
    pub fn apply_setting(&mut self, path: &str, v: &Value) -> bool {
        if ![ENERGY_DIFFERENCE, DERATE_GENERATION, MODE, EXPORT_LIMIT].contains(&path) {
            return false;
        }
        if apply(&mut self.settings, path, v) {
            info!("limiter: {path} = {v:?}");
            self.actuator
                .reconfigure(ActuatorConfig::from_settings(&self.settings));
        } else {
            warn!("limiter: ignoring {path} = {v:?} (out of range or wrong type)");
        }
        true
    }

    /// A fresh meter reading: grid power and consumption energy.
    pub fn on_meter(&mut self, map: &RegisterMap) {
        let v = Values::new(map);
        let at = map.index("power").and_then(|i| map.read_at(i));
        if let (Some(power), Some(at)) = (v.get("power"), at) {
            self.inputs.grid = Some(Reading::new(power, at));
        }
        let energy_at = map.index("import_energy").and_then(|i| map.read_at(i));
        if let (Some(import), Some(export), Some(at)) =
            (v.get("import_energy"), v.get("export_energy"), energy_at)
        {
            self.inputs.consumption = Some(Reading::new(import - export, at));
        }
    }

    pub fn meter_lost(&mut self) {
        self.inputs.grid = None;
        self.inputs.consumption = None;
    }

    /// A fresh inverter reading: AC power and, once known, its rated power.
    pub fn on_inverter(&mut self, map: &RegisterMap) {
        let v = Values::new(map);
        if let (Some(power), Some(at)) = (
            v.get("ac_power"),
            map.index("ac_power").and_then(|i| map.read_at(i)),
        ) {
            if self.inputs.pv.is_some_and(|pv| pv.at != at) {
                self.pv_previous = self.inputs.pv;
            }
            self.inputs.pv = Some(Reading::new(power, at));
        }
        if let Some(rated) = v.get("rated_power").filter(|w| *w > 0.0)
            && (rated - self.settings.rated_w).abs() > 0.5
        {
            info!("limiter: rated power {rated:.0} W (read from the inverter)");
            self.settings.rated_w = rated;
            self.actuator
                .reconfigure(ActuatorConfig::from_settings(&self.settings));
        }
    }

    pub fn inverter_lost(&mut self) {
        self.inputs.pv = None;
        self.pv_previous = None;
        self.actuator.inverter_lost();
        self.pending = None;
        if let Some(w) = self.rated_fallback {
            self.settings.rated_w = w;
        }
    }

    /// The G100 set-up writes for the inverter's (re)initialisation (limiter.md §3).
    pub fn g100_setup(&self) -> [(u16, u16); 4] {
        g100_setup(self.settings.export_limit_w, self.settings.rated_w)
    }

    /// After the G100 set-up, with HR3 as read back.
    pub fn reinitialised(&mut self, hr3: u16) {
        self.actuator.inverter_reinitialised(hr3);
    }

    fn refresh_aux(&mut self) {
        let w = &self.watcher;
        let get = |prefix: &str, path: &str| {
            w.get(prefix, path)
                .and_then(|(v, at)| v.as_f64().map(|x| Reading::new(x, at)))
        };
        self.inputs.battery_power = get(BATTERY, "/Dc/0/Power");
        self.inputs.battery_voltage = get(BATTERY, "/Dc/0/Voltage");
        self.inputs.soc = get(BATTERY, "/Soc");
        self.inputs.multi_in = get(VEBUS, "/Ac/ActiveIn/P");
        self.inputs.vebus_state = get(VEBUS, "/State");
        self.inputs.led_bulk = get(VEBUS, "/Leds/Bulk");
        self.inputs.led_absorption = get(VEBUS, "/Leds/Absorption");
    }

    /// Decides now if `fresh` (a new meter reading) or if the last decision is old; returns the
    /// HR3 value to write, if any, while the inverter is online.
    pub fn decide(&mut self, now: Instant, fresh: bool, inverter_online: bool) -> Option<u16> {
        let due = fresh
            || self
                .last_decided
                .is_none_or(|t| now.saturating_duration_since(t) >= DECIDE_AT_LEAST_EVERY);
        if due {
            self.refresh_aux();
            let decision = decide(&self.inputs_at_grid_time(), &self.settings, now);
            if decision.status != self.decision.status {
                info!("limiter: {}", decision.status);
            }
            self.decision = decision;
            self.last_decided = Some(now);
            let previous = self.pending;
            self.pending = if inverter_online {
                self.actuator.next_write(&self.decision, now)
            } else {
                None
            };
            if let Some(v) = self.pending.filter(|v| previous != Some(*v)) {
                // Writes are rare (a few per step): what led to each is worth a line.
                let w = |r: Option<Reading>| r.map_or(f64::NAN, |r| r.value);
                info!(
                    "limiter: HR3 {} % -> {v} % ({}; target {:?}, grid {:.0} W, pv {:.0} W)",
                    self.actuator
                        .applied_percent()
                        .map_or("?".to_string(), |p| p.to_string()),
                    self.decision.status,
                    self.decision.target,
                    w(self.inputs.grid),
                    w(self.inputs.pv),
                );
            }
        }
        self.pending
    }

    /// The inputs with the PV power estimated for the moment the grid power was read.
    fn inputs_at_grid_time(&self) -> Inputs {
        let pv = match (self.inputs.pv, self.inputs.grid) {
            (Some(pv), Some(grid)) => Some(pv_extrapolated(
                self.pv_previous,
                pv,
                grid.at,
                self.actuator.applied_watts(),
            )),
            (pv, _) => pv,
        };
        Inputs { pv, ..self.inputs }
    }

    /// The result of writing `value` to HR3.
    pub fn written(&mut self, value: u16, ok: bool, now: Instant) {
        if ok {
            self.actuator.confirm_written(value, now);
        } else {
            self.actuator.write_failed(now);
        }
        self.pending = None;
    }

    /// The HR3 value that restores full power on a clean stop, if one is needed.
    pub fn shutdown_write(&mut self, now: Instant) -> Option<u16> {
        self.actuator.next_write(&Decision::shutdown(), now)
    }

    /// An accepted SetValue on /Ac/PowerLimit: every write is a keep-alive (limiter.md §4).
    pub fn power_limit_write(&mut self, v: &Value, now: Instant) {
        if self.settings.mode != Mode::External {
            return;
        }
        if let Some(watts) = v.as_f64() {
            self.inputs.external_limit = Some(ExternalLimit {
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
            Value::Text(self.decision.status.as_str().into()),
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
        match self.settings.mode {
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
        let applied = self
            .actuator
            .applied_percent()
            .map(|p| percent_to_watts(p, self.settings.rated_w));
        let watts = |w: Option<f64>| w.map_or(Value::Invalid, Value::Double);
        svc.set(
            "/dynamicGenerationStatus",
            Value::Text(self.decision.status.as_str().into()),
        );
        svc.set("/dynamicGenerationPower", watts(self.decision.limit_w()));
        svc.set("/dynamicGenerationMaxPower", watts(applied));
        svc.set("/Ac/PowerLimit", watts(applied));
        svc.set_writable("/Ac/PowerLimit", self.power_limit_writable());
        svc.set(
            "/Internal/LimitWrites",
            Value::Int(self.actuator.writes().min(i32::MAX as u64) as i32),
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
