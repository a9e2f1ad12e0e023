//! Growatt MIN/MIC/MID TL-X grid-tied PV inverter, "Growatt Inverter Modbus RTU Protocol" v1.20
//! layout: docs/reference/growatt.md (§3 holding, §8 input registers). u32 values are two
//! registers, high word first.
//!
//! The limiter drives it through holding register 3 (active power rate, whole percent of rated
//! power) and keeps the UK G100 export limit set in its export-limit registers: [`LIMITER`].
//!
//! Only single-phase grid-tied MIN/MIC TL-X units are driven ([`DEVICE_TYPES`], HR44): on a
//! storage or off-grid unit the same registers mean something else (docs/reference/growatt.md
//! §7). Nothing is written before the rated power is known ([`rating`]), and the set-up writes
//! only registers that differ from what it wants ([`LIMITER`]'s `set_up`).

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::model::{
    AccessError, BusTiming, Explained, IdentifyContext, Identity, LimitedInverter, LimiterOffer,
    Model, PathDef, PowerLimiter, Rating, Recognition, RegisterReader, RegisterWrite,
    RegisterWriter, Roles, SetUpReport, SetUpTarget, Unit, Values, original_ident, read_if_present,
    register_names,
};
use super::plausibility::{Bound, Rule, kwh_per_s};
use crate::limiter::fraction_of_rated_floor;
use crate::limiter::{PercentOfRated, Setting};
use crate::registers::{
    Access::*, Kind, Kind::*, PackLimits, Refresh, Refresh::*, Register, RegisterMap,
    decode_number, decode_text, lookup,
};

register_names! {
    /// The inverter's registers, one per row of [`REGISTERS`].
    pub(crate) enum Reg {
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
        RealOutputPercent,
        OutputMaxPowerLimited,
        DeratingMode,
        FaultCode,
        ActivePowerRate,
        RatedPower,
        Firmware,
        ControlFirmware,
        DeviceType,
        G100FailSafe,
        ExportLimitSource,
        ExportLimitRate,
        ExportLimitFailsafeRate,
    }
}
use Reg::*;

/// "PF CMD memory state": 1 = writes of HR3, 4, 5 and 99 are kept across power-off (in
/// non-volatile memory), 0 = they return to their initial values at the next power-up (§4).
pub(super) const HR_MEMORY_STATE: u16 = 2;
/// Active power rate, % of rated power: the limiter's actuator. 255 = not limited.
pub(super) const HR_ACTIVE_POWER_RATE: u16 = 3;
/// HR3's "not limited" value (its initial value, and what a power-up with HR2 = 0 restores).
pub(super) const HR3_NOT_LIMITED: u16 = 255;
/// Rated power ("Pmax", normal power), u32 in 0.1 VA; 0 on units that do not fill it in.
pub(super) const HR_RATED_POWER: u16 = 6;
/// G100 fail-safe enable: 1 enabled, 0 disabled.
pub(super) const HR_G100_FAILSAFE: u16 = 42;
/// Device type code (§7).
pub(super) const HR_DEVICE_TYPE: u16 = 43;
/// Trackers (high byte) and output phases (low byte).
pub(super) const HR_TRACKERS_PHASES: u16 = 44;
/// Export limit source: 0 off, 1 RS485 meter, 2 RS232, 3 CT.
pub(super) const HR_EXPORT_LIMIT_SOURCE: u16 = 122;
/// Export limit power rate, 0.1 % of rated, signed (−1000…+1000).
pub(super) const HR_EXPORT_LIMIT_RATE: u16 = 123;
/// The power rate used when the export-limit meter fails, 0.1 % of rated.
pub(super) const HR_EXPORT_LIMIT_FAILSAFE_RATE: u16 = 3000;

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
pub(super) static REGISTERS: [Register; Reg::ALL.len()] = [
    input("status", 0, U16, 1.0, every(5)),
    input("pv_power", 1, U32, 0.1, every(5)),
    input("pv1_voltage", 3, U16, 0.1, every(5)),
    input("pv1_current", 4, U16, 0.1, every(5)),
    input("pv1_power", 5, U32, 0.1, every(5)),
    input("pv2_voltage", 7, U16, 0.1, every(5)),
    input("pv2_current", 8, U16, 0.1, every(5)),
    input("pv2_power", 9, U32, 0.1, every(5)),
    // The limiter's PV input: read at the inverter's pace while the limiter limits, every few
    // seconds otherwise; the AC block (35..41) comes with it.
    input("ac_power", 35, U32, 0.1, Fast),
    input("frequency", 37, U16, 0.01, every(5)),
    input("ac_voltage", 38, U16, 0.1, every(5)),
    input("ac_current", 39, U16, 0.1, every(5)),
    input("ac_l1_power", 40, U32, 0.1, every(5)),
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
    // The cap the inverter actually applies (§8): shows what HR3 and its own derating leave.
    input("real_output_percent", 101, U16, 1.0, every(10)),
    input("output_max_power_limited", 102, U32, 0.1, every(10)),
    input("derating_mode", 104, U16, 1.0, every(5)),
    input("fault_code", 105, U16, 1.0, every(5)),
    // Read back every 10 s and compared with what the limiter believes the inverter holds:
    // a reset to 255 (a power-up with HR2 = 0) or another master must not go unnoticed.
    holding(
        "active_power_rate",
        HR_ACTIVE_POWER_RATE,
        U16,
        1.0,
        every(10),
    ),
    // Read again now and then: published as /Ac/MaxPower and used to scale the limiter.
    holding("rated_power", HR_RATED_POWER, U32, 0.1, every(60)),
    holding("firmware", 9, Text { words: 3 }, 1.0, Once),
    holding("control_firmware", 12, Text { words: 3 }, 1.0, Once),
    holding("device_type", HR_DEVICE_TYPE, U16, 1.0, Once),
    holding("g100_fail_safe", HR_G100_FAILSAFE, U16, 1.0, every(30)),
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
        S16,
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

pub(super) const LIMITS: PackLimits = PackLimits {
    max_hole: 10,
    max_count: 125,
    barriers: &[],
    even: false,
};

/// Growatt: "Minimum CMD period (RS485 Time out): 850ms … Suggestion is 1s" (docs/reference/
/// growatt.md §1). The default is what the users' MIN ran at for years under the original driver
/// (about one command every 385 ms on average; NOTEBOOK.md, 2026-12-06), counted from the end of
/// the previous exchange; `--command-interval UNIT=850` (or 1000) gives a unit the documented
/// pace. The register ages above fit the pace: about one read a second when not limiting (of
/// ~2 slots a second at 400 ms, ~1 at 850 ms); while limiting the AC block takes the rest.
pub(super) const BUS: BusTiming = BusTiming {
    silence_before_request: Duration::ZERO,
    min_command_interval: Duration::from_millis(400),
};

/// Identification: holding 0..=44 (rated power, firmware, old serial, device type, trackers and
/// phases) in one read; the serial blocks where the unit has them (§6).
const IDENT_READ: (u16, usize) = (0, 45);
/// The 30-character serial of the 125–249 "second group": what this daemon and the original
/// named the unit by whenever it answered, so it stays first (NOTEBOOK.md 2026-12-06).
const SERIAL_209: (u16, usize) = (209, 15);
/// The 10-character serial inside the identification block.
const SERIAL_23: (usize, usize) = (23, 28);
/// The TL-X "new serial", read only when neither of the others has one.
const SERIAL_3001: (u16, usize) = (3001, 15);

/// What a Growatt device type is, for the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// A single-phase grid-tied MIN/MIC TL-X: HR3 is its active power rate. Driven.
    SinglePhasePv,
    ThreePhase,
    /// Battery storage: HR3 is a power rate too, but the limiter is not built for it.
    Storage,
    /// An off-grid SPF: HR1–3 are output source, charge source and a start time there.
    OffGrid,
    /// An older protocol generation; its register map is not the one this file reads.
    OlderProtocol,
}

