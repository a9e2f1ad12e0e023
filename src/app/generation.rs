//! The generation limiter wired into the daemon: its settings in com.victronenergy.settings, its
//! inputs (own meter and inverter read in-process, battery and vebus through the D-Bus watcher),
//! its paths on the PV inverter service, and the writes of the inverter's limit setting. The
//! decisions are the [`Controller`]'s; the registers are the inverter's [`PowerLimiter`]'s.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cli::Options;
use crate::devices::{GridMeter, LimitedInverter, PowerLimiter, RegisterWrite, RegisterWriter};
use crate::limiter::{
    BatteryReadings, Controller, ExternalLimit, Mode, Reading, Setting, Settings as LimiterSettings,
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
/// systemcalc's service: which battery service the system uses.
const SYSTEM: &str = "com.victronenergy.system";
/// The user's battery-monitor choice, systemcalc's setting (docs/reference/victron.md §9).
pub const BATTERY_SERVICE: &str = "/Settings/SystemSetup/BatteryService";
/// Services the system may take its battery readings from (systemcalc: battery, vebus, and an
/// acsystem, multi or inverter with its own SoC); the limiter watches them and the system.
const BATTERY_SOURCES: [&str; 5] = [
    BATTERY,
    VEBUS,
    "com.victronenergy.acsystem",
    "com.victronenergy.multi",
    "com.victronenergy.inverter",
];
const WATCHED_PATHS: [&str; 13] = [
    "/Dc/0/Power",
    "/Dc/0/Voltage",
    "/Soc",
    "/Ac/ActiveIn/P",
    "/State",
    "/Leds/Bulk",
    "/Leds/Absorption",
    // Which service is the battery: the system's choice, or systemcalc's own rule without it.
    "/ActiveBatteryService",
    "/DeviceInstance",
    "/Connected",
    "/ProductName",
    "/Mgmt/Connection",
    "/Info/MaxChargeVoltage",
];
/// Decisions are made on every fresh meter reading, and at least this often otherwise so that a
/// stale meter or an expired /Ac/PowerLimit is noticed.
const DECIDE_AT_LEAST_EVERY: Duration = Duration::from_millis(250);

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
    /// [`BATTERY_SERVICE`], followed (it is systemcalc's, never created here).
    battery_setting: Value,
    /// The service the battery readings come from, for one log line per change.
    battery_service: Option<String>,
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
        let battery_setting = settings.follow(BATTERY_SERVICE)?;
        let mut watched = BATTERY_SOURCES.to_vec();
        watched.push(SYSTEM);
        let watcher = Watcher::connect(bus, &watched, &WATCHED_PATHS)?;
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
            battery_setting,
            battery_service: None,
        })
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
        if path == BATTERY_SERVICE {
            info!("limiter: {BATTERY_SERVICE} = {v:?}");
            self.battery_setting = v.clone();
            return true;
        }
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
        // While the system's scan is in flight its choice is unknown: no battery, not a guess.
        static UNKNOWN: Value = Value::Invalid;
        let system = w.services(SYSTEM).next().map(|_| {
            w.value_of(SYSTEM, "/ActiveBatteryService")
                .map_or(&UNKNOWN, |(v, _)| v)
        });
        let candidates = || {
            BATTERY_SOURCES
                .iter()
                .flat_map(|class| w.services(class))
                .map(|name| candidate(w, name))
        };
        let chosen = chosen_battery(system, &self.battery_setting, candidates);
        if chosen != self.battery_service.as_deref() {
            match chosen {
                Some(name) => info!("limiter: battery readings from {name}"),
                None => info!("limiter: no battery service (none chosen, or not known yet)"),
            }
            self.battery_service = chosen.map(str::to_string);
        }
        let get = |prefix: &str, path: &str| {
            w.get(prefix, path)
                .and_then(|(v, at)| v.as_f64().map(|x| Reading::new(x, at)))
        };
        let battery = |path: &str| {
            chosen
                .and_then(|name| w.value_of(name, path))
                .and_then(|(v, at)| v.as_f64().map(|x| Reading::new(x, at)))
        };
        self.controller.on_battery(BatteryReadings {
            power: battery("/Dc/0/Power"),
            voltage: battery("/Dc/0/Voltage"),
            soc: battery("/Soc"),
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
        // Invalid = "power limiting is not supported" (dbus-fronius), which is what a writer
        // sees outside external mode: its writes are refused (docs/reference/limiter.md §4).
        let external = self.controller.settings().mode == Mode::External;
        svc.set(
            "/Ac/PowerLimit",
            if external {
                watts(applied)
            } else {
                Value::Invalid
            },
        );
        svc.set_writable("/Ac/PowerLimit", self.power_limit_writable());
        svc.set(
            "/Internal/LimitWrites",
            Value::Int(self.controller.writes().min(i32::MAX as u64) as i32),
        );
    }
}

/// A watched service that may supply the battery readings, as systemcalc sees it.
#[derive(Clone, Copy, Debug)]
struct Candidate<'a> {
    name: &'a str,
    instance: Option<i32>,
    /// `/Connected` = 1 with `/ProductName` and `/Mgmt/Connection` present (systemcalc's
    /// `_remove_unconnected_services`).
    connected: bool,
    /// Publishes `/Info/MaxChargeVoltage`: a BMS, preferred by the automatic choice.
    bms: bool,
}

