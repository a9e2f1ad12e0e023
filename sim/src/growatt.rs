//! Growatt MIN/MID TL-X (Modbus protocol v1.20 layout): input registers 0..124 and their
//! mirror at 3000..3124 hold scaled integers; holding registers carry identification, the
//! active power rate (HR3) and the export-limit set-up.

use std::time::Duration;

use crate::bank::Bank;

pub const GROWATT_RATED_VA_TENTHS: u32 = 42_000;
pub const GROWATT_FIRMWARE: &str = "GH1.0 ";
pub const GROWATT_CONTROL_FIRMWARE: &str = "ZBAA.3";
pub const GROWATT_SERIAL: &str = "NTCXB1234A";
pub const GROWATT_DEVICE_TYPE: u16 = 5100;

/// HR3: active power rate in percent of the rated power.
pub(crate) const HR_POWER_RATE: u16 = 3;
/// HR6..7: rated apparent power in 0.1 VA.
pub(crate) const HR_RATED_VA: u16 = 6;

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

/// Input and holding registers of an inverter at `unit`.
pub(crate) fn banks(unit: u8) -> (Bank, Bank) {
    let input = Bank::with_blocks(&[(0, 125), (3000, 3125)]);
    let mut holding = Bank::with_blocks(&[(0, 125), (209, 224), (3000, 3001)]);
    holding.set(0, 1);
    holding.set(HR_POWER_RATE, 100);
    holding.set_u32(HR_RATED_VA, GROWATT_RATED_VA_TENTHS);
    holding.set_text(9, 3, GROWATT_FIRMWARE);
    holding.set_text(12, 3, GROWATT_CONTROL_FIRMWARE);
    holding.set(22, 0);
    holding.set_text(23, 5, GROWATT_SERIAL);
    holding.set(30, u16::from(unit));
    holding.set(42, 1);
    holding.set(43, GROWATT_DEVICE_TYPE);
    holding.set(44, 0x0203);
    holding.set(122, 1);
    holding.set(123, 876);
    holding.set_text(209, 15, GROWATT_SERIAL);
    holding.set(3000, 876);
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

/// The rated power in W the holding registers declare.
pub(crate) fn rated_w(holding: &mut Bank) -> f64 {
    holding
        .get_u32(HR_RATED_VA)
        .map_or(0.0, |tenths| f64::from(tenths) / 10.0)
}
