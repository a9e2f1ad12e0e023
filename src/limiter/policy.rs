//! The limiter policy (docs/reference/limiter.md §1, §3, §4) as a pure function of inputs,
//! settings and time.
//!
//! Decisions taken here that docs/reference/limiter.md leaves open:
//! - **Unknown values** (missing, non-finite or older than their staleness limit) are `None` and
//!   every condition over them is three-valued: a rule or allowance that would *raise* the limit
//!   only applies when it is known to hold, so unknown battery/vebus data can never select rule 4
//!   nor add the charging allowance (§3, "the branch that cannot export").
//! - **Unknown consumption energy** (own meter's energy registers not read yet or stale): the
//!   offset is unknown, so the limiter limits (cannot export) with a status that says why, instead
//!   of the original's 1e9 kWh default, which meant "out of range, full power".
//! - **PV offline** decides `Target::Hold`: no write (the inverter is asleep or producing nothing).
//!   The new actuator keeps no smoothing average, so the "reset" is that its pending small-change
//!   timer is dropped; the register value it last wrote is kept because the inverter still holds
//!   it (on re-initialisation the daemon re-runs the G100 set-up and tells the actuator).
//! - **Stale or offline meter** overrides rules 3–6 (not 1–2: a limiter that is not in control has
//!   nothing to fail safe from) and drives the inverter to the G100 fail-safe rate.
//! - **External mode** (`Mode::External`): the latest `/Ac/PowerLimit` write enters as
//!   [`ExternalLimit`] with the time of the write; it applies, clamped to `0..=rated_w`, until
//!   `external_timeout` after the last write (every write, even of the same value, is a
//!   keep-alive), then the inverter reverts to full power (G100 still enforced by the inverter).

use std::time::{Duration, Instant};

/// Below this PV power the inverter counts as offline (rule 3).
pub(super) const PV_OFFLINE_BELOW_W: f64 = 50.0;
/// Offset window (kWh) in which the limiter tracks the demand (rule 5), exclusive bounds.
pub(super) const LIMITING_OFFSET_KWH: (f64, f64) = (-200.0, -2.0);
/// Beyond this |offset| (kWh) the status says "out of range" (rule 6).
pub(super) const OUT_OF_RANGE_KWH: f64 = 200.0;

/// One value with the instant it was read or received.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub value: f64,
    pub at: Instant,
}

impl Reading {
    pub fn new(value: f64, at: Instant) -> Self {
        Self { value, at }
    }

    /// The value if it is finite and not older than `max_age` at `now`.
    pub fn fresh(&self, now: Instant, max_age: Duration) -> Option<f64> {
        let age = now.saturating_duration_since(self.at);
        (self.value.is_finite() && age <= max_age).then_some(self.value)
    }
}

/// The latest `/Ac/PowerLimit` write in external mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExternalLimit {
    pub watts: f64,
    pub last_write: Instant,
}

/// Everything the policy looks at. `None` = never known or lost (e.g. meter offline).
/// Signs as docs/reference/limiter.md: grid + import, pv + production, battery + charging,
/// multi_in + drawn in.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Own SDM230 total active power (W); `None` while the meter is offline.
    pub grid: Option<Reading>,
    /// Own Growatt AC power (W); `None` while the inverter is offline.
    pub pv: Option<Reading>,
    /// Own SDM230 import − export energy (kWh).
    pub consumption: Option<Reading>,
    pub battery: BatteryReadings,
    /// Latest `/Ac/PowerLimit` write (used in external mode only).
    pub external_limit: Option<ExternalLimit>,
}

/// Battery and MultiPlus values from D-Bus (docs/reference/limiter.md §1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatteryReadings {
    /// Battery `/Dc/0/Power` (W, + charging).
    pub power: Option<Reading>,
    /// Battery `/Dc/0/Voltage` (V).
    pub voltage: Option<Reading>,
    /// Battery `/Soc` (%).
    pub soc: Option<Reading>,
    /// vebus `/Ac/ActiveIn/P` (W, + drawn in).
    pub multi_in: Option<Reading>,
    /// vebus `/State`.
    pub vebus_state: Option<Reading>,
    /// vebus `/Leds/Bulk`.
    pub led_bulk: Option<Reading>,
    /// vebus `/Leds/Absorption`.
    pub led_absorption: Option<Reading>,
}

/// Who owns the inverter's power limit (docs/reference/limiter.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No limiting: the inverter runs at 100 % with its own G100 export limit.
    Off = 0,
    /// The own limiter of §1, governed by `energyDifference` and `derateGeneration`.
    OwnLimiter = 1,
    /// `/Ac/PowerLimit` writes from ESS, VRM, Node-RED or MQTT.
    External = 2,
}

