//! Register maps of the simulated SDM230 and Growatt MIN (v1.20 layout) and their physics:
//! energies integrate power, and an optional plant model couples inverter, load and meter.

use std::time::Duration;

/// Holding (0x03/0x06/0x10) or input (0x04) registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterKind {
    Holding,
    Input,
}

pub const EXCEPTION_ILLEGAL_FUNCTION: u8 = 1;
pub const EXCEPTION_ILLEGAL_ADDRESS: u8 = 2;
pub const EXCEPTION_ILLEGAL_VALUE: u8 = 3;

/// Contiguous defined register blocks; a read or write must stay inside one block, as real
/// devices answer exception 2 for reads spanning undefined addresses.
#[derive(Debug, Clone, Default)]
pub struct Bank {
    blocks: Vec<(u16, Vec<u16>)>,
}

impl Bank {
    fn with_blocks(blocks: &[(u16, u16)]) -> Self {
        Self {
            blocks: blocks
                .iter()
                .map(|&(start, end)| (start, vec![0; usize::from(end - start)]))
                .collect(),
        }
    }

    fn block_mut(&mut self, addr: u16, count: u16) -> Option<&mut [u16]> {
        let end = u32::from(addr) + u32::from(count);
        self.blocks.iter_mut().find_map(|(start, regs)| {
            let block_end = u32::from(*start) + regs.len() as u32;
            if addr >= *start && end <= block_end {
                let from = usize::from(addr - *start);
                regs.get_mut(from..from + usize::from(count))
            } else {
                None
            }
        })
    }

    pub fn read(&mut self, addr: u16, count: u16) -> Result<&[u16], u8> {
        self.block_mut(addr, count)
            .map(|r| &*r)
            .ok_or(EXCEPTION_ILLEGAL_ADDRESS)
    }

    pub fn write(&mut self, addr: u16, values: &[u16]) -> Result<(), u8> {
        let count = u16::try_from(values.len()).map_err(|_| EXCEPTION_ILLEGAL_VALUE)?;
        let regs = self
            .block_mut(addr, count)
            .ok_or(EXCEPTION_ILLEGAL_ADDRESS)?;
        regs.copy_from_slice(values);
        Ok(())
    }

    pub fn get(&mut self, addr: u16) -> Option<u16> {
        self.read(addr, 1).ok().and_then(|r| r.first().copied())
    }

    fn set(&mut self, addr: u16, value: u16) {
        let _ = self.write(addr, &[value]);
    }

    fn set_u32(&mut self, addr: u16, value: u32) {
        let _ = self.write(addr, &[(value >> 16) as u16, value as u16]);
    }

    fn set_f32(&mut self, addr: u16, value: f64) {
        self.set_u32(addr, (value as f32).to_bits());
    }

    fn set_text(&mut self, addr: u16, regs: u16, text: &str) {
        let mut bytes = text.bytes();
        for i in 0..regs {
            let hi = bytes.next().unwrap_or(0);
            let lo = bytes.next().unwrap_or(0);
            self.set(addr + i, u16::from_be_bytes([hi, lo]));
        }
    }
}

/// One simulated device: its registers plus the values its input registers are computed from.
#[derive(Debug, Clone)]
pub struct Device {
    pub model: Model,
    pub input: Bank,
    pub holding: Bank,
    /// Raw input register overrides (`set_raw`), applied after every refresh.
    input_overrides: Vec<(u16, u16)>,
}

#[derive(Debug, Clone)]
pub enum Model {
    Meter(MeterValues),
    Growatt(GrowattValues),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeterValues {
    pub voltage: f64,
    pub current: f64,
    pub power: f64,
    pub apparent: f64,
    pub reactive: f64,
    pub pf: f64,
    pub angle: f64,
    pub frequency: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub import_kvarh: f64,
    pub export_kvarh: f64,
}

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

pub const METER_SERIAL: u32 = 21_034_567;
/// Placeholder model code: the real SDM230 value is unconfirmed (devices.md).
pub const METER_CODE: u16 = 0x0084;
pub const METER_FIRMWARE: u16 = 0x0102;
pub const GROWATT_RATED_VA_TENTHS: u32 = 42_000;
pub const GROWATT_FIRMWARE: &str = "GH1.0 ";
pub const GROWATT_CONTROL_FIRMWARE: &str = "ZBAA.3";
pub const GROWATT_SERIAL: &str = "NTCXB1234A";
pub const GROWATT_DEVICE_TYPE: u16 = 5100;

impl Device {
    pub fn sdm230(unit: u8) -> Self {
        // Blocks follow the original driver's read barriers (0x12, 0x46, 0x156).
        let input = Bank::with_blocks(&[
            (0x0000, 0x0012),
            (0x0012, 0x0026),
            (0x0046, 0x0050),
            (0x0156, 0x015A),
        ]);
        let mut holding = Bank::with_blocks(&[(0x0012, 0x001E), (0xFC00, 0xFC04)]);
        holding.set_f32(0x0012, 0.0); // 1 stop bit, no parity
        holding.set_f32(0x0014, f64::from(unit));
        holding.set_f32(0x001C, 2.0); // 9600 baud
        holding.set_u32(0xFC00, METER_SERIAL);
        holding.set(0xFC02, METER_CODE);
        holding.set(0xFC03, METER_FIRMWARE);
        let mut d = Self {
            model: Model::Meter(MeterValues {
                voltage: 240.0,
                current: 2.5,
                power: 600.0,
                apparent: 620.0,
                reactive: -50.0,
                pf: 0.97,
                angle: 0.0,
                frequency: 50.0,
                import_kwh: 1234.5,
                export_kwh: 321.0,
                import_kvarh: 10.0,
                export_kvarh: 20.0,
            }),
            input,
            holding,
            input_overrides: Vec::new(),
        };
        d.refresh();
        d
    }

