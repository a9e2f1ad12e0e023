//! Growatt MIN/MID TL-X (Modbus protocol v1.20 layout): input registers 0..124 and their
//! mirror at 3000..3124 hold scaled integers; holding registers carry identification, the
//! active power rate (HR3) and the export-limit set-up.
//!
//! What a unit answers differs by model ([`GrowattProfile`]: device type, trackers and phases,
//! rated power, which holding ranges exist) and by state (HR2, the "PF CMD memory state", decides
//! whether HR3 survives a night and whether a write of it goes to non-volatile memory):
//! docs/reference/growatt.md §2–§4, §7.

use std::time::Duration;

use crate::bank::{Bank, EXCEPTION_ILLEGAL_VALUE};

pub const GROWATT_RATED_VA_TENTHS: u32 = 42_000;
pub const GROWATT_FIRMWARE: &str = "GH1.0 ";
pub const GROWATT_CONTROL_FIRMWARE: &str = "ZBAA.3";
pub const GROWATT_SERIAL: &str = "NTCXB1234A";
pub const GROWATT_DEVICE_TYPE: u16 = 5100;

/// HR2: whether writes of HR3, 4, 5 and 99 are kept (1) or lost at the next power-up (0).
pub const HR_MEMORY_STATE: u16 = 2;
/// HR3: active power rate in percent of the rated power; 255 = not limited.
pub const HR_POWER_RATE: u16 = 3;
/// HR6..7: rated apparent power in 0.1 VA.
const HR_RATED_VA: u16 = 6;
/// HR3 after a power-up with HR2 = 0, and as the unit leaves the factory: not limited.
pub const POWER_RATE_UNLIMITED: u16 = 255;
/// The holding registers HR2 governs (G120 HR2 text).
const REMEMBERED_BY_HR2: [u16; 4] = [3, 4, 5, 99];

/// One Growatt model as the simulator serves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrowattProfile {
    /// The name `--growatt-model` and the `model` command take.
    pub name: &'static str,
    /// HR43.
    pub device_type: u16,
    /// HR44: trackers in the high byte, output phases in the low byte.
    pub trackers_phases: u16,
    /// What the unit can deliver, W: the plant's ceiling and the cap of inputs 101–103.
    pub nameplate_w: f64,
    /// HR6–7 in 0.1 VA; 0 for a unit that does not fill it in.
    pub rated_va_tenths: u32,
    /// The holding ranges the unit answers, `(first, end)` with `end` exclusive; a read anywhere
    /// else is answered with Illegal Function, as units answer for ranges they lack.
    pub holding_ranges: &'static [(u16, u16)],
    /// HR2 at power-up.
    pub memory_state: u16,
    /// A write of HR2 is acknowledged but does not change it (a unit locked by its installer).
    pub memory_state_locked: bool,
}

impl GrowattProfile {
    /// The users' unit: device type 5100 at HR43 (docs/reference/growatt.md §7) and the
    /// 125–249 "second group" with the serial at 209–223, which the original driver read for
    /// years (§6), besides the TL-X ranges.
    pub const MIN_4200TL_XE: GrowattProfile = GrowattProfile {
        name: "min-4200tl-xe",
        device_type: GROWATT_DEVICE_TYPE,
        trackers_phases: 0x0201,
        nameplate_w: 4200.0,
        rated_va_tenths: GROWATT_RATED_VA_TENTHS,
        holding_ranges: &[(0, 125), (125, 250), (3000, 3125)],
        memory_state: 0,
        memory_state_locked: false,
    };

    /// A TL-X as the protocol's range table has it: holding 0–124 and 3000–3124 only, so the
    /// serial at 209–223 answers Illegal Function; device type 5200.
    pub const MIN_6000TL_X: GrowattProfile = GrowattProfile {
        name: "min-6000tl-x",
        device_type: 5200,
        trackers_phases: 0x0201,
        nameplate_w: 6000.0,
        rated_va_tenths: 60_000,
        holding_ranges: &[(0, 125), (3000, 3125)],
        memory_state: 0,
        memory_state_locked: false,
    };