impl Mode {
    /// The mode for a setting value; `None` for values outside 0..=2 (to be refused).
    pub fn from_setting(value: i64) -> Option<Self> {
        match value {
            0 => Some(Self::Off),
            1 => Some(Self::OwnLimiter),
            2 => Some(Self::External),
            _ => None,
        }
    }
}

/// The limiter's configuration; the daemon validates values before building it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// `/Settings/DynamicGeneration/energyDifference` (kWh); 0 = not configured.
    pub energy_difference: i64,
    /// `/Settings/DynamicGeneration/derateGeneration` == 1.
    pub derate_enabled: bool,
    /// Inverter rated power (W) = MaxPower.
    pub rated_w: f64,
    /// G100 export limit (W), for the set-up and the fail-safe rate.
    pub export_limit_w: f64,
    /// Grid power older than this stops tracking (fail-safe).
    pub stale_grid: Duration,
    /// PV power older than this counts as PV offline.
    pub stale_pv: Duration,
    /// Battery and vebus values older than this are unknown.
    pub stale_aux: Duration,
    /// Consumption energy older than this is unknown (the meter's energies are polled slowly).
    pub stale_energy: Duration,
    /// External `/Ac/PowerLimit` reverts this long after the last write.
    pub external_timeout: Duration,
    /// Shortest time between two non-urgent writes (raising, or changing by the deadband only).
    pub min_write_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::OwnLimiter,
            energy_difference: 0,
            derate_enabled: false,
            rated_w: 4200.0,
            export_limit_w: 3680.0,
            stale_grid: Duration::from_secs(5),
            stale_pv: Duration::from_secs(10),
            stale_aux: Duration::from_secs(30),
            stale_energy: Duration::from_secs(60),
            external_timeout: Duration::from_secs(60),
            min_write_interval: Duration::from_secs(1),
        }
    }
}

/// What the inverter's active power rate should become.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Leave the register alone (PV offline).
    Hold,
    /// Limit the AC output to this many watts (may be ≤ 0 or above rated: the actuator clamps).
    Limit(f64),
    /// The limiter is in control and lets the inverter run at 100 % (paced like any raise).
    FullPower,
    /// The limiter is not in control: restore 100 % once, immediately.
    Release,
    /// The meter is stale or offline: the G100 fail-safe rate once, immediately.
    FailSafe,
}

/// Why; rendered for `/dynamicGenerationStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    NotConfigured,
    G100,
    PvOffline,
    Charging,
    Limiting,
    OutOfRange,
    NotLimiting,
    /// Limiting because the meter's energy (hence the offset) is unknown.
    LimitingEnergyUnknown,
    MeterStale,
    MeterOffline,
    ModeOff,
    External,
    ExternalExpired,
    Stopped,
}

impl Status {
    /// The `/dynamicGenerationStatus` text; §1 texts are kept verbatim for users' dashboards.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "Not Configured",
            Self::G100 => "Configured, G100",
            Self::PvOffline => "PV offline",
            Self::Charging => "Configured, charging",
            Self::Limiting => "Configured, limiting",
            Self::OutOfRange => "Configured, out of range",
            Self::NotLimiting => "Configured, not limiting",
            Self::LimitingEnergyUnknown => "Configured, limiting (meter energy unknown)",
            Self::MeterStale => "Meter reading stale, G100 fail-safe rate",
            Self::MeterOffline => "Meter offline, G100 fail-safe rate",
            Self::ModeOff => "Off, G100 only",
            Self::External => "External control (/Ac/PowerLimit)",
            Self::ExternalExpired => "External control, limit expired: full power",
            Self::Stopped => "Stopped, full power restored",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub target: Target,
    pub status: Status,
    /// The fresh grid power (W, + import) the decision used, if any: the actuator treats a lower
    /// limit as urgent only while the site exports (or when this is unknown).
    pub grid_w: Option<f64>,
    /// When the older of the grid and PV readings behind a tracking decision was taken: a demand
    /// `grid + pv` is only consistent if both were read after the inverter's last limit change.
    pub sampled_at: Option<Instant>,
    /// The site's demand `grid + pv` (W) behind a decision of rules 4–6, without the battery
    /// allowances: what the house takes. The actuator tells by it a raise reversed because the
    /// load fell again (a cycling load followed) from one the controller overshot.
    pub demand_w: Option<f64>,
}

impl Decision {
    pub fn new(target: Target, status: Status) -> Self {
        Self {
            target,
            status,
            grid_w: None,
            sampled_at: None,
            demand_w: None,
        }
    }