    pub fn growatt(unit: u8) -> Self {
        let input = Bank::with_blocks(&[(0, 125), (3000, 3125)]);
        let mut holding = Bank::with_blocks(&[(0, 125), (209, 224), (3000, 3001)]);
        holding.set(0, 1);
        holding.set(3, 100);
        holding.set_u32(6, GROWATT_RATED_VA_TENTHS);
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
        let mut d = Self {
            model: Model::Growatt(GrowattValues {
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
            }),
            input,
            holding,
            input_overrides: Vec::new(),
        };
        d.refresh();
        d
    }

    /// Sets a named quantity (see [`Device::names`]); false for an unknown name.
    pub fn set(&mut self, name: &str, value: f64) -> bool {
        let found = match self.value_mut(name) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        };
        if let Model::Growatt(g) = &mut self.model
            && name == "pv_power"
        {
            // Split over the two trackers as a real array would.
            g.pv1_power = value * 0.55;
            g.pv2_power = value * 0.45;
            g.pv1_current = g.pv1_power / g.pv1_voltage.max(1.0);
            g.pv2_current = g.pv2_power / g.pv2_voltage.max(1.0);
            self.refresh();
            return true;
        }
        self.refresh();
        found
    }

    pub fn get(&mut self, name: &str) -> Option<f64> {
        if let Model::Growatt(g) = &self.model
            && name == "pv_power"
        {
            return Some(g.pv1_power + g.pv2_power);
        }
        self.value_mut(name).map(|v| *v)
    }

