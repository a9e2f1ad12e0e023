//! Growatt MIN/MIC/MID TL-X grid-tied PV inverter, "Growatt Inverter Modbus RTU Protocol" v1.20
//! layout (devices.md §3). u32 values are two registers, high word first.

use super::plausibility::{Bound, Rule, kwh_per_s};
use super::{Derived, Model, PathDef, Quantity, Unit};
use crate::registers::{Access::*, Kind::*, PackLimits, Refresh, Refresh::*, Register};
use std::time::Duration;

const fn every(secs: u64) -> Refresh {
    MaxAge(Duration::from_secs(secs))
}
const fn input(
    name: &'static str,
    addr: u16,
    kind: crate::registers::Kind,
    scale: f64,
    refresh: Refresh,
) -> Register {
    Register::new(name, Input, addr, kind, scale, refresh)
}
const fn holding(
    name: &'static str,
    addr: u16,
    kind: crate::registers::Kind,
    scale: f64,
    refresh: Refresh,
) -> Register {
    Register::new(name, Holding, addr, kind, scale, refresh)
}

/// Active power rate, % of rated power: the limiter's actuator.
pub const HR_ACTIVE_POWER_RATE: u16 = 3;
pub const HR_EXPORT_LIMIT_SOURCE: u16 = 122;
pub const HR_EXPORT_LIMIT_RATE: u16 = 123;
pub const HR_EXPORT_LIMIT_FAILSAFE_RATE: u16 = 3000;

pub static REGISTERS: [Register; 33] = [
    input("status", 0, U16, 1.0, every(1)),
    input("pv_power", 1, U32, 0.1, every(1)),
    input("pv1_voltage", 3, U16, 0.1, every(2)),
    input("pv1_current", 4, U16, 0.1, every(2)),
    input("pv1_power", 5, U32, 0.1, every(2)),
    input("pv2_voltage", 7, U16, 0.1, every(2)),
    input("pv2_current", 8, U16, 0.1, every(2)),
    input("pv2_power", 9, U32, 0.1, every(2)),
    // The limiter's PV input: grid + PV is only invariant while the inverter ramps if both are
    // read close together, so it is read as often as the meter's power.
    input("ac_power", 35, U32, 0.1, Fast),
    input("frequency", 37, U16, 0.01, every(1)),
    input("ac_voltage", 38, U16, 0.1, every(1)),
    input("ac_current", 39, U16, 0.1, every(1)),
    input("ac_l1_power", 40, U32, 0.1, every(1)),
    input("energy_today", 53, U32, 0.1, every(10)),
    input("energy_total", 55, U32, 0.1, every(10)),
    input("work_time_total", 57, U32, 0.5, every(60)),
    input("pv1_energy_today", 59, U32, 0.1, every(30)),
    input("pv1_energy_total", 61, U32, 0.1, every(30)),
    input("pv2_energy_today", 63, U32, 0.1, every(30)),
    input("pv2_energy_total", 65, U32, 0.1, every(30)),
    // Signed: an inverter outdoors reports sub-zero temperatures in winter.
    input("inverter_temperature", 93, S16, 0.1, every(10)),
    input("ipm_temperature", 94, S16, 0.1, every(10)),
    input("boost_temperature", 95, S16, 0.1, every(10)),
    input("derating_mode", 104, U16, 1.0, every(5)),
    input("fault_code", 105, U16, 1.0, every(5)),
    holding(
        "active_power_rate",
        HR_ACTIVE_POWER_RATE,
        U16,
        1.0,
        every(10),
    ),
    // Read again now and then: published as /Ac/MaxPower and used to scale the limiter.
    holding("rated_power", 6, U32, 0.1, every(60)),
    holding("firmware", 9, Text { words: 3 }, 1.0, Once),
    holding("control_firmware", 12, Text { words: 3 }, 1.0, Once),
    holding("device_type", 43, U16, 1.0, Once),
    holding(
        "export_limit_source",
        HR_EXPORT_LIMIT_SOURCE,
        U16,
        1.0,
        every(30),
    ),
    holding(
        "export_limit_rate",
        HR_EXPORT_LIMIT_RATE,
        U16,
        0.1,
        every(30),
    ),
    holding(
        "export_limit_failsafe_rate",
        HR_EXPORT_LIMIT_FAILSAFE_RATE,
        U16,
        0.1,
        every(30),
    ),
];