    pub fn sampled_at(self, at: Instant) -> Self {
        Self {
            sampled_at: Some(at),
            ..self
        }
    }

    pub fn with_grid(self, grid_w: f64) -> Self {
        Self {
            grid_w: Some(grid_w),
            ..self
        }
    }

    pub fn with_demand(self, demand_w: f64) -> Self {
        Self {
            demand_w: Some(demand_w),
            ..self
        }
    }

    /// What the daemon feeds the actuator when it stops cleanly (restore 100 % once).
    pub fn shutdown() -> Self {
        Self::new(Target::Release, Status::Stopped)
    }

    /// The watts to publish as `/dynamicGenerationPower` (only while limiting, as the original).
    pub fn limit_w(&self) -> Option<f64> {
        match self.target {
            Target::Limit(w) => Some(w),
            _ => None,
        }
    }
}

/// The policy: one decision from the latest inputs, the settings and the time.
pub fn decide(inputs: &Inputs, settings: &Settings, now: Instant) -> Decision {
    match settings.mode {
        Mode::Off => Decision::new(Target::Release, Status::ModeOff),
        Mode::External => decide_external(inputs.external_limit, settings, now),
        Mode::OwnLimiter => decide_own(inputs, settings, now),
    }
}

fn decide_external(limit: Option<ExternalLimit>, settings: &Settings, now: Instant) -> Decision {
    let active = limit.filter(|l| {
        l.watts.is_finite()
            && now.saturating_duration_since(l.last_write) < settings.external_timeout
    });
    match active {
        Some(l) => Decision::new(
            Target::Limit(l.watts.clamp(0.0, settings.rated_w.max(0.0))),
            Status::External,
        ),
        None => Decision::new(Target::Release, Status::ExternalExpired),
    }
}

fn decide_own(inputs: &Inputs, settings: &Settings, now: Instant) -> Decision {
    if settings.energy_difference == 0 {
        return Decision::new(Target::Release, Status::NotConfigured);
    }
    if !settings.derate_enabled {
        return Decision::new(Target::Release, Status::G100);
    }
    let (grid, grid_at) = match inputs.grid {
        None => return Decision::new(Target::FailSafe, Status::MeterOffline),
        Some(r) => match r.fresh(now, settings.stale_grid) {
            Some(w) => (w, r.at),
            None => return Decision::new(Target::FailSafe, Status::MeterStale),
        },
    };
    let decision = decide_tracking(inputs, settings, now, grid).with_grid(grid);
    match inputs.pv {
        Some(pv) if decision.target != Target::Hold => decision.sampled_at(grid_at.min(pv.at)),
        _ => decision,
    }
}

/// Rules 3–6, once the grid reading is known to be fresh.
fn decide_tracking(inputs: &Inputs, settings: &Settings, now: Instant, grid: f64) -> Decision {
    let pv = match inputs.pv.and_then(|r| r.fresh(now, settings.stale_pv)) {
        Some(w) if w >= PV_OFFLINE_BELOW_W => w,
        _ => return Decision::new(Target::Hold, Status::PvOffline),
    };
    let aux = |r: Option<Reading>| r.and_then(|r| r.fresh(now, settings.stale_aux));
    let battery = BatteryView {
        power: aux(inputs.battery.power),
        voltage: aux(inputs.battery.voltage),
        soc: aux(inputs.battery.soc),
        multi_in: aux(inputs.battery.multi_in),
        vebus_state: aux(inputs.battery.vebus_state),
        led_bulk: aux(inputs.battery.led_bulk),
        led_absorption: aux(inputs.battery.led_absorption),
    };
    let decision = if battery.charging_below_full() == Some(true) {
        Decision::new(Target::FullPower, Status::Charging)
    } else {
        let limit_w = demand_w(grid, pv, &battery);
        let consumption = inputs
            .consumption
            .and_then(|r| r.fresh(now, settings.stale_energy));
        match consumption {
            None => Decision::new(Target::Limit(limit_w), Status::LimitingEnergyUnknown),
            Some(kwh) => decide_by_offset(kwh - settings.energy_difference as f64, limit_w),
        }
    };
    decision.with_demand(grid + pv)
}

/// Rules 5 and 6: track the demand inside the offset window, else full power.
pub(super) fn decide_by_offset(offset_kwh: f64, limit_w: f64) -> Decision {
    let (low, high) = LIMITING_OFFSET_KWH;
    if offset_kwh > low && offset_kwh < high {
        Decision::new(Target::Limit(limit_w), Status::Limiting)
    } else if offset_kwh.abs() > OUT_OF_RANGE_KWH {
        Decision::new(Target::FullPower, Status::OutOfRange)
    } else {
        Decision::new(Target::FullPower, Status::NotLimiting)
    }
}