    /// The settable names of this model.
    pub fn names(&self) -> &'static [&'static str] {
        match self.model {
            Model::Meter(_) => &[
                "voltage",
                "current",
                "power",
                "apparent",
                "reactive",
                "pf",
                "angle",
                "frequency",
                "import_kwh",
                "export_kwh",
                "import_kvarh",
                "export_kvarh",
            ],
            Model::Growatt(_) => &[
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
            ],
        }
    }

    fn value_mut(&mut self, name: &str) -> Option<&mut f64> {
        match &mut self.model {
            Model::Meter(m) => Some(match name {
                "voltage" => &mut m.voltage,
                "current" => &mut m.current,
                "power" => &mut m.power,
                "apparent" => &mut m.apparent,
                "reactive" => &mut m.reactive,
                "pf" => &mut m.pf,
                "angle" => &mut m.angle,
                "frequency" => &mut m.frequency,
                "import_kwh" => &mut m.import_kwh,
                "export_kwh" => &mut m.export_kwh,
                "import_kvarh" => &mut m.import_kvarh,
                "export_kvarh" => &mut m.export_kvarh,
                _ => return None,
            }),
            Model::Growatt(g) => Some(match name {
                "status" => &mut g.status,
                "pv1_voltage" => &mut g.pv1_voltage,
                "pv1_current" => &mut g.pv1_current,
                "pv1_power" => &mut g.pv1_power,
                "pv2_voltage" => &mut g.pv2_voltage,
                "pv2_current" => &mut g.pv2_current,
                "pv2_power" => &mut g.pv2_power,
                "ac_power" => &mut g.ac_power,
                "frequency" => &mut g.frequency,
                "ac_voltage" => &mut g.ac_voltage,
                "ac_current" => &mut g.ac_current,
                "energy_today" => &mut g.energy_today,
                "energy_total" => &mut g.energy_total,
                "inverter_temp" => &mut g.inverter_temp,
                "ipm_temp" => &mut g.ipm_temp,
                "boost_temp" => &mut g.boost_temp,
                "derating" => &mut g.derating,
                "fault_code" => &mut g.fault_code,
                _ => return None,
            }),
        }
    }

    /// Writes a raw register; input overrides stick across refreshes.
    pub fn set_raw(&mut self, kind: RegisterKind, addr: u16, value: u16) -> Result<(), u8> {
        match kind {
            RegisterKind::Holding => self.holding.write(addr, &[value]),
            RegisterKind::Input => {
                self.input.write(addr, &[value])?;
                self.input_overrides.retain(|(a, _)| *a != addr);
                self.input_overrides.push((addr, value));
                Ok(())
            }
        }
    }

    pub fn raw(&mut self, kind: RegisterKind, addr: u16) -> Option<u16> {
        match kind {
            RegisterKind::Holding => self.holding.get(addr),
            RegisterKind::Input => self.input.get(addr),
        }
    }

    /// Integrates energies over `dt` (import when power > 0, export when < 0).
    pub fn integrate(&mut self, dt: Duration) {
        let hours = dt.as_secs_f64() / 3600.0;
        match &mut self.model {
            Model::Meter(m) => {
                if m.power > 0.0 {
                    m.import_kwh += m.power * hours / 1000.0;
                } else {
                    m.export_kwh += -m.power * hours / 1000.0;
                }
                if m.reactive > 0.0 {
                    m.import_kvarh += m.reactive * hours / 1000.0;
                } else {
                    m.export_kvarh += -m.reactive * hours / 1000.0;
                }
            }
            Model::Growatt(g) => {
                let ac_kwh = g.ac_power.max(0.0) * hours / 1000.0;
                g.energy_today += ac_kwh;
                g.energy_total += ac_kwh;
                g.pv1_energy_today += g.pv1_power.max(0.0) * hours / 1000.0;
                g.pv1_energy_total += g.pv1_power.max(0.0) * hours / 1000.0;
                g.pv2_energy_today += g.pv2_power.max(0.0) * hours / 1000.0;
                g.pv2_energy_total += g.pv2_power.max(0.0) * hours / 1000.0;
                if g.ac_power > 0.0 {
                    g.work_time_s += dt.as_secs_f64();
                }
            }
        }
        self.refresh();
    }

    /// Recomputes the input registers from the values.
    pub fn refresh(&mut self) {
        let input = &mut self.input;
        match &self.model {
            Model::Meter(m) => {
                for (addr, v) in [
                    (0x0000, m.voltage),
                    (0x0006, m.current),
                    (0x000C, m.power),
                    (0x0012, m.apparent),
                    (0x0018, m.reactive),
                    (0x001E, m.pf),
                    (0x0024, m.angle),
                    (0x0046, m.frequency),
                    (0x0048, m.import_kwh),
                    (0x004A, m.export_kwh),
                    (0x004C, m.import_kvarh),
                    (0x004E, m.export_kvarh),
                    (0x0156, m.import_kwh + m.export_kwh),
                    (0x0158, m.import_kvarh + m.export_kvarh),
                ] {
                    input.set_f32(addr, v);
                }
            }
            Model::Growatt(g) => {
                for base in [0u16, 3000] {
                    let u16s = [
                        (0, g.status, 1.0),
                        (3, g.pv1_voltage, 10.0),
                        (4, g.pv1_current, 10.0),
                        (7, g.pv2_voltage, 10.0),
                        (8, g.pv2_current, 10.0),
                        (37, g.frequency, 100.0),
                        (38, g.ac_voltage, 10.0),
                        (39, g.ac_current, 10.0),
                        (93, g.inverter_temp, 10.0),
                        (94, g.ipm_temp, 10.0),
                        (95, g.boost_temp, 10.0),
                        (104, g.derating, 1.0),
                        (105, g.fault_code, 1.0),
                    ];
                    for (addr, v, scale) in u16s {
                        // Temperatures may be negative: two's complement, as the s16 they are.
                        input.set(base + addr, (v * scale).round() as i32 as u16);
                    }
                    let u32s = [
                        (1, g.pv1_power + g.pv2_power, 10.0),
                        (5, g.pv1_power, 10.0),
                        (9, g.pv2_power, 10.0),
                        (35, g.ac_power, 10.0),
                        (40, g.ac_power, 10.0),
                        (53, g.energy_today, 10.0),
                        (55, g.energy_total, 10.0),
                        (57, g.work_time_s, 2.0),
                        (59, g.pv1_energy_today, 10.0),
                        (61, g.pv1_energy_total, 10.0),
                        (63, g.pv2_energy_today, 10.0),
                        (65, g.pv2_energy_total, 10.0),
                    ];
                    for (addr, v, scale) in u32s {
                        input.set_u32(base + addr, (v * scale).round().max(0.0) as u32);
                    }
                }
            }
        }
        for &(addr, value) in &self.input_overrides {
            input.set(addr, value);
        }
    }
}