/// One row of Growatt's device type table (HR43; docs/reference/growatt.md §7, VPP Table 3-1).
#[derive(Clone, Copy, Debug)]
pub(super) struct DeviceType {
    /// First and last code of the row.
    pub codes: (u16, u16),
    pub family: &'static str,
    pub class: Class,
    /// The largest rating in the family: the rating when HR6–7 read 0 and no `--rated-power` is
    /// given. Safe for the G100 cap: a smaller unit of the family then exports less than the
    /// limit, never more.
    pub largest_w: Option<f64>,
}

const fn row(
    codes: (u16, u16),
    family: &'static str,
    class: Class,
    largest_w: Option<f64>,
) -> DeviceType {
    DeviceType {
        codes,
        family,
        class,
        largest_w,
    }
}

/// Growatt device types. 5100 is listed by Growatt as the MIN TL-XH hybrids, but the users'
/// grid-tied MIN 4200TL-XE reports it (the original driver accepted only 5100): driven, as the
/// single-phase family it is (NOTEBOOK.md 2026-12-06).
pub(super) static DEVICE_TYPES: [DeviceType; 17] = [
    row(
        (5100, 5100),
        "MIN 2500-6000TL-XH/XH2/XE (single phase)",
        Class::SinglePhasePv,
        Some(6000.0),
    ),
    row(
        (5200, 5200),
        "MIC 600-3300TL-X / MIN 2500-6000TL-X (single phase)",
        Class::SinglePhasePv,
        Some(6000.0),
    ),
    row(
        (5201, 5201),
        "MIN 7-10KTL-X (single phase)",
        Class::SinglePhasePv,
        Some(10000.0),
    ),
    row((5000, 5000), "MAX (three phase)", Class::ThreePhase, None),
    row(
        (5001, 5001),
        "MID TL3-X (three phase)",
        Class::ThreePhase,
        None,
    ),
    row(
        (5002, 5002),
        "MOD TL3-X (three phase)",
        Class::ThreePhase,
        None,
    ),
    row(
        (5003, 5003),
        "MAC TL3-X (three phase)",
        Class::ThreePhase,
        None,
    ),
    row(
        (5400, 5401),
        "MOD/MID TL3-XH/HU hybrid (three phase)",
        Class::ThreePhase,
        None,
    ),
    row((5500, 5502), "MAX-X (three phase)", Class::ThreePhase, None),
    row(
        (5600, 5601),
        "WIT/WIS (three phase)",
        Class::ThreePhase,
        None,
    ),
    row(
        (5800, 5801),
        "WIT/WIS (three phase)",
        Class::ThreePhase,
        None,
    ),
    row((3501, 3504), "SPH TL BL storage", Class::Storage, None),
    row(
        (3601, 3601),
        "SPH TL3 BH storage (three phase)",
        Class::Storage,
        None,
    ),
    row((3701, 3735), "SPA storage", Class::Storage, None),
    row((3400, 3499), "SPF off-grid", Class::OffGrid, None),
    row(
        (210, 210),
        "MIC MTL-S (older protocol)",
        Class::OlderProtocol,
        None,
    ),
    row(
        (2049, 2049),
        "TL3-S (older protocol, three phase)",
        Class::OlderProtocol,
        None,
    ),
];

/// The table row of a device type code.
pub(super) fn device_type(code: u16) -> Option<&'static DeviceType> {
    DEVICE_TYPES
        .iter()
        .find(|t| (t.codes.0..=t.codes.1).contains(&code))
}

/// The output phases HR44 gives (its low byte), when it gives one (1–3); 0 or anything else
/// means the unit does not fill it in the documented way.
pub(super) fn output_phases(hr44: u16) -> Option<u8> {
    let phases = (hr44 & 0xFF) as u8;
    (1..=3).contains(&phases).then_some(phases)
}

/// Whether the daemon drives a unit of device type `code` reporting `hr44`: `Ok` with a note for
/// the log, `Err` with the refusal naming the code. `forced` (`--force-model growatt:CODE`)
/// drives whatever the table and HR44 say.
pub(super) fn judge_device_type(code: u16, hr44: u16, forced: bool) -> Result<String, String> {
    let row = device_type(code);
    let phases = output_phases(hr44);
    let named = row.map_or("not in the device type table".to_string(), |r| {
        r.family.to_string()
    });
    if forced {
        return Ok(format!(
            "device type {code} ({named}), driven as a single-phase MIN TL-X by --force-model"
        ));
    }
    let refuse = |why: &str| {
        Err(format!(
            "Growatt device type {code} ({named}){why}: not driven (--force-model growatt:{code} \
             drives it as a single-phase MIN TL-X anyway)"
        ))
    };
    match (row.map(|r| r.class), phases) {
        (Some(Class::SinglePhasePv), Some(1)) => Ok(format!("device type {code} ({named})")),
        (Some(Class::SinglePhasePv), None) => Ok(format!(
            "device type {code} ({named}); HR44 = {hr44:#06x} gives no phase count"
        )),
        (Some(Class::SinglePhasePv), Some(n)) => {
            refuse(&format!(", but HR44 = {hr44:#06x} says {n} output phases"))
        }
        (Some(Class::ThreePhase), _) => {
            refuse(" is three-phase: the limiter drives single-phase MIN/MIC TL-X only")
        }
        (Some(Class::Storage), _) => {
            refuse(" is a storage inverter: the limiter drives grid-tied PV inverters only")
        }
        (Some(Class::OffGrid), _) => {
            refuse(" is an off-grid inverter: its HR1-3 are not a power rate")
        }
        (Some(Class::OlderProtocol), _) => {
            refuse(" speaks an older protocol: its register map is not the TL-X one")
        }
        (None, _) => refuse(""),
    }
}