/// Identification: holding 0..=44 (rated power, firmware, old serial, device type) in one read,
/// then the new serial at 209..=223.
pub const IDENT_READ: (u16, u16) = (0, 45);
pub const SERIAL_NEW_READ: (u16, u16) = (209, 15);
pub const SERIAL_OLD: (usize, usize) = (23, 28);

/// Device type codes seen on real units (HR43). Others are accepted with a log line when the
/// v1.20 map answers, because the code table is not published.
pub const KNOWN_DEVICE_TYPES: &[(u16, &str)] = &[(5100, "MIN 4200TL-X")];

pub const LIMITS: PackLimits = PackLimits {
    max_hole: 10,
    max_count: 125,
    barriers: &[],
};

/// Growatt status (input 0) → Victron/Fronius /StatusCode (victron-dbus.md §5.2).
/// Waiting (not connected, no output) is standby; faults are errors. Running while derating is
/// reported as throttled by [`Derived::StatusCode`].
pub const STATUS_CODES: &[(u16, i32)] = &[(0, 8), (1, 7), (2, 10), (3, 10)];

/// Derating modes (input 104), for the log and /Internal/DeratingMode text.
pub const DERATING_MODES: &[(u16, &str)] = &[
    (0, "none"),
    (1, "PV"),
    (2, "constant power"),
    (3, "grid over-voltage"),
    (4, "over-frequency"),
    (5, "DC source"),
    (6, "inverter temperature"),
    (7, "active power order"),
    (8, "load speed"),
    (9, "over back-by-time"),
    (10, "internal temperature"),
    (11, "outside temperature"),
    (12, "line impedance"),
    (13, "parallel anti-backflow"),
    (14, "local anti-backflow"),
    (15, "BDC load priority"),
    (16, "CT check error"),
];

/// AC output may exceed the rating by 10 %; a little negative AC power is the night draw.
const AC_POWER_FACTOR: f64 = 1.1;
/// PV arrays are commonly oversized up to 1.5 × the inverter rating.
const PV_POWER_FACTOR: f64 = 1.5;
/// The lowest grid voltage the AC current bound allows for (A per W of rating).
const AC_CURRENT_PER_W: f64 = AC_POWER_FACTOR / 180.0;
/// Far above a lifetime of any MIN/MID (4.6 kW × 40 years ≈ 1.6 GWh); catches 0xFFFFFFFF.
const ENERGY_CEILING: f64 = 1e7;
/// One count of the 0.1 kWh registers.
const ENERGY_SLACK: f64 = 0.1;

/// Physical bounds of each reading (issue 7), relative to the rated power read at identification.
/// The daily counters reset at midnight, so they are ranges (a day at full power), not counters.
/// Frequency reads 0 while the inverter waits for the grid: only its upper bound is checked.
pub static PLAUSIBILITY: [Rule; 15] = [
    Rule::range(
        "ac_power",
        Bound::fixed(-50.0),
        Bound::rated(AC_POWER_FACTOR),
    ),
    Rule::range(
        "ac_l1_power",
        Bound::fixed(-50.0),
        Bound::rated(AC_POWER_FACTOR),
    ),
    Rule::range(
        "ac_current",
        Bound::fixed(0.0),
        Bound::rated(AC_CURRENT_PER_W),
    ),
    Rule::between("ac_voltage", 0.0, 300.0),
    Rule::between("frequency", 0.0, 65.0),
    Rule::range("pv_power", Bound::fixed(0.0), Bound::rated(PV_POWER_FACTOR)),
    Rule::range(
        "pv1_power",
        Bound::fixed(0.0),
        Bound::rated(PV_POWER_FACTOR),
    ),
    Rule::range(
        "pv2_power",
        Bound::fixed(0.0),
        Bound::rated(PV_POWER_FACTOR),
    ),
    Rule::between("pv1_voltage", 0.0, 600.0),
    Rule::between("pv2_voltage", 0.0, 600.0),
    Rule::range(
        "energy_today",
        Bound::fixed(0.0),
        Bound::rated(AC_POWER_FACTOR * 24.0 / 1000.0),
    ),
    Rule::counter(
        "energy_total",
        ENERGY_CEILING,
        Bound::rated(kwh_per_s(AC_POWER_FACTOR)),
        ENERGY_SLACK,
    ),
    Rule::counter(
        "pv1_energy_total",
        ENERGY_CEILING,
        Bound::rated(kwh_per_s(PV_POWER_FACTOR)),
        ENERGY_SLACK,
    ),
    Rule::counter(
        "pv2_energy_total",
        ENERGY_CEILING,
        Bound::rated(kwh_per_s(PV_POWER_FACTOR)),
        ENERGY_SLACK,
    ),
    Rule::range("active_power_rate", Bound::fixed(0.0), Bound::fixed(100.0)),
];

