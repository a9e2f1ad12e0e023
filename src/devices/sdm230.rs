//! Eastron SDM230-Modbus (v2), single-phase energy meter. Framing, register map and meter code:
//! docs/reference/eastron-sdm230.md §1–§4. Other single-phase Eastron meters (SDM120) answer the
//! same map and are driven alike; three-phase ones are refused by their meter code.
//!
//! Input registers are IEEE-754 floats, two registers each, high word first.

use std::time::Duration;

use super::model::{
    AccessError, BusTiming, ENERGY_METER_ROLES, Explained, GridMeter, IdentifyContext, Identity,
    LimiterOffer, Model, PathDef, Recognition, RegisterReader, Unit, Values, original_ident,
    read_if_present, register_names,
};
use super::plausibility::{Bound, Rule, kwh_per_s};
use crate::registers::{
    Access::*, Kind::*, PackLimits, Refresh, Refresh::*, Register, decode_number,
};

register_names! {
    /// The meter's registers, one per row of [`REGISTERS`].
    pub(crate) enum Reg {
        Voltage,
        Current,
        Power,
        ApparentPower,
        ReactivePower,
        PowerFactor,
        PhaseAngle,
        Frequency,
        ImportEnergy,
        ExportEnergy,
        ImportReactiveEnergy,
        ExportReactiveEnergy,
        TotalEnergy,
        TotalReactiveEnergy,
        Serial,
    }
}
use Reg::*;

const fn every(secs: u64) -> Refresh {
    MaxAge(Duration::from_secs(secs))
}
const fn float(name: &'static str, addr: u16, refresh: Refresh) -> Register {
    Register::new(name, Input, addr, F32, 1.0, refresh)
}

