//! Growatt MIN/MIC/MID TL-X grid-tied PV inverter, "Growatt Inverter Modbus RTU Protocol" v1.20
//! layout: docs/reference/growatt.md (§3 holding, §8 input registers). u32 values are two
//! registers, high word first.
//!
//! The limiter drives it through holding register 3 (active power rate, whole percent of rated
//! power) and keeps the UK G100 export limit set in its export-limit registers: [`LIMITER`].

use std::time::Duration;

use log::{info, warn};

use super::model::{
    AccessError, BusTiming, Identity, LimitedInverter, LimiterOffer, Model, PathDef, PowerLimiter,
    RegisterReader, RegisterWrite, RegisterWriter, Roles, Unit, Values, original_ident,
    read_if_present, register_names,
};
use super::plausibility::{Bound, Rule, kwh_per_s};
use crate::limiter::strategy::fraction_of_rated_floor;
use crate::limiter::{PercentOfRated, Setting};
use crate::registers::{
    Access::*, Kind, Kind::*, PackLimits, Refresh, Refresh::*, Register, decode_number,
    decode_text, lookup,
};

register_names! {
    /// The inverter's registers, one per row of [`REGISTERS`].
    pub enum Reg {
        Status,
        PvPower,
        Pv1Voltage,
        Pv1Current,
        Pv1Power,
        Pv2Voltage,
        Pv2Current,
        Pv2Power,
        AcPower,
        Frequency,
        AcVoltage,
        AcCurrent,
        AcL1Power,
        EnergyToday,
        EnergyTotal,
        WorkTimeTotal,
        Pv1EnergyToday,
        Pv1EnergyTotal,
        Pv2EnergyToday,
        Pv2EnergyTotal,
        InverterTemperature,
        IpmTemperature,
        BoostTemperature,
        DeratingMode,
        FaultCode,
        ActivePowerRate,
        RatedPower,
        Firmware,
        ControlFirmware,
        DeviceType,
        ExportLimitSource,
        ExportLimitRate,
        ExportLimitFailsafeRate,
    }
}
use Reg::*;

/// Active power rate, % of rated power: the limiter's actuator.
pub const HR_ACTIVE_POWER_RATE: u16 = 3;
/// Export limit source: 0 off, 1 RS485 meter, 2 RS232, 3 CT.
pub const HR_EXPORT_LIMIT_SOURCE: u16 = 122;
/// Export limit power rate, 0.1 % of rated.
pub const HR_EXPORT_LIMIT_RATE: u16 = 123;
/// The power rate used when the export-limit meter fails, 0.1 % of rated.
pub const HR_EXPORT_LIMIT_FAILSAFE_RATE: u16 = 3000;

const fn every(secs: u64) -> Refresh {
    MaxAge(Duration::from_secs(secs))
}
const fn input(name: &'static str, addr: u16, kind: Kind, scale: f64, r: Refresh) -> Register {
    Register::new(name, Input, addr, kind, scale, r)
}
const fn holding(name: &'static str, addr: u16, kind: Kind, scale: f64, r: Refresh) -> Register {
    Register::new(name, Holding, addr, kind, scale, r)
}