/// House load, available PV and ramp of the optional plant model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plant {
    pub load_w: f64,
    pub pv_available_w: f64,
    /// How fast the inverter output follows its target, W per second.
    pub ramp_w_per_s: f64,
}

impl Default for Plant {
    fn default() -> Self {
        Self {
            load_w: 500.0,
            pv_available_w: 3000.0,
            ramp_w_per_s: 1000.0,
        }
    }
}

impl Plant {
    /// Moves the inverter towards min(PV available, HR3 % × rated) and sets the meter to
    /// load − inverter output.
    pub fn step(&self, dt: Duration, meter: &mut Device, inverter: &mut Device) {
        let rate = f64::from(inverter.holding.get(3).unwrap_or(100).min(100));
        let rated_w = match (inverter.holding.get(6), inverter.holding.get(7)) {
            (Some(hi), Some(lo)) => f64::from((u32::from(hi) << 16) | u32::from(lo)) / 10.0,
            _ => 0.0,
        };
        let Model::Growatt(g) = &mut inverter.model else {
            return;
        };
        let target = self.pv_available_w.max(0.0).min(rate / 100.0 * rated_w);
        let max_step = self.ramp_w_per_s * dt.as_secs_f64();
        let delta = (target - g.ac_power).clamp(-max_step, max_step);
        g.ac_power += delta;
        g.ac_current = g.ac_power / g.ac_voltage.max(1.0);
        // A 97 % efficient inverter, both trackers alike.
        let pv = g.ac_power / 0.97;
        g.pv1_power = pv * 0.55;
        g.pv2_power = pv * 0.45;
        g.pv1_current = g.pv1_power / g.pv1_voltage.max(1.0);
        g.pv2_current = g.pv2_power / g.pv2_voltage.max(1.0);
        g.status = if self.pv_available_w > 0.0 { 1.0 } else { 0.0 };
        let ac = g.ac_power;
        if let Model::Meter(m) = &mut meter.model {
            m.power = self.load_w - ac;
            m.current = m.power.abs() / m.voltage.max(1.0);
            m.apparent = m.power.abs() / m.pf.abs().max(0.01);
        }
        inverter.refresh();
        meter.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_must_stay_inside_a_block() {
        let mut m = Device::sdm230(2);
        assert!(m.input.read(0x0000, 14).is_ok());
        assert_eq!(m.input.read(0x0010, 4), Err(EXCEPTION_ILLEGAL_ADDRESS));
        assert_eq!(m.input.read(0x0100, 2), Err(EXCEPTION_ILLEGAL_ADDRESS));
        let power = m.input.read(0x000C, 2).unwrap();
        let bits = (u32::from(power[0]) << 16) | u32::from(power[1]);
        assert_eq!(f32::from_bits(bits), 600.0);
    }

    #[test]
    fn meter_integrates_import_and_export() {
        let mut m = Device::sdm230(2);
        m.set("power", 3600.0);
        let before = m.get("import_kwh").unwrap();
        m.integrate(Duration::from_secs(1));
        assert!((m.get("import_kwh").unwrap() - before - 0.001).abs() < 1e-9);
        m.set("power", -1800.0);
        let exp = m.get("export_kwh").unwrap();
        m.integrate(Duration::from_secs(2));
        assert!((m.get("export_kwh").unwrap() - exp - 0.001).abs() < 1e-9);
    }

    #[test]
    fn growatt_scales_and_text() {
        let mut g = Device::growatt(1);
        g.set("ac_power", 1234.5);
        assert_eq!(g.input.read(35, 2).unwrap(), &[0, 12345]);
        assert_eq!(g.holding.read(9, 1).unwrap(), &[u16::from_be_bytes(*b"GH")]);
        g.set("inverter_temp", -5.0);
        assert_eq!(g.input.get(93), Some((-50i16) as u16));
        assert!(!g.set("no_such_value", 1.0));
    }

    #[test]
    fn plant_clamps_to_rate_and_ramps() {
        let mut meter = Device::sdm230(2);
        let mut inv = Device::growatt(1);
        inv.set("ac_power", 0.0);
        inv.set_raw(RegisterKind::Holding, 3, 50).unwrap();
        let plant = Plant {
            load_w: 500.0,
            pv_available_w: 4000.0,
            ramp_w_per_s: 1000.0,
        };
        plant.step(Duration::from_secs(1), &mut meter, &mut inv);
        assert!((inv.get("ac_power").unwrap() - 1000.0).abs() < 1e-6);
        for _ in 0..5 {
            plant.step(Duration::from_secs(1), &mut meter, &mut inv);
        }
        // 50 % of 4200 W.
        assert!((inv.get("ac_power").unwrap() - 2100.0).abs() < 1e-6);
        assert!((meter.get("power").unwrap() - (500.0 - 2100.0)).abs() < 1e-6);
    }
}