/// Battery and vebus values, each `None` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct BatteryView {
    pub power: Option<f64>,
    pub voltage: Option<f64>,
    pub soc: Option<f64>,
    pub multi_in: Option<f64>,
    pub vebus_state: Option<f64>,
    pub led_bulk: Option<f64>,
    pub led_absorption: Option<f64>,
}

impl BatteryView {
    /// Rule 4: `battery_power > 0 and (soc < 90 or voltage < 54)`, three-valued.
    pub(super) fn charging_below_full(&self) -> Option<bool> {
        and3(
            cmp(self.power, |p| p > 0.0),
            or3(cmp(self.soc, |s| s < 90.0), cmp(self.voltage, |v| v < 54.0)),
        )
    }

    /// The demand estimate's charging allowance (W): the first branch that holds, or — when
    /// unknowns leave the choice open — the smallest allowance any resolution could give.
    pub(super) fn charge_allowance_w(&self) -> f64 {
        let is = |v: Option<f64>, want: f64| cmp(v, |x| x == want);
        let absorption = or3(is(self.vebus_state, 3.0), is(self.led_absorption, 1.0));
        let bulk = or3(is(self.vebus_state, 4.0), is(self.led_bulk, 1.0));
        let charging = and3(
            cmp(self.power, |p| p > 0.0 && p < 3200.0),
            or3(cmp(self.soc, |s| s < 90.0), cmp(self.voltage, |v| v < 54.5)),
        );
        first_match_min([(absorption, 20.0), (bulk, 40.0), (charging, 500.0)])
    }

    /// The discharge correction `-multi_in` when discharging (< −100 W), choosing the lower
    /// limit when it is unknown whether the battery discharges.
    pub(super) fn discharge_correction_w(&self) -> f64 {
        let discharging = cmp(self.power, |p| p < -100.0);
        match (discharging, self.multi_in) {
            (Some(true), Some(m)) => -m,
            (None, Some(m)) => (-m).min(0.0),
            _ => 0.0,
        }
    }
}

/// `limit_w = grid + pv + charging allowance + discharge correction` (§1 demand estimate).
pub(super) fn demand_w(grid: f64, pv: f64, battery: &BatteryView) -> f64 {
    grid + pv + battery.charge_allowance_w() + battery.discharge_correction_w()
}

/// First-match-wins over three-valued conditions; an unknown condition may or may not match,
/// so the result is the minimum over every outcome still possible (0 when none matches).
fn first_match_min<const N: usize>(branches: [(Option<bool>, f64); N]) -> f64 {
    let mut lowest = f64::INFINITY;
    for (condition, value) in branches {
        match condition {
            Some(true) => return lowest.min(value),
            None => lowest = lowest.min(value),
            Some(false) => {}
        }
    }
    lowest.min(0.0)
}

fn cmp(value: Option<f64>, test: impl Fn(f64) -> bool) -> Option<bool> {
    value.map(test)
}