/// The registers read in normal operation, in the order of [`Reg`].
pub static REGISTERS: [Register; Reg::ALL.len()] = [
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

pub const LIMITS: PackLimits = PackLimits {
    max_hole: 10,
    max_count: 125,
    barriers: &[],
};

/// Identification: holding 0..=44 (rated power, firmware, old serial, device type) in one read,
/// then the new serial at 209..=223 where the unit has it.
const IDENT_READ: (u16, usize) = (0, 45);
const SERIAL_NEW_READ: (u16, usize) = (209, 15);
const SERIAL_OLD: (usize, usize) = (23, 28);

/// Device type codes seen on real units (HR43). Others are accepted with a log line when the
/// v1.20 map answers.
pub const KNOWN_DEVICE_TYPES: &[(u16, &str)] = &[(5100, "MIN 4200TL-X")];

/// Growatt status (input 0) → Victron/Fronius /StatusCode (docs/reference/victron.md §7).
/// Waiting (not connected, no output) is standby; faults are errors. Running while derating is
/// reported as throttled by `status_code`.
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

const fn range(reg: Reg, min: Bound, max: Bound) -> Rule {
    Rule::range(reg.id(), min, max)
}
const fn between(reg: Reg, min: f64, max: f64) -> Rule {
    Rule::between(reg.id(), min, max)
}
const fn counter(reg: Reg, max_power: f64) -> Rule {
    Rule::counter(
        reg.id(),
        ENERGY_CEILING,
        Bound::rated(kwh_per_s(max_power)),
        ENERGY_SLACK,
    )
}

/// Physical bounds of each reading, relative to the rated power read at identification.
/// The daily counters reset at midnight, so they are ranges (a day at full power), not counters.
/// Frequency reads 0 while the inverter waits for the grid: only its upper bound is checked.
pub static PLAUSIBILITY: [Rule; 15] = [
    range(AcPower, Bound::fixed(-50.0), Bound::rated(AC_POWER_FACTOR)),
    range(
        AcL1Power,
        Bound::fixed(-50.0),
        Bound::rated(AC_POWER_FACTOR),
    ),
    range(AcCurrent, Bound::fixed(0.0), Bound::rated(AC_CURRENT_PER_W)),
    between(AcVoltage, 0.0, 300.0),
    between(Frequency, 0.0, 65.0),
    range(PvPower, Bound::fixed(0.0), Bound::rated(PV_POWER_FACTOR)),
    range(Pv1Power, Bound::fixed(0.0), Bound::rated(PV_POWER_FACTOR)),
    range(Pv2Power, Bound::fixed(0.0), Bound::rated(PV_POWER_FACTOR)),
    between(Pv1Voltage, 0.0, 600.0),
    between(Pv2Voltage, 0.0, 600.0),
    range(
        EnergyToday,
        Bound::fixed(0.0),
        Bound::rated(AC_POWER_FACTOR * 24.0 / 1000.0),
    ),
    counter(EnergyTotal, AC_POWER_FACTOR),
    counter(Pv1EnergyTotal, PV_POWER_FACTOR),
    counter(Pv2EnergyTotal, PV_POWER_FACTOR),
    range(ActivePowerRate, Bound::fixed(0.0), Bound::fixed(100.0)),
];

/// Growatt status → Victron status code, throttled (12) while running and derating.
fn status_code(v: &Values) -> Option<f64> {
    let code = lookup(STATUS_CODES, v.get(Status)? as u16)?;
    let derating = v.get(DeratingMode).unwrap_or(0.0);
    Some(if code == 7 && derating != 0.0 {
        12.0
    } else {
        code as f64
    })
}

const fn reg(path: &'static str, unit: Unit, reg: Reg) -> PathDef {
    PathDef::reg(path, unit, reg.id())
}

/// What the pvinverter service publishes (totals also per phase: a single-phase inverter).
pub static PATHS: [PathDef; 27] = [
    reg("/Ac/Power", Unit::Watt, AcPower).also("/Ac/L1/Power"),
    reg("/Ac/L1/Voltage", Unit::Volt, AcVoltage),
    reg("/Ac/L1/Current", Unit::Ampere, AcCurrent),
    reg("/Ac/Frequency", Unit::Hertz, Frequency),
    // Lifetime energy, not today's.
    reg("/Ac/Energy/Forward", Unit::KiloWattHour, EnergyTotal).also("/Ac/L1/Energy/Forward"),
    reg("/Ac/MaxPower", Unit::Watt, RatedPower),
    PathDef::derived("/StatusCode", Unit::Code, status_code),
    reg("/ErrorCode", Unit::Code, FaultCode),
    reg("/Pv/0/V", Unit::Volt, Pv1Voltage),
    reg("/Pv/0/I", Unit::Ampere, Pv1Current),
    reg("/Pv/0/P", Unit::Watt, Pv1Power),
    reg("/Pv/1/V", Unit::Volt, Pv2Voltage),
    reg("/Pv/1/I", Unit::Ampere, Pv2Current),
    reg("/Pv/1/P", Unit::Watt, Pv2Power),
    reg("/Internal/PvPower", Unit::Watt, PvPower),
    reg("/Internal/ApparentPower", Unit::VoltAmpere, AcL1Power),
    reg("/Internal/EnergyToday", Unit::KiloWattHour, EnergyToday),
    reg(
        "/Internal/InverterTemperature",
        Unit::Celsius,
        InverterTemperature,
    ),
    reg("/Internal/IpmTemperature", Unit::Celsius, IpmTemperature),
    reg(
        "/Internal/BoostTemperature",
        Unit::Celsius,
        BoostTemperature,
    ),
    reg("/Internal/DeratingMode", Unit::Code, DeratingMode),
    reg("/Internal/InverterStatus", Unit::Code, Status),
    reg("/Internal/ActivePowerRate", Unit::Percent, ActivePowerRate),
    reg(
        "/Internal/ExportLimit/Source",
        Unit::Code,
        ExportLimitSource,
    ),
    reg("/Internal/ExportLimit/Rate", Unit::Percent, ExportLimitRate),
    reg(
        "/Internal/ExportLimit/FailSafeRate",
        Unit::Percent,
        ExportLimitFailsafeRate,
    ),
    reg("/Internal/WorkTime", Unit::Seconds, WorkTimeTotal),
];

/// A Growatt answers holding 0..=44 (an SDM230 refuses it) with a rated power and a device type.
fn identify(regs: &mut dyn RegisterReader) -> Result<Option<Identity>, AccessError> {
    let mut hr = [0u16; IDENT_READ.1];
    if !read_if_present(regs, Holding, IDENT_READ.0, &mut hr)? {
        return Ok(None);
    }
    let mut new_serial = [0u16; SERIAL_NEW_READ.1];
    let has_new_serial = read_if_present(regs, Holding, SERIAL_NEW_READ.0, &mut new_serial)?;
    Ok(identity(&hr, has_new_serial.then_some(&new_serial[..])))
}

/// The identity in holding 0..=44 and, if the unit has them, 209..=223 (new serial). `None` when
/// the block does not look like a Growatt (no rated power, no device type, no serial).
fn identity(hr0_44: &[u16; IDENT_READ.1], hr209_223: Option<&[u16]>) -> Option<Identity> {
    let rated = decode_number(U32, &hr0_44[6..8])? * 0.1;
    let code = hr0_44[43];
    if rated <= 0.0 || code == 0 {
        return None;
    }
    let new_serial = hr209_223.map(decode_text).unwrap_or_default();
    let serial = if new_serial.is_empty() {
        decode_text(&hr0_44[SERIAL_OLD.0..SERIAL_OLD.1])
    } else {
        new_serial
    };
    if serial.is_empty() {
        return None;
    }
    let firmware = decode_text(&hr0_44[9..12]);
    let known = lookup(KNOWN_DEVICE_TYPES, code);
    Some(Identity {
        model: &MODEL,
        original_ident: hr209_223
            .and_then(original_text)
            .and_then(|text| original_ident("pv", &text)),
        serial,
        details: format!(
            "device type {code} {}, rated {rated:.0} W, firmware {firmware}",
            known.unwrap_or("not in the known list; the v1.20 map answers")
        ),
        firmware,
        hardware: decode_text(&hr0_44[12..15]),
        code,
        rated_power_w: Some(rated),
    })
}

/// HR209–223 as the Python original decoded it for its settings ident: the bytes high first,
/// trailing NULs stripped, nothing else (spaces kept); `None` where its ASCII decoding would
/// have failed (docs/reference/growatt.md §6).
fn original_text(words: &[u16]) -> Option<String> {
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
        .is_ascii()
        .then(|| bytes.into_iter().map(char::from).collect())
}

/// The limiter's strategy for a Growatt: HR3 takes the limit in whole percent of rated power,
/// and every (re)initialisation writes the G100 set-up.
pub struct GrowattLimiter;

pub static LIMITER: GrowattLimiter = GrowattLimiter;

/// HR3 in whole percent of rated power, 2…100: the original driver's floor of 2 % keeps the
/// inverter connected to the grid.
pub const HR3_PERCENT: PercentOfRated = PercentOfRated { min: 2, max: 100 };

/// The G100 set-up, in write order: HR3 = 100 %, HR122 = 1 (RS485 meter), HR123 = HR3000 =
/// export limit in 0.1 % of rated, rounded down (docs/reference/limiter.md §3; the original
/// driver's start-up, docs/reference/growatt.md §10).
pub fn g100_setup(export_limit_w: f64, rated_w: f64) -> [RegisterWrite; 4] {
    let permille = fraction_of_rated_floor(export_limit_w, rated_w, 1000);
    let write = |addr, value| RegisterWrite { addr, value };
    [
        write(HR_ACTIVE_POWER_RATE, HR3_PERCENT.max),
        write(HR_EXPORT_LIMIT_SOURCE, 1),
        write(HR_EXPORT_LIMIT_RATE, permille),
        write(HR_EXPORT_LIMIT_FAILSAFE_RATE, permille),
    ]
}

impl PowerLimiter for GrowattLimiter {
    fn encoding(&self) -> PercentOfRated {
        HR3_PERCENT
    }

    fn write(&self, setting: Setting) -> RegisterWrite {
        RegisterWrite {
            addr: HR_ACTIVE_POWER_RATE,
            value: setting.0,
        }
    }

    /// The G100 set-up, then HR3, HR122, HR123 and HR3000 read back and logged. The limiter
    /// starts from the HR3 value read back.
    fn set_up(
        &self,
        regs: &mut dyn RegisterWriter,
        export_limit_w: f64,
        rated_w: f64,
    ) -> Option<Setting> {
        let mut failed = false;
        for RegisterWrite { addr, value } in g100_setup(export_limit_w, rated_w) {
            if let Err(e) = regs.write(addr, value) {
                warn!("G100 set-up: writing {value} to holding register {addr} failed: {e}");
                failed = true;
            }
        }
        let mut read_back = |addr: u16| {
            let mut word = [0u16];
            regs.read(Holding, addr, &mut word).ok().map(|()| word[0])
        };
        let hr3 = read_back(HR_ACTIVE_POWER_RATE);
        let source = read_back(HR_EXPORT_LIMIT_SOURCE);
        let rate = read_back(HR_EXPORT_LIMIT_RATE);
        let failsafe = read_back(HR_EXPORT_LIMIT_FAILSAFE_RATE);
        let show = |v: Option<u16>| v.map_or("unreadable".to_string(), |v| v.to_string());
        info!(
            "G100 set-up{}: active power rate {} %, export limit source {}, export limit rate {} per mille, fail-safe rate {} per mille",
            if failed { " incomplete" } else { "" },
            show(hr3),
            show(source),
            show(rate),
            show(failsafe)
        );
        hr3.map(Setting)
    }
}

pub static MODEL: Model = Model {
    name: "Growatt MIN/MID TL-X",
    vendor: "growatt",
    // A PV inverter only, the limiter's: read-only /Role, never a generic meter.
    roles: Roles {
        default: "pvinverter",
        allowed: &["pvinverter"],
        generic_meter: false,
    },
    registers: &REGISTERS,
    limits: LIMITS,
    paths: &PATHS,
    plausibility: &PLAUSIBILITY,
    identify,
    bus: BusTiming::FRAMING_ONLY,
    // The Python original's ("made it up"; docs/reference/victron.md §4).
    product_id: 0xB089,
    limiter: LimiterOffer {
        grid_meter: None,
        inverter: Some(LimitedInverter {
            ac_power: AcPower.id(),
            rated_power: Some(RatedPower.id()),
            limiter: &LIMITER,
        }),
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::model::assert_names_match;
    use crate::devices::plausibility::Guard;
    use crate::registers::{Access, Read, RegisterMap};
    use std::collections::BTreeMap;
    use std::time::Instant;

    #[test]
    fn typed_names_match_the_table() {
        assert_names_match(Reg::ALL, &REGISTERS);
    }

    fn status_code_for(status: u16, derating: u16) -> Option<f64> {
        let mut map = RegisterMap::new(&REGISTERS, LIMITS);
        let now = Instant::now();
        for (addr, word) in [(0, status), (104, derating)] {
            let read = Read {
                access: Input,
                addr,
                count: 1,
                fast: false,
            };
            map.store(&read, &[word], now);
        }
        MODEL
            .published_values(&map)
            .find(|(p, _)| p.path == "/StatusCode")
            .and_then(|(_, v)| v)
    }

    #[test]
    fn status_maps_honestly() {
        assert_eq!(status_code_for(0, 0), Some(8.0));
        assert_eq!(status_code_for(1, 0), Some(7.0));
        assert_eq!(status_code_for(1, 7), Some(12.0));
        assert_eq!(status_code_for(3, 0), Some(10.0));
        assert_eq!(status_code_for(9, 0), None);
    }

    fn ident_block() -> [u16; 45] {
        let mut hr = [0u16; 45];
        hr[6] = 0;
        hr[7] = 42000; // 4200.0 W
        hr[9..12].copy_from_slice(&[0x4142, 0x3132, 0x3334]); // "AB1234"
        hr[23..28].copy_from_slice(&[0x5158, 0x4142, 0x3132, 0x3334, 0x3536]); // "QXAB123456"
        hr[43] = 5100;
        hr
    }

    #[test]
    fn the_original_ident_is_hr209_223_as_the_original_read_it() {
        let hr = ident_block();
        let ident = |hr209: Option<&[u16]>| identity(&hr, hr209).unwrap().original_ident;
        let mut words = [0u16; 15];
        words[..2].copy_from_slice(&[0x4e45, 0x5731]); // "NEW1", NUL padded
        assert_eq!(ident(Some(&words)).as_deref(), Some("pv_NEW1"));
        // Blank: the original's ident was `pv_`, while the daemon's serial comes from HR23.
        let blank = identity(&hr, Some(&[0; 15])).unwrap();
        assert_eq!(blank.original_ident.as_deref(), Some("pv_"));
        assert_eq!(blank.serial, "QXAB123456");
        // Space padding is kept by the original: no ident it could have stored settings under.
        words[2] = 0x2020;
        assert_eq!(ident(Some(&words)), None);
        // Without HR209–223 the original never started.
        assert_eq!(ident(None), None);
    }

    #[test]
    fn identifies_from_holding_0_to_44_and_the_new_serial() {
        let mut hr = ident_block();
        let id = identity(&hr, None).unwrap();
        assert_eq!(id.serial, "QXAB123456");
        assert_eq!(id.rated_power_w, Some(4200.0));
        assert_eq!(id.firmware, "AB1234");
        assert_eq!(
            id.details,
            "device type 5100 MIN 4200TL-X, rated 4200 W, firmware AB1234"
        );
        let new = [0x4e45u16, 0x5731, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // "NEW1"
        assert_eq!(identity(&hr, Some(&new)).unwrap().serial, "NEW1");
        hr[43] = 0;
        assert!(identity(&hr, None).is_none());
    }

    /// A unit's holding registers in memory; reads of other addresses are refused.
    struct FakeUnit {
        holding: BTreeMap<u16, u16>,
        writes: Vec<(u16, u16)>,
        answers: bool,
    }

    impl RegisterReader for FakeUnit {
        fn read(
            &mut self,
            access: Access,
            addr: u16,
            words: &mut [u16],
        ) -> Result<(), AccessError> {
            if !self.answers {
                return Err(AccessError::NoAnswer);
            }
            if access != Holding {
                return Err(AccessError::Refused);
            }
            for (a, w) in (addr..).zip(words.iter_mut()) {
                *w = *self.holding.get(&a).ok_or(AccessError::Refused)?;
            }
            Ok(())
        }
    }

    impl RegisterWriter for FakeUnit {
        fn write(&mut self, addr: u16, value: u16) -> Result<(), AccessError> {
            if !self.answers {
                return Err(AccessError::NoAnswer);
            }
            self.writes.push((addr, value));
            self.holding.insert(addr, value);
            Ok(())
        }
    }

    fn unit_with(block: [u16; 45]) -> FakeUnit {
        FakeUnit {
            holding: (0..).zip(block).collect(),
            writes: Vec::new(),
            answers: true,
        }
    }

    #[test]
    fn identification_reads_the_block_and_tolerates_a_missing_new_serial() {
        let mut unit = unit_with(ident_block());
        let id = identify(&mut unit).unwrap().unwrap();
        assert_eq!(id.serial, "QXAB123456");
        unit.holding.clear();
        assert!(
            identify(&mut unit).unwrap().is_none(),
            "refused: not this model"
        );
        unit.answers = false;
        assert_eq!(identify(&mut unit).err(), Some(AccessError::NoAnswer));
    }

    #[test]
    fn set_up_writes_g100_in_order_and_returns_hr3_read_back() {
        let mut unit = unit_with(ident_block());
        let held = LIMITER.set_up(&mut unit, 3680.0, 4200.0);
        assert_eq!(unit.writes, [(3, 100), (122, 1), (123, 876), (3000, 876)]);
        assert_eq!(held, Some(Setting(100)));
        assert_eq!(g100_setup(3680.0, 3000.0)[2].value, 1000);
        // A unit that stops answering: HR3 unreadable, so the limiter treats it as lost.
        unit.answers = false;
        assert_eq!(LIMITER.set_up(&mut unit, 3680.0, 4200.0), None);
    }

    #[test]
    fn a_setting_is_written_to_hr3_in_whole_percent() {
        let setting = LIMITER.encoding().setting_for(2101.0, 4200.0);
        assert_eq!(LIMITER.write(setting), RegisterWrite { addr: 3, value: 51 });
        assert_eq!(LIMITER.encoding().failsafe(3680.0, 4200.0), Setting(87));
    }

    #[test]
    fn plausibility_scales_with_rated_power() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut g = Guard::new(&PLAUSIBILITY, &REGISTERS).with_rated_power(Some(4200.0));
        assert_eq!(g.check(AcPower, 4200.0, t0), Some(4200.0));
        assert_eq!(g.check(AcPower, 5000.0, t0), None);
        assert_eq!(g.check(PvPower, 6000.0, t0), Some(6000.0));
        assert_eq!(g.check(PvPower, 6400.0, t0), None);
        assert_eq!(g.check(Pv1Voltage, 550.0, t0), Some(550.0));
        assert_eq!(g.check(Pv1Voltage, 650.0, t0), None);
        assert_eq!(g.check(AcVoltage, 310.0, t0), None);
        assert_eq!(g.check(EnergyTotal, 20000.0, t0), Some(20000.0));
        // 4.62 kW for one hour is 4.62 kWh, plus one 0.1 kWh count.
        assert_eq!(g.check(EnergyTotal, 20004.7, secs(3600)), Some(20004.7));
        assert_eq!(g.check(EnergyTotal, 20010.0, secs(7200)), Some(20004.7));
    }
}