pub static PATHS: [PathDef; 29] = [
    PathDef::new("/Ac/Power", Unit::Watt, Quantity::Reg("ac_power")),
    PathDef::new("/Ac/L1/Power", Unit::Watt, Quantity::Reg("ac_power")),
    PathDef::new("/Ac/L1/Voltage", Unit::Volt, Quantity::Reg("ac_voltage")),
    PathDef::new("/Ac/L1/Current", Unit::Ampere, Quantity::Reg("ac_current")),
    PathDef::new("/Ac/Frequency", Unit::Hertz, Quantity::Reg("frequency")),
    // Lifetime energy, not today's.
    PathDef::new(
        "/Ac/Energy/Forward",
        Unit::KiloWattHour,
        Quantity::Reg("energy_total"),
    ),
    PathDef::new(
        "/Ac/L1/Energy/Forward",
        Unit::KiloWattHour,
        Quantity::Reg("energy_total"),
    ),
    PathDef::new("/Ac/MaxPower", Unit::Watt, Quantity::Reg("rated_power")),
    PathDef::new(
        "/StatusCode",
        Unit::Code,
        Quantity::Derived(Derived::StatusCode),
    ),
    PathDef::new("/ErrorCode", Unit::Code, Quantity::Reg("fault_code")),
    PathDef::new("/Pv/0/V", Unit::Volt, Quantity::Reg("pv1_voltage")),
    PathDef::new("/Pv/0/I", Unit::Ampere, Quantity::Reg("pv1_current")),
    PathDef::new("/Pv/0/P", Unit::Watt, Quantity::Reg("pv1_power")),
    PathDef::new("/Pv/1/V", Unit::Volt, Quantity::Reg("pv2_voltage")),
    PathDef::new("/Pv/1/I", Unit::Ampere, Quantity::Reg("pv2_current")),
    PathDef::new("/Pv/1/P", Unit::Watt, Quantity::Reg("pv2_power")),
    PathDef::new("/Internal/PvPower", Unit::Watt, Quantity::Reg("pv_power")),
    PathDef::new(
        "/Internal/ApparentPower",
        Unit::VoltAmpere,
        Quantity::Reg("ac_l1_power"),
    ),
    PathDef::new(
        "/Internal/EnergyToday",
        Unit::KiloWattHour,
        Quantity::Reg("energy_today"),
    ),
    PathDef::new(
        "/Internal/InverterTemperature",
        Unit::Celsius,
        Quantity::Reg("inverter_temperature"),
    ),
    PathDef::new(
        "/Internal/IpmTemperature",
        Unit::Celsius,
        Quantity::Reg("ipm_temperature"),
    ),
    PathDef::new(
        "/Internal/BoostTemperature",
        Unit::Celsius,
        Quantity::Reg("boost_temperature"),
    ),
    PathDef::new(
        "/Internal/DeratingMode",
        Unit::Code,
        Quantity::Reg("derating_mode"),
    ),
    PathDef::new(
        "/Internal/InverterStatus",
        Unit::Code,
        Quantity::Reg("status"),
    ),
    PathDef::new(
        "/Internal/ActivePowerRate",
        Unit::Percent,
        Quantity::Reg("active_power_rate"),
    ),
    PathDef::new(
        "/Internal/ExportLimit/Source",
        Unit::Code,
        Quantity::Reg("export_limit_source"),
    ),
    PathDef::new(
        "/Internal/ExportLimit/Rate",
        Unit::Percent,
        Quantity::Reg("export_limit_rate"),
    ),
    PathDef::new(
        "/Internal/ExportLimit/FailSafeRate",
        Unit::Percent,
        Quantity::Reg("export_limit_failsafe_rate"),
    ),
    PathDef::new(
        "/Internal/WorkTime",
        Unit::Seconds,
        Quantity::Reg("work_time_total"),
    ),
];

pub static MODEL: Model = Model {
    name: "Growatt MIN/MID TL-X",
    vendor: "growatt",
    default_role: "pvinverter",
    allowed_roles: &["pvinverter"],
    registers: &REGISTERS,
    limits: LIMITS,
    paths: &PATHS,
    refresh_time_ms: 1000,
    rated_power_w: Some("rated_power"),
};