    /// A three-phase TL3-X (device type 5001, HR44 = 0x0203): holding 0–124 and 125–249.
    pub const MID_15KTL3_X: GrowattProfile = GrowattProfile {
        name: "mid-15ktl3-x",
        device_type: 5001,
        trackers_phases: 0x0203,
        nameplate_w: 15000.0,
        rated_va_tenths: 150_000,
        holding_ranges: &[(0, 125), (125, 250)],
        memory_state: 0,
        memory_state_locked: false,
    };

    /// A single-phase storage inverter (SPH, device type 3502): holding 0–124 and 1000–1124.
    pub const SPH_5000TL_BL: GrowattProfile = GrowattProfile {
        name: "sph-5000tl-bl",
        device_type: 3502,
        trackers_phases: 0x0201,
        nameplate_w: 5000.0,
        rated_va_tenths: 50_000,
        holding_ranges: &[(0, 125), (1000, 1125)],
        memory_state: 0,
        memory_state_locked: false,
    };

    pub const ALL: [GrowattProfile; 4] = [
        Self::MIN_4200TL_XE,
        Self::MIN_6000TL_X,
        Self::MID_15KTL3_X,
        Self::SPH_5000TL_BL,
    ];

    pub fn by_name(name: &str) -> Option<GrowattProfile> {
        Self::ALL.into_iter().find(|p| p.name == name)
    }

    fn has_holding(&self, addr: u16) -> bool {
        self.holding_ranges
            .iter()
            .any(|&(start, end)| (start..end).contains(&addr))
    }
}

impl Default for GrowattProfile {
    fn default() -> Self {
        Self::MIN_4200TL_XE
    }
}

/// What HR2 does to the unit's state, and the count of writes it made non-volatile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub locked: bool,
    /// Writes of HR3, 4, 5 or 99 made while HR2 read 1: each went to non-volatile memory.
    pub nonvolatile_writes: u64,
}

impl Memory {
    /// Applies a holding write with the unit's semantics: the documented ranges of HR2, HR3 and
    /// HR123 (exception 3 otherwise), a locked HR2, and the count of non-volatile writes.
    pub(crate) fn write(
        &mut self,
        holding: &mut Bank,
        addr: u16,
        values: &[u16],
    ) -> Result<(), u8> {
        for (a, &v) in (addr..).zip(values) {
            let valid = match a {
                HR_MEMORY_STATE => v <= 1,
                HR_POWER_RATE => v <= 100 || v == POWER_RATE_UNLIMITED,
                122 => v <= 3,
                123 => (-1000..=1000).contains(&(v as i16)),
                _ => true,
            };
            if !valid {
                return Err(EXCEPTION_ILLEGAL_VALUE);
            }
        }
        let remembered = holding.get(HR_MEMORY_STATE) == Some(1);
        let before = holding.get(HR_MEMORY_STATE);
        holding.write(addr, values)?;
        if self.locked
            && let Some(kept) = before
        {
            holding.set(HR_MEMORY_STATE, kept);
        }
        if remembered {
            let hits = (addr..)
                .take(values.len())
                .filter(|a| REMEMBERED_BY_HR2.contains(a))
                .count();
            self.nonvolatile_writes += hits as u64;
        }
        Ok(())
    }

    /// A night: PV gone and back. With HR2 = 0 the remembered registers return to their initial
    /// values (HR3 and HR4 to 255, not limited); HR0 (remote on/off) returns to 1 either way.
    pub(crate) fn power_up(&self, holding: &mut Bank) {
        if holding.get(HR_MEMORY_STATE) != Some(1) {
            holding.set(HR_POWER_RATE, POWER_RATE_UNLIMITED);
            holding.set(4, 255);
            holding.set(5, 0);
        }
        holding.set(0, 1);
    }
}