/// Input and holding registers read in normal operation, in the order of [`Reg`].
pub(super) static REGISTERS: [Register; Reg::ALL.len()] = [
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

/// Reads spanning the meter's undefined gaps are answered with an exception: keep holes within
/// the defined blocks. Eastron: at most 30 values (60 registers) per read, and only whole
/// values: an even start address and an even count (docs/reference/eastron-sdm230.md §1).
pub(super) const LIMITS: PackLimits = PackLimits {
    max_hole: 4,
    max_count: 60,
    barriers: &[(Input, 0x0012), (Input, 0x0046), (Input, 0x0156)],
    even: true,
};

/// Eastron: "a silent interval of 60 msec minimum is required in order to guarantee successful
/// reception of the next request" (docs/reference/eastron-sdm230.md §1): 60 ms of silence on the
/// line before every request to the meter; no interval of its own beyond that.
pub const BUS: BusTiming = BusTiming {
    silence_before_request: Duration::from_millis(60),
    min_command_interval: Duration::ZERO,
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
const fn energy(reg: Reg) -> Rule {
    Rule::counter(
        reg.id(),
        ENERGY_CEILING,
        Bound::fixed(kwh_per_s(MAX_POWER_W)),
        ENERGY_SLACK,
    )
}
const fn between(reg: Reg, min: f64, max: f64) -> Rule {
    Rule::between(reg.id(), min, max)
}

/// Physical bounds of each reading: anything outside is a glitch, not a measurement.
/// Power factor gets a hair of tolerance because it is computed in float (P/S).
pub(super) static PLAUSIBILITY: [Rule; 12] = [
    between(Voltage, 0.0, 300.0),
    between(Current, -MAX_CURRENT_A, MAX_CURRENT_A),
    between(Power, -MAX_POWER_W, MAX_POWER_W),
    between(ApparentPower, -MAX_POWER_W, MAX_POWER_W),
    between(ReactivePower, -MAX_POWER_W, MAX_POWER_W),
    between(PowerFactor, -1.001, 1.001),
    between(PhaseAngle, -180.0, 180.0),
    between(Frequency, 45.0, 65.0),
    energy(ImportEnergy),
    energy(ExportEnergy),
    energy(ImportReactiveEnergy),
    energy(ExportReactiveEnergy),
];

/// The meter reports current unsigned; systemcalc adds currents like powers, so sign it.
fn current_signed_like_power(v: &Values) -> Option<f64> {
    let current = v.get(Current)?.abs();
    let power = v.get(Power)?;
    Some(if power < 0.0 { -current } else { current })
}

/// Import − export (kWh): the original's consumption figure, the limiter's energyDifference
/// input.
fn net_import(v: &Values) -> Option<f64> {
    Some(v.get(ImportEnergy)? - v.get(ExportEnergy)?)
}

const fn reg(path: &'static str, unit: Unit, reg: Reg) -> PathDef {
    PathDef::reg(path, unit, reg.id())
}

/// What the grid service publishes: the totals, and the same values per phase (what systemcalc
/// reads).
pub(super) static PATHS: [PathDef; 9] = [
    reg("/Ac/Power", Unit::Watt, Power).also("/Ac/L1/Power"),
    reg("/Ac/Voltage", Unit::Volt, Voltage).also("/Ac/L1/Voltage"),
    PathDef::derived("/Ac/Current", Unit::Ampere, current_signed_like_power).also("/Ac/L1/Current"),
    reg("/Ac/PowerFactor", Unit::Plain, PowerFactor).also("/Ac/L1/PowerFactor"),
    reg("/Ac/Frequency", Unit::Hertz, Frequency),
    reg("/Ac/Energy/Forward", Unit::KiloWattHour, ImportEnergy).also("/Ac/L1/Energy/Forward"),
    reg("/Ac/Energy/Reverse", Unit::KiloWattHour, ExportEnergy).also("/Ac/L1/Energy/Reverse"),
    PathDef::derived("/Ac/Energy/Consumption", Unit::KiloWattHour, net_import)
        .also("/Ac/L1/Energy/Consumption"),
    reg("/Internal/ApparentPower", Unit::VoltAmpere, ApparentPower),
];

/// Identification block: serial (u32), meter code, firmware version.
const IDENT_ADDR: u16 = 0xFC00;
/// Frequency, read to tell a meter without the identification block by its input map.
const FREQUENCY_ADDR: u16 = 0x0046;

/// Eastron meter codes at 0xFC02 and their phases (docs/reference/eastron-sdm230.md §4). A
/// three-phase meter answers the single-phase addresses with its L1 values: the limiter would
/// take one phase for the site's grid power, so it is refused.
pub(super) static METER_CODES: [(u16, &str, u8); 8] = [
    (32, "SDM120-Modbus", 1),
    (43, "SDM230-Modbus", 1),
    (112, "SDM630-Modbus", 3),
    (121, "SDM630MCT / SDM630 v2", 3),
    (132, "SDM72D-M", 3),
    (135, "SDM72D v2", 3),
    (136, "SDM630MCT 40 mA", 3),
    (137, "SDM72D-M-2", 3),
];

/// What the daemon makes of a meter code.
#[derive(Clone, Debug, PartialEq)]
enum CodeVerdict {
    /// Driven; the text says what the code is, for the log.
    Drive(String),
    /// Refused; why, naming the code.
    Refuse(String),
}

fn judge_code(code: u16, forced: bool) -> CodeVerdict {
    let known = METER_CODES.iter().find(|(c, _, _)| *c == code);
    match known {
        Some((_, name, 1)) => CodeVerdict::Drive(format!("meter code {code} ({name})")),
        Some((_, name, phases)) if forced => CodeVerdict::Drive(format!(
            "meter code {code} ({name}, {phases}-phase), driven as an SDM230 by --force-model: \
             the limiter sees L1 only"
        )),
        Some((_, name, phases)) => CodeVerdict::Refuse(format!(
            "Eastron meter code {code} ({name}) is a {phases}-phase meter: the daemon reads one \
             phase and the limiter would take it for the site's grid power; not driven \
             (--force-model {}:{code} drives it anyway)",
            MODEL.vendor
        )),
        None => CodeVerdict::Drive(format!(
            "meter code {code} (not in the code table; driven as an SDM230: its input map answers)"
        )),
    }
}

/// A live single-phase line as a meter powered from it measures it (the meter has no other
/// supply, so a meter that answers reads its own mains).
fn looks_like_mains(voltage: f64, frequency: f64) -> bool {
    (80.0..=300.0).contains(&voltage) && (45.0..=65.0).contains(&frequency)
}

fn read_float(regs: &mut dyn RegisterReader, addr: u16) -> Result<Option<f64>, AccessError> {
    let mut words = [0u16; 2];
    Ok(read_if_present(regs, Input, addr, &mut words)?
        .then(|| decode_number(F32, &words))
        .flatten())
}

/// An SDM230 answers its identification block (a Growatt refuses it) and its input map. A meter
/// that refuses the block (the SDM230 documents do not list it: docs/reference/eastron-sdm230.md
/// §3) is recognised by its input map alone: mains voltage and frequency where an SDM230 has them.
fn identify(
    regs: &mut dyn RegisterReader,
    ctx: &IdentifyContext,
) -> Result<Recognition, AccessError> {
    let mut ident = [0u16; 4];
    if read_if_present(regs, Holding, IDENT_ADDR, &mut ident)? {
        // The input map must answer too (a stray device could echo an identification block).
        if read_float(regs, REGISTERS[Voltage.id().row()].addr)?.is_none() {
            return Ok(Recognition::Other);
        }
        let code = ident[2];
        return Ok(match judge_code(code, ctx.forces(MODEL.vendor, code)) {
            CodeVerdict::Drive(what) => Recognition::Found(identity(ident, what)),
            CodeVerdict::Refuse(why) => Recognition::Unsupported { model: &MODEL, why },
        });
    }
    let Some(voltage) = read_float(regs, REGISTERS[Voltage.id().row()].addr)? else {
        return Ok(Recognition::Other);
    };
    let Some(frequency) = read_float(regs, FREQUENCY_ADDR)? else {
        return Ok(Recognition::Other);
    };
    if !looks_like_mains(voltage, frequency) {
        return Ok(Recognition::Other);
    }
    Ok(Recognition::Found(identity_without_block(
        ctx.unit, voltage, frequency,
    )))
}

/// The identity in the block at 0xFC00: serial (u32), meter code, firmware version.
fn identity([hi, lo, code, fw]: [u16; 4], what: String) -> Identity {
    let serial = decode_number(U32, &[hi, lo]).unwrap_or(0.0) as u64;
    let firmware = format!("{:X}.{:02X}", fw >> 8, fw & 0xFF);
    let serial = serial.to_string();
    Identity {
        model: &MODEL,
        // The original keyed the meter by the same decimal serial (docs/reference/victron.md §4).
        original_ident: original_ident("cg", &serial),
        serial,
        details: format!("{what}, firmware {firmware}"),
        firmware,
        hardware: code.to_string(),
        code,
        rating: None,
    }
}

/// A meter without the identification block has no serial number to name its service by: its
/// unit address stands in (`eastron_unit2`), stable as long as the meter keeps its address.
fn identity_without_block(unit: u8, voltage: f64, frequency: f64) -> Identity {
    Identity {
        model: &MODEL,
        serial: format!("unit{unit}"),
        details: format!(
            "no identification block at 0xFC00 (refused): recognised by its input map \
             ({voltage:.1} V, {frequency:.2} Hz); no serial number, named by its unit address"
        ),
        firmware: String::new(),
        hardware: String::new(),
        code: 0,
        rating: None,
        // The original needed the block to answer: it never stored settings for such a meter.
        original_ident: None,
    }
}

/// `--probe`: the identification block and what identification makes of it.
fn explain(regs: &mut dyn RegisterReader, ctx: &IdentifyContext, _: f64) -> Vec<Explained> {
    let mut out = Vec::new();
    let mut ident = [0u16; 4];
    match read_if_present(regs, Holding, IDENT_ADDR, &mut ident) {
        Ok(true) => {
            let [hi, lo, code, fw] = ident;
            out.push(Explained {
                register: "HR0xFC00-01",
                value: format!("{}", (u32::from(hi) << 16) | u32::from(lo)),
                meaning: "serial number (u32)",
                action: format!("names the service: {}_<serial>", MODEL.vendor),
            });
            let action = match judge_code(code, ctx.forces(MODEL.vendor, code)) {
                CodeVerdict::Drive(what) => format!("drives it: {what}"),
                CodeVerdict::Refuse(why) => format!("refuses it: {why}"),
            };
            out.push(Explained {
                register: "HR0xFC02",
                value: code.to_string(),
                meaning: "meter code (43 SDM230, 32 SDM120; 112, 121, 132… three-phase)",
                action,
            });
            out.push(Explained {
                register: "HR0xFC03",
                value: format!("{fw:#06x}"),
                meaning: "firmware version",
                action: "published as /FirmwareVersion".into(),
            });
        }
        Ok(false) => out.push(Explained {
            register: "HR0xFC00-03",
            value: "refused".into(),
            meaning: "serial, meter code, firmware (not in the SDM230 documents)",
            action: format!(
                "identifies the meter by its input map (mains voltage and frequency) and names \
                 it {}_unit{}",
                MODEL.vendor, ctx.unit
            ),
        }),
        Err(e) => out.push(Explained {
            register: "HR0xFC00-03",
            value: format!("{e}"),
            meaning: "serial, meter code, firmware",
            action: "probes again".into(),
        }),
    }
    out
}

pub(super) static MODEL: Model = Model {
    name: "Eastron SDM230",
    vendor: "eastron",
    // Any of Victron's energy-meter roles, grid by default.
    roles: ENERGY_METER_ROLES,
    registers: &REGISTERS,
    limits: LIMITS,
    paths: &PATHS,
    plausibility: &PLAUSIBILITY,
    identify,
    explain,
    bus: BUS,
    // The Python original's id ("assigned by Victron Support" per community drivers, unverified).
    product_id: 0xB023,
    limiter: LimiterOffer {
        grid_meter: Some(GridMeter {
            power: Power.id(),
            import_energy: ImportEnergy.id(),
            export_energy: ExportEnergy.id(),
        }),
        inverter: None,
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::model::assert_names_match;
    use crate::devices::plausibility::Guard;
    use crate::registers::{Read, RegisterMap, plan_all_due};
    use std::time::Instant;

    fn f32_words(v: f32) -> [u16; 2] {
        let b = v.to_bits();
        [(b >> 16) as u16, b as u16]
    }

    fn map_with(values: &[(Reg, f32)]) -> RegisterMap {
        let mut map = RegisterMap::new(&REGISTERS, LIMITS);
        let now = Instant::now();
        for &(reg, v) in values {
            let read = Read {
                access: Input,
                addr: REGISTERS[reg.id().row()].addr,
                count: 2,
                fast: false,
            };
            map.store(&read, &f32_words(v), now);
        }
        map
    }

    fn value(map: &RegisterMap, path: &str) -> Option<f64> {
        MODEL
            .published_values(map)
            .find(|(p, _)| p.paths().any(|at| at == path))
            .and_then(|(_, v)| v)
    }

    #[test]
    fn typed_names_match_the_table() {
        assert_names_match(Reg::ALL, &REGISTERS);
    }

    #[test]
    fn current_is_signed_like_power_and_consumption_is_net_import() {
        let map = map_with(&[
            (Power, -920.0),
            (Current, 4.0),
            (ImportEnergy, 1234.5),
            (ExportEnergy, 234.5),
        ]);
        assert_eq!(value(&map, "/Ac/L1/Power"), Some(-920.0));
        assert_eq!(value(&map, "/Ac/L1/Current"), Some(-4.0));
        assert_eq!(value(&map, "/Ac/Energy/Consumption"), Some(1000.0));
        assert_eq!(value(&map, "/Ac/Frequency"), None, "not read yet → invalid");
        let meter = MODEL.limiter.grid_meter.unwrap();
        assert_eq!(meter.power(&map).map(|r| r.value), Some(-920.0));
        assert_eq!(meter.consumption(&map).map(|r| r.value), Some(1000.0));
        let map = map_with(&[(Power, 500.0), (Current, 2.2)]);
        assert!((value(&map, "/Ac/Current").unwrap() - 2.2).abs() < 1e-6);
    }

    #[test]
    fn identifies_from_the_block_at_fc00() {
        let what = "meter code 43 (SDM230-Modbus)".to_string();
        let id = identity([0x0098, 0x9680, 43, 0x0102], what);
        assert_eq!(id.serial, "10000000");
        assert_eq!(id.ident(), "eastron_10000000");
        assert_eq!(id.firmware, "1.02");
        assert_eq!(id.hardware, "43");
        assert_eq!(id.details, "meter code 43 (SDM230-Modbus), firmware 1.02");
        assert_eq!(id.model.name, MODEL.name);
    }

    #[test]
    fn single_phase_codes_are_driven_three_phase_refused_unless_forced() {
        assert!(matches!(judge_code(43, false), CodeVerdict::Drive(_)));
        assert!(matches!(judge_code(32, false), CodeVerdict::Drive(_)));
        for code in [112, 121, 132, 135, 136, 137] {
            let CodeVerdict::Refuse(why) = judge_code(code, false) else {
                panic!("{code} driven");
            };
            assert!(why.contains(&format!("meter code {code} ")), "{why}");
            assert!(
                why.contains(&format!("--force-model eastron:{code}")),
                "{why}"
            );
            assert!(matches!(judge_code(code, true), CodeVerdict::Drive(_)));
        }
        let CodeVerdict::Drive(what) = judge_code(999, false) else {
            panic!("an unknown code is driven on its input map");
        };
        assert!(what.contains("not in the code table"), "{what}");
    }

    /// A meter's registers in memory: holding 0xFC00.. if it has the block, the input map.
    struct FakeMeter {
        ident: Option<[u16; 4]>,
        voltage: f32,
        frequency: f32,
        answers: bool,
    }

    impl RegisterReader for FakeMeter {
        fn read(
            &mut self,
            access: crate::registers::Access,
            addr: u16,
            words: &mut [u16],
        ) -> Result<(), AccessError> {
            if !self.answers {
                return Err(AccessError::NoAnswer);
            }
            let data: Vec<u16> = match (access, addr, self.ident) {
                (Holding, IDENT_ADDR, Some(block)) => block.to_vec(),
                (Input, 0x0000, _) => f32_words(self.voltage).to_vec(),
                (Input, FREQUENCY_ADDR, _) => f32_words(self.frequency).to_vec(),
                _ => return Err(AccessError::Refused),
            };
            words.copy_from_slice(&data[..words.len()]);
            Ok(())
        }
    }

    fn ctx<'a>(forced: &'a [(String, u16)]) -> IdentifyContext<'a> {
        IdentifyContext {
            unit: 2,
            forced,
            rated_power_w: None,
        }
    }

    #[test]
    fn identification_judges_the_code_and_falls_back_on_the_input_map() {
        let mut meter = FakeMeter {
            ident: Some([0, 7, 112, 0x0102]),
            voltage: 239.0,
            frequency: 50.0,
            answers: true,
        };
        let found = identify(&mut meter, &ctx(&[]));
        assert!(
            matches!(&found, Ok(Recognition::Unsupported { why, .. }) if why.contains("112")),
            "{found:?}"
        );
        let forced = [("eastron".to_string(), 112)];
        assert!(matches!(
            identify(&mut meter, &ctx(&forced)),
            Ok(Recognition::Found(_))
        ));
        // No block at 0xFC00: the input map decides, the unit address names it.
        meter.ident = None;
        let Ok(Recognition::Found(id)) = identify(&mut meter, &ctx(&[])) else {
            panic!("not identified from its input map");
        };
        assert_eq!(id.ident(), "eastron_unit2");
        assert!(id.details.contains("239.0 V, 50.00 Hz"), "{}", id.details);
        // ... but only a live mains: a Growatt's input 0 (status 1, PV power) is no voltage.
        meter.voltage = f32::from_bits(0x0001_0000);
        assert!(matches!(
            identify(&mut meter, &ctx(&[])),
            Ok(Recognition::Other)
        ));
        meter.answers = false;
        assert_eq!(
            identify(&mut meter, &ctx(&[])).err(),
            Some(AccessError::NoAnswer)
        );
    }

    #[test]
    fn every_planned_read_is_whole_values_within_the_meters_limit() {
        let mut map = RegisterMap::new(&REGISTERS, LIMITS);
        let now = Instant::now();
        for read in plan_all_due(&mut map, now) {
            assert_eq!(read.addr % 2, 0, "{read:?}");
            assert_eq!(read.count % 2, 0, "{read:?}");
            assert!(read.count <= 60, "{read:?}");
        }
        // Even when every register is wanted at once and holes are allowed across the map.
        let wide = PackLimits {
            max_hole: 200,
            ..LIMITS
        };
        for read in plan_all_due(&mut RegisterMap::new(&REGISTERS, wide), now) {
            assert!(read.count <= 60 && read.count % 2 == 0, "{read:?}");
        }
    }

    #[test]
    fn plausibility_bounds_the_meter() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut g = Guard::new(&PLAUSIBILITY, &REGISTERS);
        assert_eq!(g.check(Power, -23000.0, t0), Some(-23000.0));
        assert_eq!(g.check(Power, 1e30, t0), None);
        assert_eq!(g.check(Frequency, 50.02, t0), Some(50.02));
        assert_eq!(g.check(Frequency, 0.0, t0), None);
        assert_eq!(g.check(PowerFactor, -0.98, t0), Some(-0.98));
        assert_eq!(g.check(PowerFactor, 1.5, t0), None);
        assert_eq!(g.check(Voltage, 400.0, t0), None);
        assert_eq!(g.check(ImportEnergy, 1234.56, t0), Some(1234.56));
        // 30 kW for 10 s is 0.083 kWh: 0.05 passes, 1 kWh does not.
        assert_eq!(g.check(ImportEnergy, 1234.61, secs(10)), Some(1234.61));
        assert_eq!(g.check(ImportEnergy, 1235.61, secs(20)), Some(1234.61));
    }
}