/// The rated power, in the order the daemon trusts it: HR6–7 when the unit fills it in, else
/// `--rated-power`, else the largest unit of the device type's family; else unknown, and then
/// nothing is written.
pub(super) fn rating(hr6_7_w: f64, cli_w: Option<f64>, code: u16) -> Rating {
    let known = |watts: f64, source: String| Rating {
        watts: Some(watts),
        source,
    };
    if hr6_7_w > 0.0 {
        return known(hr6_7_w, "read from HR6-7".into());
    }
    if let Some(w) = cli_w {
        return known(w, "from --rated-power (HR6-7 read 0)".into());
    }
    match device_type(code).and_then(|t| t.largest_w) {
        Some(w) => known(
            w,
            format!(
                "the largest of device type {code}'s family, as HR6-7 read 0; --rated-power \
                 gives this unit's own"
            ),
        ),
        None => Rating {
            watts: None,
            source: format!(
                "rated power unknown: HR6-7 read 0, no --rated-power, device type {code} has no \
                 rating in the table"
            ),
        },
    }
}

/// Reads an optional block: `false` when the unit refuses it or does not answer twice (a unit
/// may ignore a range it lacks instead of answering an exception); never a failed probe.
fn read_optional(regs: &mut dyn RegisterReader, addr: u16, words: &mut [u16]) -> bool {
    for _ in 0..2 {
        match regs.read(Holding, addr, words) {
            Ok(()) => return true,
            Err(AccessError::Refused) => return false,
            Err(AccessError::NoAnswer) => {}
        }
    }
    debug!(
        "holding {addr}+{} does not answer: taken as absent",
        words.len()
    );
    false
}

/// The serial the unit is named by: HR209–223 (`hr209`, when the unit has it), else HR23–27,
/// else HR3001–3015, the first that holds one. The order keeps every unit this daemon published
/// before under its name.
fn serial(
    regs: &mut dyn RegisterReader,
    hr0_44: &[u16; IDENT_READ.1],
    hr209: Option<&[u16]>,
) -> String {
    if let Some(text) = hr209.map(decode_text).filter(|t| !t.is_empty()) {
        return text;
    }
    let old = decode_text(&hr0_44[SERIAL_23.0..SERIAL_23.1]);
    if !old.is_empty() {
        return old;
    }
    let mut block = [0u16; SERIAL_3001.1];
    if read_optional(regs, SERIAL_3001.0, &mut block) {
        return decode_text(&block);
    }
    String::new()
}

/// A Growatt answers holding 0..=44 (an SDM230 refuses it) with a device type and a serial.
fn identify(
    regs: &mut dyn RegisterReader,
    ctx: &IdentifyContext,
) -> Result<Recognition, AccessError> {
    let mut hr = [0u16; IDENT_READ.1];
    if !read_if_present(regs, Holding, IDENT_READ.0, &mut hr)? {
        return Ok(Recognition::Other);
    }
    let code = hr[HR_DEVICE_TYPE as usize];
    if code == 0 && decode_text(&hr[SERIAL_23.0..SERIAL_23.1]).is_empty() {
        return Ok(Recognition::Other);
    }
    let unsupported = |why: String| Recognition::Unsupported { model: &MODEL, why };
    let hr44 = hr[HR_TRACKERS_PHASES as usize];
    let note = match judge_device_type(code, hr44, ctx.forces(MODEL.vendor, code)) {
        Ok(note) => note,
        Err(why) => return Ok(unsupported(why)),
    };
    let mut block = [0u16; SERIAL_209.1];
    let hr209 = read_optional(regs, SERIAL_209.0, &mut block).then_some(&block[..]);
    let serial = serial(regs, &hr, hr209);
    if serial.is_empty() {
        return Ok(unsupported(format!(
            "Growatt device type {code} has no serial number in HR209-223, HR23-27 or \
             HR3001-3015 to name its service by"
        )));
    }
    let mut id = identity(&hr, serial, note, ctx.rated_power_w);
    // Without HR209–223 the original never started, so it stored no settings.
    id.original_ident = hr209
        .and_then(original_text)
        .and_then(|text| original_ident("pv", &text));
    Ok(Recognition::Found(id))
}