/// Kleene AND: false wins over unknown.
fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Kleene OR: true wins over unknown.
fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// A site in range and limiting: exporting 300 W while the PV makes 2000 W, battery full.
    fn base(now: Instant) -> Inputs {
        let at = |value: f64| Some(Reading::new(value, now - SEC / 4));
        Inputs {
            grid: at(-300.0),
            pv: at(2000.0),
            consumption: at(950.0),
            battery: BatteryReadings {
                power: at(50.0),
                voltage: at(55.0),
                soc: at(95.0),
                multi_in: at(0.0),
                vebus_state: at(5.0),
                led_bulk: at(0.0),
                led_absorption: at(0.0),
            },
            external_limit: None,
        }
    }

    fn configured() -> Settings {
        Settings {
            energy_difference: 1000,
            derate_enabled: true,
            ..Settings::default()
        }
    }

    fn aged(value: f64, now: Instant, age_ms: u64) -> Option<Reading> {
        Some(Reading::new(value, now - Duration::from_millis(age_ms)))
    }

    type Case = (
        &'static str,
        fn(&mut Inputs, &mut Settings, Instant),
        Target,
        Status,
    );

    fn run(cases: &[Case]) {
        let now = Instant::now() + Duration::from_secs(1000);
        for (name, change, target, status) in cases {
            let mut inputs = base(now);
            let mut settings = configured();
            change(&mut inputs, &mut settings, now);
            let got = decide(&inputs, &settings, now);
            assert_eq!((got.target, got.status), (*target, *status), "case: {name}");
        }
    }

    #[test]
    fn section_1_rules_first_match_wins() {
        run(&[
            (
                "base: limiting to grid + pv",
                |_, _, _| {},
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "rule 1: energyDifference 0",
                |_, s, _| s.energy_difference = 0,
                Target::Release,
                Status::NotConfigured,
            ),
            (
                "rule 1 before rule 2",
                |_, s, _| {
                    s.energy_difference = 0;
                    s.derate_enabled = false
                },
                Target::Release,
                Status::NotConfigured,
            ),
            (
                "rule 2: derate off",
                |_, s, _| s.derate_enabled = false,
                Target::Release,
                Status::G100,
            ),
            (
                "rule 3: pv below 50 W",
                |i, _, n| i.pv = aged(49.0, n, 0),
                Target::Hold,
                Status::PvOffline,
            ),
            (
                "rule 3: pv exactly 50 W is online",
                |i, _, n| i.pv = aged(50.0, n, 0),
                Target::Limit(-250.0),
                Status::Limiting,
            ),
            (
                "rule 3: pv unknown (inverter offline)",
                |i, _, _| i.pv = None,
                Target::Hold,
                Status::PvOffline,
            ),
            (
                "rule 3 before rule 4",
                |i, _, n| {
                    i.pv = aged(10.0, n, 0);
                    i.battery.soc = aged(50.0, n, 0)
                },
                Target::Hold,
                Status::PvOffline,
            ),
            (
                "rule 4: charging, soc < 90",
                |i, _, n| {
                    i.battery.power = aged(100.0, n, 0);
                    i.battery.soc = aged(89.9, n, 0)
                },
                Target::FullPower,
                Status::Charging,
            ),
            (
                "rule 4: charging, voltage < 54",
                |i, _, n| {
                    i.battery.power = aged(100.0, n, 0);
                    i.battery.voltage = aged(53.9, n, 0)
                },
                Target::FullPower,
                Status::Charging,
            ),
            (
                "rule 4 needs charging",
                |i, _, n| {
                    i.battery.power = aged(0.0, n, 0);
                    i.battery.soc = aged(50.0, n, 0)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "not rule 4 at 54.0 V, soc 95: +500 allowance (< 54.5 V)",
                |i, _, n| {
                    i.battery.power = aged(100.0, n, 0);
                    i.battery.voltage = aged(54.0, n, 0)
                },
                Target::Limit(2200.0),
                Status::Limiting,
            ),
            (
                "rule 4 before rule 5/6 (out of range)",
                |i, _, n| {
                    i.battery.soc = aged(20.0, n, 0);
                    i.consumption = aged(5000.0, n, 0)
                },
                Target::FullPower,
                Status::Charging,
            ),
            (
                "rule 5 lower bound exclusive (-200)",
                |i, _, n| i.consumption = aged(800.0, n, 0),
                Target::FullPower,
                Status::NotLimiting,
            ),
            (
                "rule 5 inside lower bound (-199)",
                |i, _, n| i.consumption = aged(801.0, n, 0),
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "rule 5 upper bound exclusive (-2)",
                |i, _, n| i.consumption = aged(998.0, n, 0),
                Target::FullPower,
                Status::NotLimiting,
            ),
            (
                "rule 5 inside upper bound (-2.1)",
                |i, _, n| i.consumption = aged(997.9, n, 0),
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "rule 6: above target, near",
                |i, _, n| i.consumption = aged(1001.0, n, 0),
                Target::FullPower,
                Status::NotLimiting,
            ),
            (
                "rule 6: above target, out of range",
                |i, _, n| i.consumption = aged(1200.5, n, 0),
                Target::FullPower,
                Status::OutOfRange,
            ),
            (
                "rule 6: below window, out of range",
                |i, _, n| i.consumption = aged(799.0, n, 0),
                Target::FullPower,
                Status::OutOfRange,
            ),
        ]);
    }

    #[test]
    fn demand_estimate_allowances_and_discharge_correction() {
        run(&[
            (
                "state 3 (+20)",
                |i, _, n| i.battery.vebus_state = aged(3.0, n, 0),
                Target::Limit(1720.0),
                Status::Limiting,
            ),
            (
                "absorption led (+20)",
                |i, _, n| i.battery.led_absorption = aged(1.0, n, 0),
                Target::Limit(1720.0),
                Status::Limiting,
            ),
            (
                "state 4 (+40)",
                |i, _, n| i.battery.vebus_state = aged(4.0, n, 0),
                Target::Limit(1740.0),
                Status::Limiting,
            ),
            (
                "bulk led (+40)",
                |i, _, n| i.battery.led_bulk = aged(1.0, n, 0),
                Target::Limit(1740.0),
                Status::Limiting,
            ),
            (
                "absorption wins over bulk",
                |i, _, n| {
                    i.battery.vebus_state = aged(3.0, n, 0);
                    i.battery.led_bulk = aged(1.0, n, 0)
                },
                Target::Limit(1720.0),
                Status::Limiting,
            ),
            (
                "charging below 54.5 V (+500)",
                |i, _, n| {
                    i.battery.power = aged(300.0, n, 0);
                    i.battery.voltage = aged(54.4, n, 0)
                },
                Target::Limit(2200.0),
                Status::Limiting,
            ),
            (
                "charging at 3200 W: no allowance",
                |i, _, n| {
                    i.battery.power = aged(3200.0, n, 0);
                    i.battery.voltage = aged(54.4, n, 0)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "bulk wins over +500",
                |i, _, n| {
                    i.battery.led_bulk = aged(1.0, n, 0);
                    i.battery.power = aged(300.0, n, 0);
                    i.battery.voltage = aged(54.4, n, 0)
                },
                Target::Limit(1740.0),
                Status::Limiting,
            ),
            (
                "discharging: minus multi_in",
                |i, _, n| {
                    i.battery.power = aged(-200.0, n, 0);
                    i.battery.multi_in = aged(-800.0, n, 0)
                },
                Target::Limit(2500.0),
                Status::Limiting,
            ),
            (
                "discharging only below -100 W",
                |i, _, n| {
                    i.battery.power = aged(-100.0, n, 0);
                    i.battery.multi_in = aged(-800.0, n, 0)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "negative demand is passed on (actuator clamps)",
                |i, _, n| i.grid = aged(-2500.0, n, 0),
                Target::Limit(-500.0),
                Status::Limiting,
            ),
        ]);
    }

    #[test]
    fn section_3_stale_inputs_choose_the_branch_that_cannot_export() {
        run(&[
            (
                "meter offline",
                |i, _, _| i.grid = None,
                Target::FailSafe,
                Status::MeterOffline,
            ),
            (
                "meter 4.9 s old is fresh",
                |i, _, n| i.grid = aged(-300.0, n, 4900),
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "meter 5.1 s old is stale",
                |i, _, n| i.grid = aged(-300.0, n, 5100),
                Target::FailSafe,
                Status::MeterStale,
            ),
            (
                "meter value NaN",
                |i, _, n| i.grid = aged(f64::NAN, n, 0),
                Target::FailSafe,
                Status::MeterStale,
            ),
            (
                "stale meter overrides PV offline",
                |i, _, n| {
                    i.grid = aged(0.0, n, 9000);
                    i.pv = None
                },
                Target::FailSafe,
                Status::MeterStale,
            ),
            (
                "stale meter irrelevant when not configured",
                |i, s, _| {
                    i.grid = None;
                    s.energy_difference = 0
                },
                Target::Release,
                Status::NotConfigured,
            ),
            (
                "stale meter irrelevant when derate off",
                |i, s, _| {
                    i.grid = None;
                    s.derate_enabled = false
                },
                Target::Release,
                Status::G100,
            ),
            (
                "pv 11 s old: offline",
                |i, _, n| i.pv = aged(2000.0, n, 11_000),
                Target::Hold,
                Status::PvOffline,
            ),
            (
                "stale battery power: never rule 4",
                |i, _, n| {
                    i.battery.power = aged(500.0, n, 31_000);
                    i.battery.soc = aged(20.0, n, 0)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "missing battery power: never rule 4",
                |i, _, n| {
                    i.battery.power = None;
                    i.battery.soc = aged(20.0, n, 0)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "battery 29 s old still counts",
                |i, _, n| {
                    i.battery.power = aged(500.0, n, 29_000);
                    i.battery.soc = aged(20.0, n, 0)
                },
                Target::FullPower,
                Status::Charging,
            ),
            (
                "stale soc but fresh low voltage proves rule 4",
                |i, _, n| {
                    i.battery.power = aged(100.0, n, 0);
                    i.battery.soc = None;
                    i.battery.voltage = aged(53.0, n, 0)
                },
                Target::FullPower,
                Status::Charging,
            ),
            (
                "stale soc, voltage high: rule 4 unknown, no +500",
                |i, _, n| {
                    i.battery.power = aged(100.0, n, 0);
                    i.battery.soc = aged(20.0, n, 40_000)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "everything battery/vebus missing",
                |i, _, _| {
                    i.battery.power = None;
                    i.battery.voltage = None;
                    i.battery.soc = None;
                    i.battery.multi_in = None;
                    i.battery.vebus_state = None;
                    i.battery.led_bulk = None;
                    i.battery.led_absorption = None
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "stale vebus: smallest allowance still possible (+20)",
                |i, _, n| {
                    i.battery.vebus_state = None;
                    i.battery.led_absorption = None;
                    i.battery.led_bulk = None;
                    i.battery.power = aged(300.0, n, 0);
                    i.battery.voltage = aged(54.2, n, 0)
                },
                Target::Limit(1720.0),
                Status::Limiting,
            ),
            (
                "unknown discharge with multi feeding: no raise",
                |i, _, n| {
                    i.battery.power = None;
                    i.battery.multi_in = aged(-800.0, n, 0)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "unknown discharge with multi drawing: lower",
                |i, _, n| {
                    i.battery.power = None;
                    i.battery.multi_in = aged(300.0, n, 0)
                },
                Target::Limit(1400.0),
                Status::Limiting,
            ),
            (
                "discharging, multi_in stale: no correction",
                |i, _, n| {
                    i.battery.power = aged(-500.0, n, 0);
                    i.battery.multi_in = aged(-800.0, n, 31_000)
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "consumption unknown: limit",
                |i, _, _| i.consumption = None,
                Target::Limit(1700.0),
                Status::LimitingEnergyUnknown,
            ),
            (
                "consumption stale (61 s): limit",
                |i, _, n| i.consumption = aged(5000.0, n, 61_000),
                Target::Limit(1700.0),
                Status::LimitingEnergyUnknown,
            ),
        ]);
    }

    #[test]
    fn section_4_modes() {
        run(&[
            (
                "mode off",
                |_, s, _| s.mode = Mode::Off,
                Target::Release,
                Status::ModeOff,
            ),
            (
                "mode off ignores an external limit",
                |i, s, n| {
                    s.mode = Mode::Off;
                    i.external_limit = Some(ExternalLimit {
                        watts: 500.0,
                        last_write: n,
                    })
                },
                Target::Release,
                Status::ModeOff,
            ),
            (
                "own limiter ignores an external limit",
                |i, _, n| {
                    i.external_limit = Some(ExternalLimit {
                        watts: 500.0,
                        last_write: n,
                    })
                },
                Target::Limit(1700.0),
                Status::Limiting,
            ),
            (
                "external: no write yet",
                |_, s, _| s.mode = Mode::External,
                Target::Release,
                Status::ExternalExpired,
            ),
            (
                "external: fresh write applies",
                |i, s, n| {
                    s.mode = Mode::External;
                    i.external_limit = Some(ExternalLimit {
                        watts: 1000.0,
                        last_write: n - 10 * SEC,
                    })
                },
                Target::Limit(1000.0),
                Status::External,
            ),
            (
                "external: 59.9 s after the write",
                |i, s, n| {
                    s.mode = Mode::External;
                    i.external_limit = Some(ExternalLimit {
                        watts: 1000.0,
                        last_write: n - Duration::from_millis(59_900),
                    })
                },
                Target::Limit(1000.0),
                Status::External,
            ),
            (
                "external: expired at 60 s",
                |i, s, n| {
                    s.mode = Mode::External;
                    i.external_limit = Some(ExternalLimit {
                        watts: 1000.0,
                        last_write: n - 60 * SEC,
                    })
                },
                Target::Release,
                Status::ExternalExpired,
            ),
            (
                "external: configurable timeout",
                |i, s, n| {
                    s.mode = Mode::External;
                    s.external_timeout = 2 * SEC;
                    i.external_limit = Some(ExternalLimit {
                        watts: 1000.0,
                        last_write: n - 3 * SEC,
                    })
                },
                Target::Release,
                Status::ExternalExpired,
            ),
            (
                "external: clamped to 0",
                |i, s, n| {
                    s.mode = Mode::External;
                    i.external_limit = Some(ExternalLimit {
                        watts: -50.0,
                        last_write: n,
                    })
                },
                Target::Limit(0.0),
                Status::External,
            ),
            (
                "external: clamped to MaxPower",
                |i, s, n| {
                    s.mode = Mode::External;
                    i.external_limit = Some(ExternalLimit {
                        watts: 9000.0,
                        last_write: n,
                    })
                },
                Target::Limit(4200.0),
                Status::External,
            ),
            (
                "external: NaN is no limit",
                |i, s, n| {
                    s.mode = Mode::External;
                    i.external_limit = Some(ExternalLimit {
                        watts: f64::NAN,
                        last_write: n,
                    })
                },
                Target::Release,
                Status::ExternalExpired,
            ),
            (
                "external: independent of the meter and the §1 settings",
                |i, s, n| {
                    s.mode = Mode::External;
                    s.energy_difference = 0;
                    i.grid = None;
                    i.external_limit = Some(ExternalLimit {
                        watts: 800.0,
                        last_write: n,
                    })
                },
                Target::Limit(800.0),
                Status::External,
            ),
        ]);
    }

    #[test]
    fn decisions_carry_the_fresh_grid_reading_only() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mut settings = configured();
        let mut inputs = base(now);
        assert_eq!(decide(&inputs, &settings, now).grid_w, Some(-300.0));
        inputs.pv = None;
        assert_eq!(decide(&inputs, &settings, now).grid_w, Some(-300.0));
        inputs.grid = aged(-300.0, now, 6000);
        assert_eq!(decide(&inputs, &settings, now).grid_w, None);
        settings.mode = Mode::External;
        assert_eq!(decide(&base(now), &settings, now).grid_w, None);
    }

    #[test]
    fn tracking_decisions_carry_the_older_of_the_grid_and_pv_reading_times() {
        let now = Instant::now() + Duration::from_secs(1000);
        let settings = configured();
        let mut inputs = base(now);
        inputs.grid = aged(-300.0, now, 100);
        inputs.pv = aged(2000.0, now, 900);
        let pv_at = now - Duration::from_millis(900);
        assert_eq!(decide(&inputs, &settings, now).sampled_at, Some(pv_at));
        inputs.pv = aged(2000.0, now, 50);
        let grid_at = now - Duration::from_millis(100);
        assert_eq!(decide(&inputs, &settings, now).sampled_at, Some(grid_at));
        inputs.pv = aged(10.0, now, 50);
        assert_eq!(decide(&inputs, &settings, now).sampled_at, None);
    }

    #[test]
    fn tracking_decisions_carry_the_demand_without_the_allowances() {
        let now = Instant::now() + Duration::from_secs(1000);
        let mut settings = configured();
        let mut inputs = base(now);
        // Charging below full (rule 4): full power, the demand still grid + pv.
        inputs.battery.power = aged(800.0, now, 250);
        inputs.battery.soc = aged(50.0, now, 250);
        let charging = decide(&inputs, &settings, now);
        assert_eq!(charging.target, Target::FullPower);
        assert_eq!(charging.demand_w, Some(1700.0));
        // The 500 W charging allowance is in the limit, not in the demand.
        inputs.battery.soc = aged(95.0, now, 250);
        inputs.battery.voltage = aged(54.2, now, 250);
        let limiting = decide(&inputs, &settings, now);
        assert_eq!(limiting.target, Target::Limit(2200.0));
        assert_eq!(limiting.demand_w, Some(1700.0));
        inputs.pv = None;
        assert_eq!(decide(&inputs, &settings, now).demand_w, None);
        settings.mode = Mode::External;
        assert_eq!(decide(&base(now), &settings, now).demand_w, None);
    }

    #[test]
    fn mode_from_setting_refuses_unknown_values() {
        assert_eq!(Mode::from_setting(0), Some(Mode::Off));
        assert_eq!(Mode::from_setting(1), Some(Mode::OwnLimiter));
        assert_eq!(Mode::from_setting(2), Some(Mode::External));
        assert_eq!(Mode::from_setting(3), None);
        assert_eq!(Mode::from_setting(-1), None);
    }

    #[test]
    fn status_texts_match_the_spec() {
        let texts: Vec<&str> = [
            Status::NotConfigured,
            Status::G100,
            Status::PvOffline,
            Status::Charging,
            Status::Limiting,
            Status::OutOfRange,
            Status::NotLimiting,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect();
        assert_eq!(
            texts,
            [
                "Not Configured",
                "Configured, G100",
                "PV offline",
                "Configured, charging",
                "Configured, limiting",
                "Configured, out of range",
                "Configured, not limiting"
            ]
        );
        assert_eq!(Status::MeterStale.to_string(), Status::MeterStale.as_str());
    }

    #[test]
    fn decision_publishes_power_only_while_limiting() {
        assert_eq!(
            Decision::new(Target::Limit(900.0), Status::Limiting).limit_w(),
            Some(900.0)
        );
        assert_eq!(
            Decision::new(Target::FullPower, Status::Charging).limit_w(),
            None
        );
        assert_eq!(Decision::shutdown().target, Target::Release);
    }

    #[test]
    fn reading_freshness_tolerates_clock_order_and_rejects_non_finite() {
        let now = Instant::now();
        let future = Reading::new(1.0, now + SEC);
        assert_eq!(future.fresh(now, SEC), Some(1.0));
        assert_eq!(Reading::new(f64::INFINITY, now).fresh(now, SEC), None);
    }
}
