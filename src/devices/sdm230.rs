//! Eastron SDM230-Modbus (v2), single-phase energy meter. Register map: devices.md §2.
//!
//! Input registers are IEEE-754 floats, two registers each, high word first.

use super::plausibility::{Bound, Rule, kwh_per_s};
use super::{Derived, Model, PathDef, Quantity, Unit};
use crate::registers::{Access::*, Kind::*, PackLimits, Refresh, Refresh::*, Register};
use std::time::Duration;

const fn every(secs: u64) -> Refresh {
    MaxAge(Duration::from_secs(secs))
}
const fn float(name: &'static str, addr: u16, refresh: Refresh) -> Register {
    Register::new(name, Input, addr, F32, 1.0, refresh)
}

/// Input and holding registers read in normal operation.
pub static REGISTERS: [Register; 15] = [
    float("voltage", 0x0000, every(1)),
    float("current", 0x0006, every(1)),
    // The limiter's input: read as often as the bus allows.
    float("power", 0x000C, Fast),
    float("apparent_power", 0x0012, every(5)),
    float("reactive_power", 0x0018, every(5)),
    float("power_factor", 0x001E, every(5)),
    float("phase_angle", 0x0024, every(5)),
    float("frequency", 0x0046, every(5)),
    float("import_energy", 0x0048, every(10)),
    float("export_energy", 0x004A, every(10)),
    float("import_reactive_energy", 0x004C, every(30)),
    float("export_reactive_energy", 0x004E, every(30)),
    float("total_energy", 0x0156, every(30)),
    float("total_reactive_energy", 0x0158, every(30)),
    // Identification, read once when the unit is identified.
    Register::new("serial", Holding, 0xFC00, U32, 1.0, Once),
];

/// Identification block: serial (u32), meter code, firmware version.
pub const IDENT_READ: (u16, u16) = (0xFC00, 4);

/// Reads spanning the meter's undefined gaps are answered with an exception (devices.md §2).
pub const LIMITS: PackLimits = PackLimits {
    max_hole: 4,
    max_count: 125,
    barriers: &[(Input, 0x0012), (Input, 0x0046), (Input, 0x0156)],
};

/// The most the meter can measure: its 300 V voltage bound × Imax 100 A, i.e. 230 V × 100 A
/// with a 30 % margin.
const MAX_POWER_W: f64 = 300.0 * 100.0;
/// Imax with a margin; the current register is unsigned but may as well be checked both ways.
const MAX_CURRENT_A: f64 = 120.0;
/// No installation reaches this in a meter's life (30 kW for 38 years); catches garbage floats.
const ENERGY_CEILING: f64 = 1e7;
/// The display's resolution, 0.01 kWh: one count of slack for rounding.
const ENERGY_SLACK: f64 = 0.01;
const fn energy(name: &'static str) -> Rule {
    Rule::counter(
        name,
        ENERGY_CEILING,
        Bound::fixed(kwh_per_s(MAX_POWER_W)),
        ENERGY_SLACK,
    )
}

/// Physical bounds of each reading (issue 7): anything outside is a glitch, not a measurement.
/// Power factor gets a hair of tolerance because it is computed in float (P/S).
pub static PLAUSIBILITY: [Rule; 12] = [
    Rule::between("voltage", 0.0, 300.0),
    Rule::between("current", -MAX_CURRENT_A, MAX_CURRENT_A),
    Rule::between("power", -MAX_POWER_W, MAX_POWER_W),
    Rule::between("apparent_power", -MAX_POWER_W, MAX_POWER_W),
    Rule::between("reactive_power", -MAX_POWER_W, MAX_POWER_W),
    Rule::between("power_factor", -1.001, 1.001),
    Rule::between("phase_angle", -180.0, 180.0),
    Rule::between("frequency", 45.0, 65.0),
    energy("import_energy"),
    energy("export_energy"),
    energy("import_reactive_energy"),
    energy("export_reactive_energy"),
];

/// What the grid service publishes, per phase (what systemcalc reads) and in total.
pub static PATHS: [PathDef; 16] = [
    PathDef::new("/Ac/Power", Unit::Watt, Quantity::Reg("power")),
    PathDef::new("/Ac/L1/Power", Unit::Watt, Quantity::Reg("power")),
    PathDef::new("/Ac/L1/Voltage", Unit::Volt, Quantity::Reg("voltage")),
    PathDef::new("/Ac/Voltage", Unit::Volt, Quantity::Reg("voltage")),
    PathDef::new(
        "/Ac/L1/Current",
        Unit::Ampere,
        Quantity::Derived(Derived::CurrentSignedLikePower),
    ),
    PathDef::new(
        "/Ac/Current",
        Unit::Ampere,
        Quantity::Derived(Derived::CurrentSignedLikePower),
    ),
    PathDef::new(
        "/Ac/L1/PowerFactor",
        Unit::Plain,
        Quantity::Reg("power_factor"),
    ),
    PathDef::new(
        "/Ac/PowerFactor",
        Unit::Plain,
        Quantity::Reg("power_factor"),
    ),
    PathDef::new("/Ac/Frequency", Unit::Hertz, Quantity::Reg("frequency")),
    PathDef::new(
        "/Ac/L1/Energy/Forward",
        Unit::KiloWattHour,
        Quantity::Reg("import_energy"),
    ),
    PathDef::new(
        "/Ac/L1/Energy/Reverse",
        Unit::KiloWattHour,
        Quantity::Reg("export_energy"),
    ),
    PathDef::new(
        "/Ac/Energy/Forward",
        Unit::KiloWattHour,
        Quantity::Reg("import_energy"),
    ),
    PathDef::new(
        "/Ac/Energy/Reverse",
        Unit::KiloWattHour,
        Quantity::Reg("export_energy"),
    ),
    // Import − export: the original's consumption figure, the limiter's energyDifference input.
    PathDef::new(
        "/Ac/Energy/Consumption",
        Unit::KiloWattHour,
        Quantity::Derived(Derived::NetImport),
    ),
    PathDef::new(
        "/Ac/L1/Energy/Consumption",
        Unit::KiloWattHour,
        Quantity::Derived(Derived::NetImport),
    ),
    PathDef::new(
        "/Internal/ApparentPower",
        Unit::VoltAmpere,
        Quantity::Reg("apparent_power"),
    ),
];

pub static MODEL: Model = Model {
    name: "Eastron SDM230",
    vendor: "eastron",
    default_role: "grid",
    allowed_roles: &["grid", "pvinverter", "acload", "genset"],
    registers: &REGISTERS,
    limits: LIMITS,
    paths: &PATHS,
    // The meter's power is read as often as the bus allows; 100 ms is the usual cycle at 9600 baud.
    refresh_time_ms: 100,
    rated_power_w: None,
};