/// The quantities the input registers are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct GrowattValues {
    pub status: f64,
    pub pv1_voltage: f64,
    pub pv1_current: f64,
    pub pv1_power: f64,
    pub pv2_voltage: f64,
    pub pv2_current: f64,
    pub pv2_power: f64,
    pub ac_power: f64,
    pub frequency: f64,
    pub ac_voltage: f64,
    pub ac_current: f64,
    pub energy_today: f64,
    pub energy_total: f64,
    pub work_time_s: f64,
    pub pv1_energy_today: f64,
    pub pv1_energy_total: f64,
    pub pv2_energy_today: f64,
    pub pv2_energy_total: f64,
    pub inverter_temp: f64,
    pub ipm_temp: f64,
    pub boost_temp: f64,
    pub derating: f64,
    pub fault_code: f64,
}

impl Default for GrowattValues {
    fn default() -> Self {
        Self {
            status: 1.0,
            pv1_voltage: 320.0,
            pv1_current: 4.0,
            pv1_power: 1280.0,
            pv2_voltage: 310.0,
            pv2_current: 3.0,
            pv2_power: 930.0,
            ac_power: 2150.0,
            frequency: 50.0,
            ac_voltage: 241.0,
            ac_current: 8.9,
            energy_today: 7.5,
            energy_total: 4321.0,
            work_time_s: 3_600_000.0,
            pv1_energy_today: 4.0,
            pv1_energy_total: 2300.0,
            pv2_energy_today: 3.5,
            pv2_energy_total: 2021.0,
            inverter_temp: 41.5,
            ipm_temp: 45.0,
            boost_temp: 39.0,
            derating: 0.0,
            fault_code: 0.0,
        }
    }
}

/// Input and holding registers of an inverter at `unit`, as `profile` leaves the factory: HR3
/// not limited, the export limit off (HR122/123/3000 = 0), the G100 fail-safe enabled.
pub(crate) fn banks(unit: u8, profile: &GrowattProfile) -> (Bank, Bank) {
    let input = Bank::with_blocks(&[(0, 125), (3000, 3125)]);
    let mut holding = Bank::with_blocks(profile.holding_ranges);
    holding.set(0, 1);
    holding.set(HR_MEMORY_STATE, profile.memory_state);
    holding.set(HR_POWER_RATE, POWER_RATE_UNLIMITED);
    holding.set(4, 255);
    holding.set_u32(HR_RATED_VA, profile.rated_va_tenths);
    holding.set_text(9, 3, GROWATT_FIRMWARE);
    holding.set_text(12, 3, GROWATT_CONTROL_FIRMWARE);
    holding.set(22, 0);
    holding.set_text(23, 5, GROWATT_SERIAL);
    holding.set(30, u16::from(unit));
    holding.set(42, 1);
    holding.set(43, profile.device_type);
    holding.set(44, profile.trackers_phases);
    holding.set(122, 0);
    holding.set(123, 0);
    // The serial in every range the unit has: 209–223 (TL3/MID group) and 3001–3015 (TL-X).
    if profile.has_holding(209) {
        holding.set_text(209, 15, GROWATT_SERIAL);
    }
    if profile.has_holding(3000) {
        holding.set(3000, 0);
        holding.set_text(3001, 15, GROWATT_SERIAL);
    }
    (input, holding)
}