/// The identity in holding 0..=44, named by `serial`.
fn identity(
    hr0_44: &[u16; IDENT_READ.1],
    serial: String,
    note: String,
    cli_rated_w: Option<f64>,
) -> Identity {
    let hr6_7 = decode_number(U32, &hr0_44[6..8]).unwrap_or(0.0) * 0.1;
    let code = hr0_44[HR_DEVICE_TYPE as usize];
    let rating = rating(hr6_7, cli_rated_w, code);
    let firmware = decode_text(&hr0_44[9..12]);
    let rated = rating
        .watts
        .map_or("no rated power".to_string(), |w| format!("rated {w:.0} W"));
    Identity {
        model: &MODEL,
        serial,
        details: format!("{note}, {rated} ({}), firmware {firmware}", rating.source),
        firmware,
        hardware: decode_text(&hr0_44[12..15]),
        code,
        rating: Some(rating),
        original_ident: None,
    }
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

/// Growatt status (input 0) → Victron/Fronius /StatusCode (docs/reference/victron.md §7).
/// Waiting (not connected, no output) is standby; faults are errors. Running while derating is
/// reported as throttled by `status_code`.
pub(super) const STATUS_CODES: &[(u16, i32)] = &[(0, 8), (1, 7), (2, 10), (3, 10)];

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
pub(super) static PLAUSIBILITY: [Rule; 15] = [
    // 0 means "not filled in" (§5): /Ac/MaxPower is then invalid, not 0 W.
    between(RatedPower, 1.0, 1e6),
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
];

/// Growatt status → Victron status code, throttled (12) while running and derating. The status
/// is the low byte: TL-X units carry a mode in the high byte of their status word (§8).
fn status_code(v: &Values) -> Option<f64> {
    let code = lookup(STATUS_CODES, v.get(Status)? as u16 & 0xFF)?;
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

/// HR3 as a percent: 0–100 as it reads, 255 (not limited) as 100; `None` outside the
/// documented values.
pub(super) fn hr3_percent(raw: u16) -> Option<u16> {
    match raw {
        0..=100 => Some(raw),
        HR3_NOT_LIMITED => Some(HR3_PERCENT.max),
        _ => None,
    }
}

/// /Internal/ActivePowerRate: HR3 with 255 shown as the 100 % it means.
fn active_power_rate(v: &Values) -> Option<f64> {
    let raw = v.get(ActivePowerRate)?;
    hr3_percent(raw as u16).map(f64::from)
}

/// What the pvinverter service publishes (totals also per phase: a single-phase inverter).
pub(super) static PATHS: [PathDef; 30] = [
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
    PathDef::derived(
        "/Internal/ActivePowerRate",
        Unit::Percent,
        active_power_rate,
    ),
    reg(
        "/Internal/RealOutputPercent",
        Unit::Percent,
        RealOutputPercent,
    ),
    reg(
        "/Internal/OutputMaxPowerLimited",
        Unit::Watt,
        OutputMaxPowerLimited,
    ),
    reg(
        "/Internal/ExportLimit/FailSafeEnabled",
        Unit::Code,
        G100FailSafe,
    ),
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

/// The limiter's strategy for a Growatt: HR3 takes the limit in whole percent of rated power;
/// every (re)initialisation clears HR2 and keeps the G100 set-up, writing only what differs.
pub(super) struct GrowattLimiter;

pub(super) static LIMITER: GrowattLimiter = GrowattLimiter;

/// HR3 in whole percent of rated power, 2…100: the original driver's floor of 2 % keeps the
/// inverter connected to the grid.
pub(super) const HR3_PERCENT: PercentOfRated = PercentOfRated { min: 2, max: 100 };

/// The G100 set-up as the registers should hold it: HR122 = 1 (RS485 meter), HR123 = HR3000 =
/// export limit in 0.1 % of rated, rounded down (docs/reference/limiter.md §3; the original
/// driver's start-up, docs/reference/growatt.md §10). HR3 is not part of it: the limiter writes
/// HR3 when its decision differs from what HR3 holds.
pub(super) fn g100_setup(export_limit_w: f64, rated_w: f64) -> [RegisterWrite; 3] {
    let permille = fraction_of_rated_floor(export_limit_w, rated_w, 1000);
    let write = |addr, value| RegisterWrite { addr, value };
    [
        write(HR_EXPORT_LIMIT_SOURCE, 1),
        write(HR_EXPORT_LIMIT_RATE, permille),
        write(HR_EXPORT_LIMIT_FAILSAFE_RATE, permille),
    ]
}

/// A set-up register for the log: its number and name.
fn register_label(addr: u16) -> &'static str {
    match addr {
        HR_MEMORY_STATE => "HR2 (PF CMD memory state)",
        HR_ACTIVE_POWER_RATE => "HR3 (active power rate)",
        HR_G100_FAILSAFE => "HR42 (G100 fail-safe)",
        HR_EXPORT_LIMIT_SOURCE => "HR122 (export limit source)",
        HR_EXPORT_LIMIT_RATE => "HR123 (export limit rate)",
        HR_EXPORT_LIMIT_FAILSAFE_RATE => "HR3000 (export limit fail-safe rate)",
        _ => "holding register",
    }
}

/// A set-up register's value as the documents read it: HR123 is signed.
fn shown(addr: u16, raw: u16) -> String {
    match addr {
        HR_EXPORT_LIMIT_RATE => (raw as i16).to_string(),
        _ => raw.to_string(),
    }
}

fn read_one(regs: &mut dyn RegisterReader, addr: u16) -> Result<u16, AccessError> {
    let mut word = [0u16];
    regs.read(Holding, addr, &mut word).map(|()| word[0])
}

/// HR2 at set-up: left at 0; from 1 set to 0 and read back, when writes are allowed. Whether
/// limit writes persist afterwards. A unit that refuses HR2 may store them: treated as if.
fn clear_memory_state(regs: &mut dyn RegisterWriter, hr2: u16, may_write: bool) -> bool {
    if hr2 == 0 {
        return false;
    }
    if !may_write {
        warn!(
            "{} = {hr2}: limit writes would be kept in non-volatile memory; not cleared (nothing \
             is written without a rated power)",
            register_label(HR_MEMORY_STATE)
        );
        return true;
    }
    let written = regs.write(HR_MEMORY_STATE, 0);
    let read_back = read_one(regs, HR_MEMORY_STATE);
    match (written, read_back) {
        (Ok(()), Ok(0)) => {
            info!(
                "{} was {hr2} (limit writes kept in non-volatile memory): set to 0, read back 0",
                register_label(HR_MEMORY_STATE)
            );
            false
        }
        (written, read_back) => {
            warn!(
                "{} is {hr2} and could not be cleared (write: {}, read back: {}): every limit \
                 write goes to non-volatile memory, so they are paced to one per 10 minutes \
                 outside urgent export protection",
                register_label(HR_MEMORY_STATE),
                written.map_or_else(|e| e.to_string(), |()| "ok".into()),
                shown_read(HR_MEMORY_STATE, read_back),
            );
            true
        }
    }
}

/// HR42, read and logged: the limiter relies on the inverter enforcing G100 by itself.
fn check_failsafe_enable(regs: &mut dyn RegisterReader) {
    match read_one(regs, HR_G100_FAILSAFE) {
        Ok(0) => warn!(
            "{} = 0: the inverter's G100 fail-safe is disabled; the export limit holds only \
             while this daemon runs",
            register_label(HR_G100_FAILSAFE)
        ),
        Ok(v) => info!("{} = {v}", register_label(HR_G100_FAILSAFE)),
        Err(e) => warn!("{}: {e}", register_label(HR_G100_FAILSAFE)),
    }
}

/// One set-up register, read, compared and written only when it differs; each write logged
/// and read back. `Ok(true)` when it holds the wanted value afterwards.
fn keep(regs: &mut dyn RegisterWriter, want: RegisterWrite, why: &str) -> bool {
    let RegisterWrite { addr, value } = want;
    let label = register_label(addr);
    let held = match read_one(regs, addr) {
        Ok(v) => v,
        Err(e) => {
            // Never write blind: a register that cannot be read is left alone this time.
            warn!("G100 set-up: {label} unreadable ({e}); not written");
            return false;
        }
    };
    if held == value {
        return true;
    }
    let write = regs.write(addr, value);
    let read_back = read_one(regs, addr);
    let ok = write.is_ok() && read_back == Ok(value);
    let line = format!(
        "G100 set-up: {label} {} -> {} ({why}){}",
        shown(addr, held),
        shown(addr, value),
        match (write, read_back) {
            (Ok(()), Ok(v)) if v == value => String::new(),
            (Ok(()), Ok(v)) => format!(": reads back {}", shown(addr, v)),
            (Ok(()), Err(e)) => format!(": read back failed: {e}"),
            (Err(e), _) => format!(": write failed: {e}"),
        }
    );
    if ok {
        info!("{line}");
    } else {
        warn!("{line}");
    }
    ok
}

impl GrowattLimiter {
    /// The G100 registers, read and logged without writing (no rated power).
    fn log_g100(&self, regs: &mut dyn RegisterReader) {
        let mut show = |addr| shown_read(addr, read_one(regs, addr));
        let (source, rate, failsafe) = (
            show(HR_EXPORT_LIMIT_SOURCE),
            show(HR_EXPORT_LIMIT_RATE),
            show(HR_EXPORT_LIMIT_FAILSAFE_RATE),
        );
        warn!(
            "G100 set-up not written (no rated power): export limit source {source}, rate \
             {rate}, fail-safe rate {failsafe} per mille of rated, as the inverter holds them"
        );
    }
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

    /// HR2 and HR3 read first (no answer: nothing written, the inverter counts as lost), HR2
    /// cleared, HR42 logged, the G100 registers kept. The limiter starts from HR3 as read.
    fn set_up(
        &self,
        regs: &mut dyn RegisterWriter,
        target: SetUpTarget,
    ) -> Result<SetUpReport, AccessError> {
        let mut hr2_3 = [0u16; 2];
        regs.read(Holding, HR_MEMORY_STATE, &mut hr2_3)?;
        let [hr2, hr3] = hr2_3;
        let writes_persist = clear_memory_state(regs, hr2, target.rated_w.is_some());
        check_failsafe_enable(regs);
        let complete = match target.rated_w {
            Some(rated) => {
                let why = format!(
                    "export limit {:.0} W of rated {rated:.0} W",
                    target.export_limit_w
                );
                // Every register is kept, whatever the others did: no short-circuit.
                let kept =
                    g100_setup(target.export_limit_w, rated).map(|want| keep(regs, want, &why));
                kept.iter().all(|&ok| ok)
            }
            None => {
                self.log_g100(regs);
                false
            }
        };
        let held = hr3_percent(hr3).map(Setting);
        if held.is_none() {
            warn!(
                "{} reads {hr3}, outside 0-100 and 255: the limit it applies is unknown",
                register_label(HR_ACTIVE_POWER_RATE)
            );
        }
        info!(
            "set-up{}: {} = {hr3}{}, limit writes {}",
            if complete { "" } else { " incomplete" },
            register_label(HR_ACTIVE_POWER_RATE),
            if hr3 == HR3_NOT_LIMITED {
                " (not limited: 100 %)"
            } else {
                ""
            },
            if writes_persist {
                "kept in non-volatile memory"
            } else {
                "volatile"
            }
        );
        Ok(SetUpReport {
            held,
            writes_persist,
        })
    }

    fn held(&self, map: &RegisterMap) -> Option<(Setting, Instant)> {
        let id = ActivePowerRate.id();
        let raw = *map.raw(id)?.first()?;
        Some((Setting(hr3_percent(raw)?), map.read_at(id)?))
    }

    fn drift(&self, map: &RegisterMap, since: Instant, target: SetUpTarget) -> Option<String> {
        let rated = target.rated_w?;
        let wanted = g100_setup(target.export_limit_w, rated);
        let regs = [ExportLimitSource, ExportLimitRate, ExportLimitFailsafeRate];
        regs.into_iter().zip(wanted).find_map(|(reg, want)| {
            let id = reg.id();
            let fresh = map.read_at(id).is_some_and(|at| at > since);
            let raw = *map.raw(id)?.first()?;
            (fresh && raw != want.value).then(|| {
                format!(
                    "{} reads {}, the set-up wants {}",
                    register_label(want.addr),
                    shown(want.addr, raw),
                    shown(want.addr, want.value)
                )
            })
        })
    }
}

/// An optional text block for `--probe`: quoted, or "absent".
fn optional_text(regs: &mut dyn RegisterReader, (addr, words): (u16, usize)) -> String {
    let mut block = [0u16; 15];
    let block = &mut block[..words.min(15)];
    if read_optional(regs, addr, block) {
        format!("{:?}", decode_text(block))
    } else {
        "absent".into()
    }
}

/// A one-register read for `--probe`: the value as the documents read it, or the error.
fn shown_read(addr: u16, read: Result<u16, AccessError>) -> String {
    read.map_or_else(|e| e.to_string(), |v| shown(addr, v))
}

/// `--probe`: the registers that decide identification and the set-up, and what the daemon
/// does with each.
fn explain(
    regs: &mut dyn RegisterReader,
    ctx: &IdentifyContext,
    export_limit_w: f64,
) -> Vec<Explained> {
    let mut out = Vec::new();
    let mut line = |register, value: String, meaning, action: String| {
        out.push(Explained {
            register,
            value,
            meaning,
            action,
        })
    };
    let mut hr = [0u16; IDENT_READ.1];
    if let Err(e) = regs.read(Holding, IDENT_READ.0, &mut hr) {
        line(
            "HR0-44",
            e.to_string(),
            "identification block",
            "not a Growatt (or not answering)".into(),
        );
        return out;
    }
    let code = hr[HR_DEVICE_TYPE as usize];
    let hr44 = hr[HR_TRACKERS_PHASES as usize];
    let verdict = judge_device_type(code, hr44, ctx.forces(MODEL.vendor, code));
    line(
        "HR43",
        code.to_string(),
        "device type code",
        match &verdict {
            Ok(note) => format!("drives it: {note}"),
            Err(why) => format!("refuses it: {why}"),
        },
    );
    line(
        "HR44",
        format!("{hr44:#06x}"),
        "trackers (high byte), output phases (low byte)",
        match output_phases(hr44) {
            Some(1) => "one phase: as expected".into(),
            Some(n) => format!("{n} phases: refused unless forced"),
            None => "no phase count: the device type decides".into(),
        },
    );
    let hr6_7 = decode_number(U32, &hr[6..8]).unwrap_or(0.0) * 0.1;
    let rating = rating(hr6_7, ctx.rated_power_w, code);
    line(
        "HR6-7",
        format!("{hr6_7:.1} VA"),
        "rated power (Pmax)",
        match rating.watts {
            Some(w) => format!(
                "rates the limiter and the G100 set-up at {w:.0} W ({})",
                rating.source
            ),
            None => format!(
                "{}: the unit is published, nothing is written",
                rating.source
            ),
        },
    );
    line(
        "HR23-27",
        format!("{:?}", decode_text(&hr[SERIAL_23.0..SERIAL_23.1])),
        "serial (10 characters)",
        "names the service when HR209-223 has no serial".into(),
    );
    line(
        "HR209-223",
        optional_text(regs, SERIAL_209),
        "serial (30 characters, TL3/MID group)",
        "names the service when it holds one (as before)".into(),
    );
    line(
        "HR3001-3015",
        optional_text(regs, SERIAL_3001),
        "serial (30 characters, TL-X)",
        "names the service when the other two are blank".into(),
    );
    let may_write = verdict.is_ok() && rating.watts.is_some();
    let hr2 = read_one(regs, HR_MEMORY_STATE);
    line(
        "HR2",
        shown_read(HR_MEMORY_STATE, hr2),
        "PF CMD memory state: 1 = HR3 writes kept in non-volatile memory",
        match hr2 {
            Ok(0) => "leaves it (limit writes are volatile)".into(),
            Ok(_) if may_write => "sets it to 0 at set-up, before any HR3 write".into(),
            Ok(_) => "leaves it (nothing is written)".into(),
            Err(_) => "-".into(),
        },
    );
    let hr3 = read_one(regs, HR_ACTIVE_POWER_RATE);
    line(
        "HR3",
        shown_read(HR_ACTIVE_POWER_RATE, hr3),
        "active power rate, % of rated; 255 = not limited",
        match hr3.map(hr3_percent) {
            Ok(Some(p)) => format!("starts from {p} %; reads it back every 10 s"),
            Ok(None) => "outside 0-100/255: writes the limiter's decision".into(),
            Err(_) => "-".into(),
        },
    );
    let hr42 = read_one(regs, HR_G100_FAILSAFE);
    line(
        "HR42",
        shown_read(HR_G100_FAILSAFE, hr42),
        "G100 fail-safe enable",
        match hr42 {
            Ok(0) => "warns: the inverter does not enforce G100 by itself".into(),
            Ok(_) => "logs it".into(),
            Err(_) => "-".into(),
        },
    );
    let wanted = rating.watts.map(|rated| g100_setup(export_limit_w, rated));
    for (i, (register, meaning)) in [
        ("HR122", "export limit source (1 = RS485 meter)"),
        ("HR123", "export limit rate, 0.1 % of rated (signed)"),
        ("HR3000", "export limit fail-safe rate, 0.1 % of rated"),
    ]
    .into_iter()
    .enumerate()
    {
        let addr = [
            HR_EXPORT_LIMIT_SOURCE,
            HR_EXPORT_LIMIT_RATE,
            HR_EXPORT_LIMIT_FAILSAFE_RATE,
        ][i];
        let held = read_one(regs, addr);
        let action = match (wanted.map(|w| w[i].value), held) {
            (Some(want), Ok(v)) if v == want || !may_write => {
                format!(
                    "wants {}: {}",
                    shown(addr, want),
                    if v == want {
                        "holds it, nothing written"
                    } else {
                        "not written"
                    }
                )
            }
            (Some(want), Ok(_)) => format!("writes {} at set-up", shown(addr, want)),
            (None, _) => "not written (no rated power)".into(),
            (_, Err(_)) => "not written while unreadable".into(),
        };
        line(register, shown_read(addr, held), meaning, action);
    }
    let mut ir = [0u16; 3];
    line(
        "IR101-103",
        match regs.read(Input, 101, &mut ir) {
            Ok(()) => format!(
                "{} %, {:.1} W",
                ir[0],
                f64::from((u32::from(ir[1]) << 16) | u32::from(ir[2])) * 0.1
            ),
            Err(e) => e.to_string(),
        },
        "the cap the inverter applies, in % and W",
        "publishes /Internal/RealOutputPercent and /Internal/OutputMaxPowerLimited".into(),
    );
    out
}

pub(super) static MODEL: Model = Model {
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
    explain,
    bus: BUS,
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
    use crate::registers::{Access, Read};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn typed_names_match_the_table() {
        assert_names_match(Reg::ALL, &REGISTERS);
    }

    fn store(map: &mut RegisterMap, access: Access, addr: u16, words: &[u16], at: Instant) {
        let read = Read {
            access,
            addr,
            count: words.len() as u16,
            fast: false,
        };
        map.store(&read, words, at);
    }

    fn published(map: &RegisterMap, path: &str) -> Option<f64> {
        MODEL
            .published_values(map)
            .find(|(p, _)| p.path == path)
            .and_then(|(_, v)| v)
    }

    fn status_code_for(status: u16, derating: u16) -> Option<f64> {
        let mut map = RegisterMap::new(&REGISTERS, LIMITS);
        let now = Instant::now();
        store(&mut map, Input, 0, &[status], now);
        store(&mut map, Input, 104, &[derating], now);
        published(&map, "/StatusCode")
    }

    #[test]
    fn status_maps_honestly() {
        assert_eq!(status_code_for(0, 0), Some(8.0));
        assert_eq!(status_code_for(1, 0), Some(7.0));
        assert_eq!(status_code_for(1, 7), Some(12.0));
        assert_eq!(status_code_for(3, 0), Some(10.0));
        assert_eq!(status_code_for(9, 0), None);
        // A TL-X mode in the high byte (5 = PV/battery online) leaves the status alone.
        assert_eq!(status_code_for(0x0501, 0), Some(7.0));
    }

    #[test]
    fn hr3_255_means_full_power_everywhere() {
        assert_eq!(hr3_percent(255), Some(100));
        assert_eq!(hr3_percent(40), Some(40));
        assert_eq!(hr3_percent(0), Some(0));
        assert_eq!(hr3_percent(101), None);
        let mut map = RegisterMap::new(&REGISTERS, LIMITS);
        let at = Instant::now();
        store(&mut map, Holding, HR_ACTIVE_POWER_RATE, &[255], at);
        assert_eq!(published(&map, "/Internal/ActivePowerRate"), Some(100.0));
        assert_eq!(LIMITER.held(&map), Some((Setting(100), at)));
        store(&mut map, Holding, HR_ACTIVE_POWER_RATE, &[180], at);
        assert_eq!(published(&map, "/Internal/ActivePowerRate"), None);
        assert_eq!(LIMITER.held(&map), None);
    }

    #[test]
    fn only_single_phase_tl_x_device_types_are_driven() {
        for code in [5100, 5200, 5201] {
            let note = judge_device_type(code, 0x0201, false);
            assert!(note.is_ok(), "{code}: {note:?}");
            // HR44 not filled in: the device type decides.
            assert!(judge_device_type(code, 0x0000, false).is_ok());
            // HR44 says three phases: a contradiction, refused.
            let why = judge_device_type(code, 0x0203, false).unwrap_err();
            assert!(why.contains("3 output phases"), "{why}");
        }
        for (code, what) in [
            (5001, "three-phase"),
            (5400, "three-phase"),
            (3502, "storage"),
            (3725, "storage"),
            (3401, "off-grid"),
            (210, "older protocol"),
            (9999, "not in the device type table"),
            (0, "not in the device type table"),
        ] {
            let why = judge_device_type(code, 0x0201, false).unwrap_err();
            assert!(why.contains(&format!("device type {code} ")), "{why}");
            assert!(why.contains(what), "{code}: {why}");
            assert!(
                why.contains(&format!("--force-model growatt:{code}")),
                "{why}"
            );
            assert!(
                judge_device_type(code, 0x0203, true).is_ok(),
                "forced {code}"
            );
        }
    }

    #[test]
    fn rating_comes_from_hr6_7_then_the_command_line_then_the_table() {
        assert_eq!(rating(6000.0, Some(4200.0), 5200).watts, Some(6000.0));
        let cli = rating(0.0, Some(4200.0), 5200);
        assert_eq!(cli.watts, Some(4200.0));
        assert!(cli.source.contains("--rated-power"), "{}", cli.source);
        let table = rating(0.0, None, 5201);
        assert_eq!(table.watts, Some(10000.0));
        assert!(table.source.contains("largest"), "{}", table.source);
        let unknown = rating(0.0, None, 5300);
        assert_eq!(unknown.watts, None);
        assert!(
            unknown.source.contains("HR6-7 read 0"),
            "{}",
            unknown.source
        );
        // Every driven family has a largest rating: the table fallback never leaves one unknown.
        for t in DEVICE_TYPES
            .iter()
            .filter(|t| t.class == Class::SinglePhasePv)
        {
            assert!(t.largest_w.is_some(), "{}", t.family);
        }
    }

    /// A unit's holding and input registers in memory. Reads of addresses it lacks are refused;
    /// `silent` addresses do not answer; a locked HR2 keeps its value.
    struct FakeUnit {
        holding: BTreeMap<u16, u16>,
        input: BTreeMap<u16, u16>,
        writes: Vec<(u16, u16)>,
        silent: BTreeSet<u16>,
        hr2_locked: bool,
        answers: bool,
    }

    impl RegisterReader for FakeUnit {
        fn read(
            &mut self,
            access: Access,
            addr: u16,
            words: &mut [u16],
        ) -> Result<(), AccessError> {
            if !self.answers || self.silent.contains(&addr) {
                return Err(AccessError::NoAnswer);
            }
            let table = match access {
                Holding => &self.holding,
                Input => &self.input,
            };
            for (a, w) in (addr..).zip(words.iter_mut()) {
                *w = *table.get(&a).ok_or(AccessError::Refused)?;
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
            if !(addr == HR_MEMORY_STATE && self.hr2_locked) {
                self.holding.insert(addr, value);
            }
            Ok(())
        }
    }

    fn text(s: &str, words: usize) -> Vec<u16> {
        let mut bytes = s.bytes();
        (0..words)
            .map(|_| u16::from_be_bytes([bytes.next().unwrap_or(0), bytes.next().unwrap_or(0)]))
            .collect()
    }

    /// A factory-fresh MIN 4200TL-XE: HR3 = 255, export limit off, serial at 23 and 209.
    fn unit() -> FakeUnit {
        let mut holding: BTreeMap<u16, u16> = (0..125).map(|a| (a, 0)).collect();
        let mut set = |addr: u16, words: &[u16]| {
            for (a, w) in (addr..).zip(words) {
                holding.insert(a, *w);
            }
        };
        set(HR_ACTIVE_POWER_RATE, &[255]);
        set(HR_RATED_POWER, &[0, 42000]);
        set(9, &text("AB1234", 3));
        set(23, &text("QXAB123456", 5));
        set(HR_G100_FAILSAFE, &[1, 5100, 0x0201]);
        set(209, &text("QXAB123456", 15));
        set(3000, &[0]);
        FakeUnit {
            holding,
            input: (0..125).map(|a| (a, 0)).collect(),
            writes: Vec::new(),
            silent: BTreeSet::new(),
            hr2_locked: false,
            answers: true,
        }
    }

    fn ctx<'a>(forced: &'a [(String, u16)], rated: Option<f64>) -> IdentifyContext<'a> {
        IdentifyContext {
            unit: 1,
            forced,
            rated_power_w: rated,
        }
    }

    fn found(unit: &mut FakeUnit, rated: Option<f64>) -> Identity {
        match identify(unit, &ctx(&[], rated)) {
            Ok(Recognition::Found(id)) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn identifies_from_holding_0_to_44_and_names_the_unit_as_before() {
        let mut u = unit();
        let id = found(&mut u, None);
        assert_eq!(id.serial, "QXAB123456");
        assert_eq!(id.rated_power_w(), Some(4200.0));
        assert_eq!(id.firmware, "AB1234");
        assert_eq!(
            id.details,
            "device type 5100 (MIN 2500-6000TL-XH/XH2/XE (single phase)), rated 4200 W (read \
             from HR6-7), firmware AB1234"
        );
        // 209-223 first when it holds a serial (what this daemon named the unit by before).
        u.holding.extend((209..).zip(text("NEW1", 15)));
        assert_eq!(found(&mut u, None).serial, "NEW1");
        // A TL-X refuses 209-223: the serial in the block; blank there too: 3001-3015.
        u.holding.retain(|a, _| !(209..224).contains(a));
        assert_eq!(found(&mut u, None).serial, "QXAB123456");
        u.holding.extend((23..).zip([0; 5]));
        u.holding.extend((3001..).zip(text("TLX3001", 15)));
        assert_eq!(found(&mut u, None).serial, "TLX3001");
        // No serial anywhere: refused, since its service could not be named.
        u.holding.retain(|a, _| !(3001..3016).contains(a));
        assert!(matches!(
            identify(&mut u, &ctx(&[], None)),
            Ok(Recognition::Unsupported { .. })
        ));
    }

    #[test]
    fn the_original_ident_is_hr209_223_as_the_original_read_it() {
        let mut u = unit();
        u.holding.extend((209..).zip(text("NEW1", 15)));
        assert_eq!(
            found(&mut u, None).original_ident.as_deref(),
            Some("pv_NEW1")
        );
        // Blank: the original's ident was `pv_`, while the daemon's serial comes from HR23.
        u.holding.extend((209..224).map(|a| (a, 0)));
        let blank = found(&mut u, None);
        assert_eq!(blank.original_ident.as_deref(), Some("pv_"));
        assert_eq!(blank.serial, "QXAB123456");
        // Space padding is kept by the original: no ident it could have stored settings under.
        u.holding.extend((209..).zip(text("NEW1  ", 15)));
        assert_eq!(found(&mut u, None).original_ident, None);
        // Without HR209–223 the original never started.
        u.holding.retain(|a, _| !(209..224).contains(a));
        assert_eq!(found(&mut u, None).original_ident, None);
    }

    #[test]
    fn a_silent_optional_block_is_absent_not_a_failed_probe() {
        let mut u = unit();
        u.silent.insert(209);
        assert_eq!(found(&mut u, None).serial, "QXAB123456");
        // The identification block itself must answer.
        u.silent.insert(0);
        assert_eq!(
            identify(&mut u, &ctx(&[], None)).err(),
            Some(AccessError::NoAnswer)
        );
        // Refused: not a Growatt at all.
        u.silent.clear();
        u.holding.clear();
        assert!(matches!(
            identify(&mut u, &ctx(&[], None)),
            Ok(Recognition::Other)
        ));
    }

    #[test]
    fn identification_refuses_other_device_types_and_settles_the_rating() {
        let mut u = unit();
        u.holding.insert(HR_DEVICE_TYPE, 5001);
        let Ok(Recognition::Unsupported { why, .. }) = identify(&mut u, &ctx(&[], None)) else {
            panic!("a three-phase MID driven");
        };
        assert!(why.contains("device type 5001"), "{why}");
        assert!(u.writes.is_empty());
        // Forced, with HR6-7 = 0 and no --rated-power: driven, rating unknown.
        u.holding.insert(HR_DEVICE_TYPE, 5300);
        u.holding.extend([(6, 0), (7, 0)]);
        let forced = [("growatt".to_string(), 5300)];
        let Ok(Recognition::Found(id)) = identify(&mut u, &ctx(&forced, None)) else {
            panic!("not forced");
        };
        assert_eq!(id.rated_power_w(), None);
        // A known family with HR6-7 = 0: --rated-power, else the family's largest.
        u.holding.insert(HR_DEVICE_TYPE, 5200);
        assert_eq!(found(&mut u, Some(5000.0)).rated_power_w(), Some(5000.0));
        assert_eq!(found(&mut u, None).rated_power_w(), Some(6000.0));
    }

    fn target(rated: f64) -> SetUpTarget {
        SetUpTarget {
            export_limit_w: 3680.0,
            rated_w: Some(rated),
        }
    }

    #[test]
    fn set_up_writes_only_what_differs_and_starts_from_hr3() {
        let mut u = unit();
        let report = LIMITER.set_up(&mut u, target(4200.0)).unwrap();
        assert_eq!(u.writes, [(122, 1), (123, 876), (3000, 876)]);
        assert_eq!(
            report,
            SetUpReport {
                held: Some(Setting(100)),
                writes_persist: false
            }
        );
        // Again (a second start, a re-identification): nothing to write.
        u.writes.clear();
        LIMITER.set_up(&mut u, target(4200.0)).unwrap();
        assert_eq!(u.writes, []);
        // A 6000 W unit: 3680 W is 61.3 %, whatever was there before.
        LIMITER.set_up(&mut u, target(6000.0)).unwrap();
        assert_eq!(u.writes, [(123, 613), (3000, 613)]);
        // HR123 is signed: -50 differs from 613 and is rewritten.
        u.writes.clear();
        u.holding.insert(123, (-50i16) as u16);
        LIMITER.set_up(&mut u, target(6000.0)).unwrap();
        assert_eq!(u.writes, [(123, 613)]);
        assert_eq!(g100_setup(3680.0, 3000.0)[1].value, 1000);
    }

    #[test]
    fn set_up_clears_hr2_before_anything_else_and_reports_when_it_cannot() {
        let mut u = unit();
        u.holding.insert(HR_MEMORY_STATE, 1);
        let report = LIMITER.set_up(&mut u, target(4200.0)).unwrap();
        assert_eq!(u.writes.first(), Some(&(HR_MEMORY_STATE, 0)));
        assert_eq!(u.holding[&HR_MEMORY_STATE], 0);
        assert!(!report.writes_persist);
        u.holding.insert(HR_MEMORY_STATE, 1);
        u.hr2_locked = true;
        assert!(
            LIMITER
                .set_up(&mut u, target(4200.0))
                .unwrap()
                .writes_persist
        );
    }

    #[test]
    fn set_up_writes_nothing_without_a_rating_or_an_answer() {
        let mut u = unit();
        u.holding.insert(HR_MEMORY_STATE, 1);
        let unknown = SetUpTarget {
            export_limit_w: 3680.0,
            rated_w: None,
        };
        let report = LIMITER.set_up(&mut u, unknown).unwrap();
        assert_eq!(u.writes, []);
        assert!(report.writes_persist);
        u.answers = false;
        assert_eq!(
            LIMITER.set_up(&mut u, target(4200.0)),
            Err(AccessError::NoAnswer)
        );
        assert_eq!(u.writes, []);
    }

    #[test]
    fn a_set_up_register_read_after_the_set_up_and_differing_is_drift() {
        let mut map = RegisterMap::new(&REGISTERS, LIMITS);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(30);
        store(&mut map, Holding, 122, &[1, 876], t0);
        store(&mut map, Holding, 3000, &[876], t0);
        assert_eq!(LIMITER.drift(&map, t0, target(4200.0)), None);
        // A changed export limit (or rating) makes the registers read stale ones.
        store(&mut map, Holding, 122, &[1, 876], later);
        let drift = LIMITER.drift(&map, t0, target(6000.0)).unwrap();
        assert!(drift.contains("HR123"), "{drift}");
        // Only readings after the set-up count.
        assert_eq!(LIMITER.drift(&map, later, target(6000.0)), None);
        let unknown = SetUpTarget {
            export_limit_w: 3680.0,
            rated_w: None,
        };
        assert_eq!(LIMITER.drift(&map, t0, unknown), None);
    }

    #[test]
    fn probe_explains_what_the_daemon_will_do() {
        let mut u = unit();
        u.holding.insert(HR_MEMORY_STATE, 1);
        let lines = explain(&mut u, &ctx(&[], None), 3680.0);
        let action = |register: &str| {
            lines
                .iter()
                .find(|l| l.register == register)
                .map(|l| l.action.clone())
                .unwrap_or_default()
        };
        assert!(action("HR2").contains("sets it to 0"), "{lines:#?}");
        assert!(action("HR123").contains("writes 876"), "{lines:#?}");
        assert!(action("HR43").starts_with("drives it"), "{lines:#?}");
        assert!(u.writes.is_empty(), "the probe writes nothing");
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
        assert_eq!(
            g.check(RatedPower, 0.0, t0),
            None,
            "HR6-7 = 0: not filled in"
        );
        assert_eq!(g.check(EnergyTotal, 20000.0, t0), Some(20000.0));
        // 4.62 kW for one hour is 4.62 kWh, plus one 0.1 kWh count.
        assert_eq!(g.check(EnergyTotal, 20004.7, secs(3600)), Some(20004.7));
        assert_eq!(g.check(EnergyTotal, 20010.0, secs(7200)), Some(20004.7));
    }
}
