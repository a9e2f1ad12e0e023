//! The generation limiter wired into the daemon: its settings in com.victronenergy.settings, its
//! inputs (own meter and inverter read in-process, battery and vebus through the D-Bus watcher),
//! its paths on the PV inverter service, and the writes of the inverter's limit setting. The
//! decisions are the [`Controller`]'s; the registers are the inverter's [`PowerLimiter`]'s.
//!
//! Nothing is written to the inverter before its rated power is known and its set-up has run;
//! every periodic read-back of its setting is compared with what the controller believes, and a
//! difference re-runs the set-up. When the inverter keeps every write in non-volatile memory
//! (its set-up could not stop that), writes are paced to one per
//! [`PERSISTENT_WRITE_INTERVAL`] outside urgent export protection.

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::cli::Options;
use crate::devices::{
    GridMeter, LimitedInverter, PowerLimiter, Rating, RegisterWrite, RegisterWriter, SetUpTarget,
};
use crate::limiter::{
    BatteryReadings, Controller, Decision, ExternalLimit, Mode, Reading, Setting,
    Settings as LimiterSettings, Target,
};
use crate::registers::RegisterMap;
use crate::vedbus::{
    self, BusAddress, Format, Service, SettingDef, Settings, Value, Watcher, Writable,
};

pub(super) const ENERGY_DIFFERENCE: &str = "/Settings/DynamicGeneration/energyDifference";
pub(super) const DERATE_GENERATION: &str = "/Settings/DynamicGeneration/derateGeneration";
pub(super) const MODE: &str = "/Settings/DynamicGeneration/Mode";
pub(super) const EXPORT_LIMIT: &str = "/Settings/DynamicGeneration/ExportLimit";

const BATTERY: &str = "com.victronenergy.battery";
const VEBUS: &str = "com.victronenergy.vebus";
/// systemcalc's service: which battery service the system uses.
const SYSTEM: &str = "com.victronenergy.system";
/// The user's battery-monitor choice, systemcalc's setting (docs/reference/victron.md §9).
pub(super) const BATTERY_SERVICE: &str = "/Settings/SystemSetup/BatteryService";
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
/// The pace of limit writes an inverter keeps in non-volatile memory (~150 a day instead of
/// ~500), urgent export protection excepted.
pub(super) const PERSISTENT_WRITE_INTERVAL: Duration = Duration::from_secs(600);
/// A set-up register that drifted is set up again at most this often (a register the inverter
/// will not take must not be rewritten every read).
const DRIFT_SET_UP_INTERVAL: Duration = Duration::from_secs(600);
/// A set-up that got no answer is retried this long after.
const SET_UP_RETRY: Duration = Duration::from_secs(10);

/// The inverter the limiter drives, as its identification and set-up left it.
struct Driven {
    limiter: &'static dyn PowerLimiter,
    /// Its rated power and where it came from; without watts nothing is written.
    rating: Rating,
    /// The set-up ran since the inverter was (re)identified: writes may go out.
    set_up_at: Option<Instant>,
    /// When the set-up should run (again), if it should.
    set_up_due: Option<Instant>,
    /// The last set-up found that every limit write is kept in non-volatile memory.
    writes_persist: bool,
    /// Read time of the last read-back compared with the controller's belief.
    compared_at: Option<Instant>,
    /// A read-back differed: after the set-up the current decision is written at once.
    reapply: bool,
    /// Set-ups in a row that got no answer.
    set_up_failures: u32,
    last_write: Option<Instant>,
}

/// Which of the limiter's inputs it needs read as fast as the bus allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ReadNeeds {
    pub grid: bool,
    pub pv: bool,
    /// The limiter's PV estimate is settled (the last write's effect seen): the inverter may be
    /// read sparsely, leaving its command slots free for a limit write.
    pub pv_settled: bool,
}

pub(super) struct Generation {
    controller: Controller,
    /// The inverter being driven, once one is found.
    inverter: Option<Driven>,
    watcher: Watcher,
    last_decided: Option<Instant>,
    /// The setting the controller wants written; cleared by [`written`](Self::written).
    pending: Option<Setting>,
    /// Confirmed limit writes made while the inverter kept them in non-volatile memory.
    persistent_writes: u64,
    /// The last "no limit" reason logged, so that each is logged once.
    no_limit_logged: Option<String>,
    /// [`BATTERY_SERVICE`], followed (it is systemcalc's, never created here).
    battery_setting: Value,
    /// The service the battery readings come from, for one log line per change.
    battery_service: Option<String>,
    /// When `/dynamicGenerationPower` was last set, and whether it was valid then.
    demand_published: Option<(Instant, bool)>,
}