fn candidate<'a>(w: &'a Watcher, name: &'a str) -> Candidate<'a> {
    let get = |path: &str| w.value_of(name, path).map(|(v, _)| v);
    let present = |path: &str| get(path).is_some_and(Value::is_valid);
    Candidate {
        name,
        instance: get("/DeviceInstance").and_then(Value::as_i32),
        connected: get("/Connected").and_then(Value::as_i32) == Some(1)
            && present("/ProductName")
            && present("/Mgmt/Connection"),
        bms: get("/Info/MaxChargeVoltage").is_some(),
    }
}

/// `com.victronenergy.battery` of `com.victronenergy.battery.ttyO1`: the class systemcalc names
/// a choice by.
fn service_class(name: &str) -> &str {
    match name.match_indices('.').nth(2) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// The service the limiter takes its battery readings from (docs/reference/victron.md §9):
/// the system's `/ActiveBatteryService` (`<class>/<DeviceInstance>`; invalid = no battery, as
/// while the system's values are not read yet) when a system service is there; without one,
/// the `BatteryService` setting (`nobattery`, `<class>/<DeviceInstance>`, or automatic:
/// systemcalc's rule among connected battery services, a BMS first, then a Lynx parallel, then
/// the lowest DeviceInstance).
fn chosen_battery<'a, I: Iterator<Item = Candidate<'a>>>(
    system: Option<&'a Value>,
    setting: &Value,
    candidates: impl Fn() -> I,
) -> Option<&'a str> {
    let by_instance = |choice: &str| {
        let (class, instance) = choice.split_once('/')?;
        let instance = instance.trim().parse::<i32>().ok()?;
        candidates()
            .find(|c| service_class(c.name) == class && c.instance == Some(instance))
            .map(|c| c.name)
    };
    if let Some(active) = system {
        return active.as_str().and_then(by_instance);
    }
    match setting.as_str() {
        Some("nobattery") => None,
        Some(choice) if choice.contains('/') => by_instance(choice),
        _ => candidates()
            .filter(|c| c.connected && service_class(c.name) == BATTERY)
            .min_by_key(|c| {
                (
                    !c.bms,
                    !c.name.starts_with("com.victronenergy.battery.lynxparallel"),
                    c.instance.unwrap_or(i32::MAX),
                    c.name,
                )
            })
            .map(|c| c.name),
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

    fn battery(name: &'static str, instance: i32) -> Candidate<'static> {
        Candidate {
            name,
            instance: Some(instance),
            connected: true,
            bms: false,
        }
    }

    #[test]
    fn the_battery_is_the_one_the_system_chose() {
        let shunt = battery("com.victronenergy.battery.ttyO1", 512);
        let bms = battery("com.victronenergy.battery.socketcan_can0", 513);
        let multi = Candidate {
            name: "com.victronenergy.vebus.ttyS4",
            instance: Some(276),
            connected: true,
            bms: false,
        };
        let all = [shunt, bms, multi];
        let choose = |system: Option<&'static Value>, setting: &Value| {
            chosen_battery(system, setting, || all.iter().copied())
        };
        let text = |s: &str| -> &'static Value { Box::leak(Box::new(Value::from(s))) };
        let automatic = Value::from("default");
        // The system's choice wins over the setting, by class and DeviceInstance.
        assert_eq!(
            choose(Some(text("com.victronenergy.battery/513")), &automatic),
            Some(bms.name)
        );
        assert_eq!(
            choose(Some(text("com.victronenergy.vebus/276")), &automatic),
            Some(multi.name)
        );
        // The system uses none, or one that is gone: none, no fallback.
        assert_eq!(choose(Some(&Value::Invalid), &automatic), None);
        assert_eq!(
            choose(Some(text("com.victronenergy.battery/9")), &automatic),
            None
        );
        // Without the system: the setting.
        assert_eq!(
            choose(None, &Value::from("com.victronenergy.battery/513")),
            Some(bms.name)
        );
        assert_eq!(choose(None, &Value::from("nobattery")), None);
        // Automatic: the lowest DeviceInstance among connected batteries, a BMS first.
        assert_eq!(choose(None, &automatic), Some(shunt.name));
        assert_eq!(choose(None, &Value::Invalid), Some(shunt.name));
        let with_bms = [shunt, Candidate { bms: true, ..bms }];
        assert_eq!(
            chosen_battery(None, &automatic, || with_bms.iter().copied()),
            Some(bms.name)
        );
        let unplugged = [Candidate {
            connected: false,
            ..shunt
        }];
        assert_eq!(
            chosen_battery(None, &automatic, || unplugged.iter().copied()),
            None
        );
    }

    #[test]
    fn service_classes_are_the_first_three_name_elements() {
        assert_eq!(
            service_class("com.victronenergy.battery.ttyO1"),
            "com.victronenergy.battery"
        );
        assert_eq!(
            service_class("com.victronenergy.battery.lynxparallel.x"),
            "com.victronenergy.battery"
        );
        assert_eq!(
            service_class("com.victronenergy.system"),
            "com.victronenergy.system"
        );
    }

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