impl GrowattValues {
    /// The names `set`/`get` accept; `pv_power` is the sum of both trackers.
    pub const NAMES: &'static [&'static str] = &[
        "status",
        "pv_power",
        "pv1_voltage",
        "pv1_current",
        "pv1_power",
        "pv2_voltage",
        "pv2_current",
        "pv2_power",
        "ac_power",
        "frequency",
        "ac_voltage",
        "ac_current",
        "energy_today",
        "energy_total",
        "inverter_temp",
        "ipm_temp",
        "boost_temp",
        "derating",
        "fault_code",
    ];

    pub(crate) fn slot(&mut self, name: &str) -> Option<&mut f64> {
        Some(match name {
            "status" => &mut self.status,
            "pv1_voltage" => &mut self.pv1_voltage,
            "pv1_current" => &mut self.pv1_current,
            "pv1_power" => &mut self.pv1_power,
            "pv2_voltage" => &mut self.pv2_voltage,
            "pv2_current" => &mut self.pv2_current,
            "pv2_power" => &mut self.pv2_power,
            "ac_power" => &mut self.ac_power,
            "frequency" => &mut self.frequency,
            "ac_voltage" => &mut self.ac_voltage,
            "ac_current" => &mut self.ac_current,
            "energy_today" => &mut self.energy_today,
            "energy_total" => &mut self.energy_total,
            "inverter_temp" => &mut self.inverter_temp,
            "ipm_temp" => &mut self.ipm_temp,
            "boost_temp" => &mut self.boost_temp,
            "derating" => &mut self.derating,
            "fault_code" => &mut self.fault_code,
            _ => return None,
        })
    }

    pub(crate) fn pv_power(&self) -> f64 {
        self.pv1_power + self.pv2_power
    }

    /// Splits a PV power over the two trackers as a real array would.
    pub(crate) fn set_pv_power(&mut self, watts: f64) {
        self.pv1_power = watts * 0.55;
        self.pv2_power = watts * 0.45;
        self.pv1_current = self.pv1_power / self.pv1_voltage.max(1.0);
        self.pv2_current = self.pv2_power / self.pv2_voltage.max(1.0);
    }

    /// Energies count production only; the running time counts while producing.
    pub(crate) fn integrate(&mut self, dt: Duration) {
        let hours = dt.as_secs_f64() / 3600.0;
        let ac_kwh = self.ac_power.max(0.0) * hours / 1000.0;
        self.energy_today += ac_kwh;
        self.energy_total += ac_kwh;
        self.pv1_energy_today += self.pv1_power.max(0.0) * hours / 1000.0;
        self.pv1_energy_total += self.pv1_power.max(0.0) * hours / 1000.0;
        self.pv2_energy_today += self.pv2_power.max(0.0) * hours / 1000.0;
        self.pv2_energy_total += self.pv2_power.max(0.0) * hours / 1000.0;
        if self.ac_power > 0.0 {
            self.work_time_s += dt.as_secs_f64();
        }
    }

    /// Writes the values into both copies of the input registers.
    pub(crate) fn refresh(&self, input: &mut Bank) {
        for base in [0u16, 3000] {
            let u16s = [
                (0, self.status, 1.0),
                (3, self.pv1_voltage, 10.0),
                (4, self.pv1_current, 10.0),
                (7, self.pv2_voltage, 10.0),
                (8, self.pv2_current, 10.0),
                (37, self.frequency, 100.0),
                (38, self.ac_voltage, 10.0),
                (39, self.ac_current, 10.0),
                (93, self.inverter_temp, 10.0),
                (94, self.ipm_temp, 10.0),
                (95, self.boost_temp, 10.0),
                (104, self.derating, 1.0),
                (105, self.fault_code, 1.0),
            ];
            for (addr, v, scale) in u16s {
                // Temperatures may be negative: two's complement, as the s16 they are.
                input.set(base + addr, (v * scale).round() as i32 as u16);
            }
            let u32s = [
                (1, self.pv_power(), 10.0),
                (5, self.pv1_power, 10.0),
                (9, self.pv2_power, 10.0),
                (35, self.ac_power, 10.0),
                (40, self.ac_power, 10.0),
                (53, self.energy_today, 10.0),
                (55, self.energy_total, 10.0),
                (57, self.work_time_s, 2.0),
                (59, self.pv1_energy_today, 10.0),
                (61, self.pv1_energy_total, 10.0),
                (63, self.pv2_energy_today, 10.0),
                (65, self.pv2_energy_total, 10.0),
            ];
            for (addr, v, scale) in u32s {
                input.set_u32(base + addr, (v * scale).round().max(0.0) as u32);
            }
        }
    }
}

/// Inputs 101–103: the output cap the unit applies (HR3 in percent, 255 = 100 %) and that cap in
/// 0.1 W of its nameplate power.
pub(crate) fn refresh_applied_cap(input: &mut Bank, holding: &mut Bank, nameplate_w: f64) {
    let rate = holding.get(HR_POWER_RATE).map_or(100, |r| r.min(100));
    let cap_tenths = nameplate_w * f64::from(rate) / 100.0 * 10.0;
    input.set(101, rate);
    input.set_u32(102, cap_tenths.round() as u32);
}