/// `/dynamicGenerationPower` follows the demand, which moves a little with every meter reading:
/// set at every publish it would make the inverter's service signal as often as the meter's,
/// for a figure people read (issue 13). It is refreshed at most this often while it stays
/// valid; a change to or from invalid is published at once.
const DEMAND_REFRESH: Duration = Duration::from_secs(1);

/// Whether `/dynamicGenerationPower` is due, last set as `published`, now `valid`.
fn demand_due(published: Option<(Instant, bool)>, valid: bool, now: Instant) -> bool {
    published.is_none_or(|(at, was_valid)| {
        was_valid != valid || now.saturating_duration_since(at) >= DEMAND_REFRESH
    })
}

impl Generation {
    pub(super) fn new(
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
            inverter: None,
            watcher,
            last_decided: None,
            pending: None,
            persistent_writes: 0,
            no_limit_logged: None,
            demand_published: None,
            battery_setting,
            battery_service: None,
        })
    }

    /// What the limiter needs read as fast as the bus allows: the grid power while it tracks the
    /// site's demand (its own limiter holding a limit), the inverter's output while it limits.
    /// Otherwise both are read at the ordinary pace (the publish interval, every few seconds).
    pub(super) fn needs(&self, now: Instant) -> ReadNeeds {
        let tracking = self.controller.settings().mode == Mode::OwnLimiter
            && matches!(self.controller.decision().target, Target::Limit(_));
        ReadNeeds {
            grid: tracking,
            pv: tracking,
            pv_settled: self.controller.pv_settled(now),
        }
    }

    /// When [`decide`](Self::decide) must run at the latest without a fresh meter reading.
    pub(super) fn decide_by(&self) -> Option<Instant> {
        self.last_decided.map(|t| t + DECIDE_AT_LEAST_EVERY)
    }

    /// The register write the controller wants made, if any.
    pub(super) fn pending_write(&self) -> Option<RegisterWrite> {
        let driven = self.inverter.as_ref()?;
        Some(driven.limiter.write(self.pending?))
    }

    /// Writes may go out: the rated power is known and the set-up has run.
    fn may_write(&self) -> bool {
        self.inverter
            .as_ref()
            .is_some_and(|d| d.rating.watts.is_some() && d.set_up_at.is_some())
    }

    fn set_up_target(&self, rated_w: Option<f64>) -> SetUpTarget {
        SetUpTarget {
            export_limit_w: self.controller.settings().export_limit_w,
            rated_w,
        }
    }

    pub(super) fn watcher(&mut self) -> &mut Watcher {
        &mut self.watcher
    }

    /// A change of one of the limiter's settings (from localsettings). Returns whether it was one.
    pub(super) fn apply_setting(&mut self, path: &str, v: &Value) -> bool {
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
            let export_limit_changed =
                settings.export_limit_w != self.controller.settings().export_limit_w;
            self.controller.configure(settings);
            // The inverter's own G100 registers follow at its next read.
            if export_limit_changed && let Some(d) = &mut self.inverter {
                d.set_up_due = Some(Instant::now());
            }
        } else {
            warn!("limiter: ignoring {path} = {v:?} (out of range or wrong type)");
        }
        true
    }

    /// A fresh reading of the limiter's meter: grid power and consumption energy.
    pub(super) fn on_meter(&mut self, meter: &GridMeter, map: &RegisterMap) {
        if let Some(power) = meter.power(map) {
            self.controller.on_grid(power);
        }
        if let Some(consumption) = meter.consumption(map) {
            self.controller.on_consumption(consumption);
        }
    }

    pub(super) fn meter_lost(&mut self) {
        self.controller.meter_lost();
    }

    /// The inverter the limiter drives from now on (found, or found again), with the rating its
    /// identification settled. Without a rated power it is published but never written to, and
    /// the log and `/dynamicGenerationStatus` say why.
    pub(super) fn attach_inverter(&mut self, inverter: &LimitedInverter, rating: Rating) {
        self.controller.attach_inverter(inverter.limiter.encoding());
        match rating.watts {
            Some(watts) => {
                self.no_limit_logged = None;
                self.configure_rated(watts);
            }
            None if self.no_limit_logged.as_ref() != Some(&rating.source) => {
                warn!(
                    "limiter: {}: the PV inverter is published, no limit is written",
                    rating.source
                );
                self.no_limit_logged = Some(rating.source.clone());
            }
            None => {}
        }
        let persisted = self.inverter.as_ref().is_some_and(|d| d.writes_persist);
        self.inverter = Some(Driven {
            limiter: inverter.limiter,
            rating,
            set_up_at: None,
            set_up_due: None,
            writes_persist: persisted,
            compared_at: None,
            reapply: false,
            set_up_failures: 0,
            last_write: self.inverter.as_ref().and_then(|d| d.last_write),
        });
        self.pending = None;
    }

    fn configure_rated(&mut self, rated_w: f64) {
        let settings = *self.controller.settings();
        if (rated_w - settings.rated_w).abs() > 0.5 {
            self.controller.configure(LimiterSettings {
                rated_w,
                ..settings
            });
        }
    }

    /// A fresh inverter reading: AC power, its rated power once it tells it, and the read-back
    /// of its setting and set-up registers. True when the set-up should run now (a read-back
    /// differs from what the controller believes, a set-up register drifted, or a failed set-up
    /// is due again).
    pub(super) fn on_inverter(
        &mut self,
        inverter: &LimitedInverter,
        map: &RegisterMap,
        now: Instant,
    ) -> bool {
        if let Some(pv) = inverter.ac_power(map) {
            self.controller.on_pv(pv);
        }
        let Some(driven) = &self.inverter else {
            return false;
        };
        if let Some(rated) = inverter.rated_power_w(map)
            && driven.rating.watts.is_none_or(|w| (rated - w).abs() > 0.5)
        {
            info!("limiter: rated power {rated:.0} W (read from the inverter)");
            self.configure_rated(rated);
            if let Some(d) = &mut self.inverter {
                d.rating = Rating {
                    watts: Some(rated),
                    source: "read from the inverter".into(),
                };
                d.set_up_due = Some(now);
            }
        }
        self.compare_read_back(map, now);
        let target = self.set_up_target(self.inverter.as_ref().and_then(|d| d.rating.watts));
        let Some(d) = &mut self.inverter else {
            return false;
        };
        if let Some(since) = d.set_up_at
            && d.set_up_due.is_none()
            && let Some(drift) = d.limiter.drift(map, since, target)
        {
            warn!("limiter: {drift}: the set-up runs again");
            d.set_up_due = Some(now.max(since + DRIFT_SET_UP_INTERVAL));
        }
        d.set_up_due.is_some_and(|t| now >= t)
    }

    /// Compares a new read-back of the inverter's setting with what the controller believes it
    /// holds; a difference (a reset, another master) asks for the set-up now, after which the
    /// controller starts from the setting read back and re-applies its decision.
    fn compare_read_back(&mut self, map: &RegisterMap, now: Instant) {
        let believed = self.controller.applied();
        let Some(d) = &mut self.inverter else {
            return;
        };
        let Some((held, at)) = d.limiter.held(map) else {
            return;
        };
        if d.compared_at.is_some_and(|t| at <= t) {
            return;
        }
        d.compared_at = Some(at);
        if d.set_up_at.is_none_or(|t| at <= t) {
            return;
        }
        if let Some(believed) = believed
            && believed != held
        {
            warn!(
                "limiter: the inverter's limit reads back {held} %, the limiter believes \
                 {believed} % (a reset or another master): set-up and decision re-applied"
            );
            d.set_up_due = Some(now);
            d.reapply = true;
        }
    }

    pub(super) fn inverter_lost(&mut self) {
        self.controller.inverter_lost();
        self.pending = None;
        if let Some(d) = &mut self.inverter {
            d.set_up_at = None;
            d.set_up_due = None;
        }
    }

    /// The inverter's set-up on its (re)initialisation and whenever a read-back asks for it
    /// (docs/reference/limiter.md §3), through its registers; the controller starts from the
    /// setting read back. No answer: nothing was written, the controller forgets the setting,
    /// and the set-up is tried again a little later; until then nothing is written.
    pub(super) fn set_up_inverter(&mut self, regs: &mut dyn RegisterWriter, now: Instant) {
        let Some(d) = &self.inverter else {
            return;
        };
        let (limiter, rated) = (d.limiter, d.rating.watts);
        match limiter.set_up(regs, self.set_up_target(rated)) {
            Ok(report) => {
                let reapply = self.inverter.as_ref().is_some_and(|d| d.reapply);
                match report.held {
                    Some(setting) if !reapply => self.controller.inverter_reinitialised(setting),
                    // Found changed (or unreadable): the decision goes out at once.
                    _ => self.controller.setting_unknown(),
                }
                if let Some(d) = &mut self.inverter {
                    d.set_up_at = Some(now);
                    d.set_up_due = None;
                    d.reapply = false;
                    d.set_up_failures = 0;
                    d.writes_persist = report.writes_persist;
                }
            }
            Err(e) => {
                // Once per identification; the retries every SET_UP_RETRY only at debug level.
                if self
                    .inverter
                    .as_ref()
                    .is_some_and(|d| d.set_up_failures == 0)
                {
                    warn!("limiter: the inverter's set-up got {e}; nothing written, retrying");
                } else {
                    debug!("limiter: the inverter's set-up got {e} again");
                }
                self.controller.inverter_lost();
                self.pending = None;
                if let Some(d) = &mut self.inverter {
                    d.set_up_at = None;
                    d.set_up_due = Some(now + SET_UP_RETRY);
                    d.set_up_failures = d.set_up_failures.saturating_add(1);
                }
            }
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
    pub(super) fn decide(
        &mut self,
        now: Instant,
        fresh: bool,
        inverter_online: bool,
    ) -> Option<Setting> {
        let due = fresh
            || self
                .last_decided
                .is_none_or(|t| now.saturating_duration_since(t) >= DECIDE_AT_LEAST_EVERY);
        if due {
            self.refresh_battery();
            let status = self.controller.decision().status;
            let previous = self.pending;
            let wanted = self
                .controller
                .step(now, inverter_online && self.may_write());
            self.pending = wanted.filter(|&setting| self.write_allowed(setting, now));
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

    /// Whether a write of `setting` may go out now: always, unless the inverter keeps every
    /// write in non-volatile memory; then only urgent export protection, or one write per
    /// [`PERSISTENT_WRITE_INTERVAL`].
    fn write_allowed(&self, setting: Setting, now: Instant) -> bool {
        let Some(d) = &self.inverter else {
            return false;
        };
        let urgent = protects_export(
            setting,
            self.controller.applied(),
            self.controller.decision(),
        );
        write_allowed(d.writes_persist, urgent, d.last_write, now)
    }

    /// The result of the pending write.
    pub(super) fn written(&mut self, ok: bool, now: Instant) {
        if let Some(setting) = self.pending.take() {
            self.controller.written(setting, ok, now);
            if ok {
                self.note_write(now);
            }
        }
    }

    fn note_write(&mut self, now: Instant) {
        if let Some(d) = &mut self.inverter {
            d.last_write = Some(now);
            if d.writes_persist {
                self.persistent_writes = self.persistent_writes.saturating_add(1);
            }
        }
    }

    /// Restores full power on a clean stop (G100 stays enforced by the inverter), if needed.
    pub(super) fn shutdown(&mut self, regs: &mut dyn RegisterWriter, now: Instant) {
        if !self.may_write() {
            return;
        }
        let (Some(d), Some(setting)) = (&self.inverter, self.controller.shutdown_write(now)) else {
            return;
        };
        let RegisterWrite { addr, value } = d.limiter.write(setting);
        let ok = regs.write(addr, value).is_ok();
        info!(
            "restoring full power ({setting} % of rated){}",
            if ok { "" } else { " failed" }
        );
        self.controller.written(setting, ok, Instant::now());
        if ok {
            self.note_write(Instant::now());
        }
    }

    /// An accepted SetValue on /Ac/PowerLimit: every write is a keep-alive
    /// (docs/reference/limiter.md §4).
    pub(super) fn power_limit_write(&mut self, v: &Value, now: Instant) {
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
    pub(super) fn add_paths(&self, svc: &mut Service) {
        svc.add_path(
            "/dynamicGenerationStatus",
            Value::Text(self.status_text()),
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
        svc.add_path(
            "/Internal/NonVolatileLimitWrites",
            Value::Int(0),
            Format::Plain,
            Writable::No,
        );
    }

    /// `/dynamicGenerationStatus`: the decision's status, or why no limit is written, and a
    /// note while writes are paced.
    fn status_text(&self) -> String {
        let status = self.controller.decision().status.as_str();
        match &self.inverter {
            Some(d) if d.rating.watts.is_none() => format!("No limit written: {}", d.rating.source),
            Some(d) if d.writes_persist => {
                format!("{status}; writes paced (the inverter stores each one)")
            }
            _ => status.to_string(),
        }
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
    pub(super) fn publish(&mut self, svc: &mut Service, now: Instant) {
        // Watts of a setting need the rating: without one they would be a guess.
        let rated = self
            .inverter
            .as_ref()
            .is_none_or(|d| d.rating.watts.is_some());
        let applied = self.controller.applied_watts().filter(|_| rated);
        let decision = self.controller.decision();
        let watts = |w: Option<f64>| w.map_or(Value::Invalid, Value::Double);
        svc.set("/dynamicGenerationStatus", Value::Text(self.status_text()));
        let limit = watts(decision.limit_w());
        if demand_due(self.demand_published, limit.is_valid(), now) {
            self.demand_published = Some((now, limit.is_valid()));
            svc.set("/dynamicGenerationPower", limit);
        }
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
        svc.set(
            "/Internal/NonVolatileLimitWrites",
            Value::Int(self.persistent_writes.min(i32::MAX as u64) as i32),
        );
    }
}

/// Whether a limit write may go out now: always, unless the inverter keeps every write
/// (`writes_persist`); then when `urgent`, or [`PERSISTENT_WRITE_INTERVAL`] after the last.
fn write_allowed(
    writes_persist: bool,
    urgent: bool,
    last_write: Option<Instant>,
    now: Instant,
) -> bool {
    !writes_persist
        || urgent
        || last_write.is_none_or(|t| now.saturating_duration_since(t) >= PERSISTENT_WRITE_INTERVAL)
}

/// Whether writing `setting` over `held` is urgent export protection: the G100 fail-safe, or a
/// lower limit while the site exports (or its grid power is unknown).
fn protects_export(setting: Setting, held: Option<Setting>, decision: &Decision) -> bool {
    let lowering = held.is_none_or(|h| setting < h);
    let exporting = decision.grid_w.is_none_or(|grid| grid < 0.0);
    decision.target == Target::FailSafe || (lowering && exporting)
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

    fn decision(target: Target, grid_w: Option<f64>) -> Decision {
        Decision {
            grid_w,
            ..Decision::new(target, crate::limiter::Status::Limiting)
        }
    }

    #[test]
    fn the_demand_is_refreshed_once_a_second_but_validity_changes_at_once() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        assert!(demand_due(None, true, t));
        assert!(!demand_due(Some((t, true)), true, ms(200)));
        assert!(!demand_due(Some((t, true)), true, ms(999)));
        assert!(demand_due(Some((t, true)), true, ms(1000)));
        // Limiting stops or starts: said at once.
        assert!(demand_due(Some((t, true)), false, ms(200)));
        assert!(demand_due(Some((t, false)), true, ms(200)));
        assert!(!demand_due(Some((t, false)), false, ms(200)));
    }

    #[test]
    fn export_protection_is_the_failsafe_or_lowering_while_exporting() {
        let limit = Target::Limit(1000.0);
        let (low, high) = (Setting(20), Setting(60));
        assert!(protects_export(
            low,
            Some(high),
            &decision(limit, Some(-300.0))
        ));
        assert!(protects_export(low, Some(high), &decision(limit, None)));
        assert!(protects_export(low, None, &decision(limit, Some(-1.0))));
        assert!(!protects_export(
            low,
            Some(high),
            &decision(limit, Some(300.0))
        ));
        assert!(!protects_export(
            high,
            Some(low),
            &decision(limit, Some(-300.0))
        ));
        let failsafe = decision(Target::FailSafe, Some(500.0));
        assert!(protects_export(high, Some(low), &failsafe));
    }

    #[test]
    fn stored_writes_are_paced_outside_urgent_export_protection() {
        let t = Instant::now();
        let minute = Duration::from_secs(60);
        assert!(write_allowed(false, false, Some(t), t));
        assert!(!write_allowed(true, false, Some(t), t + minute));
        assert!(write_allowed(true, true, Some(t), t + minute));
        assert!(write_allowed(
            true,
            false,
            Some(t),
            t + PERSISTENT_WRITE_INTERVAL
        ));
        assert!(write_allowed(true, false, None, t));
    }

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
