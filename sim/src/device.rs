//! One simulated device: its model's values and the registers computed from them. The model
//! files (sdm230.rs, growatt.rs) hold each device's register map and physics.

use std::time::Duration;

use crate::bank::{Bank, EXCEPTION_ILLEGAL_ADDRESS, EXCEPTION_ILLEGAL_FUNCTION, RegisterKind};
use crate::growatt::{self, GrowattProfile, GrowattValues, Memory};
use crate::plant::{self, Plant};
use crate::sdm230::{self, MeterProfile, MeterValues};

#[derive(Debug, Clone)]
pub enum Model {
    Meter(MeterValues),
    Growatt(GrowattValues),
}

/// A device's registers plus the values its input registers are computed from.
#[derive(Debug, Clone)]
pub struct Device {
    pub model: Model,
    pub input: Bank,
    pub holding: Bank,
    /// Raw input register overrides (`set_raw`), applied after every refresh.
    input_overrides: Vec<(u16, u16)>,
    /// The exception a read of a range the device lacks is answered with: Illegal Function on
    /// a Growatt (docs/reference/growatt.md §2), Illegal Data Address on an Eastron meter.
    absent_range: u8,
    /// A Growatt's HR2 semantics.
    memory: Option<Memory>,
    /// What an inverter can deliver, W, whatever its registers say (0 for a meter).
    nameplate_w: f64,
}

impl Device {
    pub fn sdm230(unit: u8) -> Self {
        Self::meter(unit, &MeterProfile::default())
    }

    pub fn meter(unit: u8, profile: &MeterProfile) -> Self {
        let (input, holding) = sdm230::banks(unit, profile);
        let model = Model::Meter(MeterValues::default());
        Self::new(model, input, holding, EXCEPTION_ILLEGAL_ADDRESS, None, 0.0)
    }

    pub fn growatt(unit: u8) -> Self {
        Self::growatt_as(unit, &GrowattProfile::default())
    }

    pub fn growatt_as(unit: u8, profile: &GrowattProfile) -> Self {
        let (input, holding) = growatt::banks(unit, profile);
        let memory = Memory {
            locked: profile.memory_state_locked,
            nonvolatile_writes: 0,
        };
        let model = Model::Growatt(GrowattValues::default());
        Self::new(
            model,
            input,
            holding,
            EXCEPTION_ILLEGAL_FUNCTION,
            Some(memory),
            profile.nameplate_w,
        )
    }

    fn new(
        model: Model,
        input: Bank,
        holding: Bank,
        absent_range: u8,
        memory: Option<Memory>,
        nameplate_w: f64,
    ) -> Self {
        let mut d = Self {
            model,
            input,
            holding,
            input_overrides: Vec::new(),
            absent_range,
            memory,
            nameplate_w,
        };
        d.refresh();
        d
    }

    /// A Modbus read of `count` registers at `addr`: the words, or the exception code (the
    /// device's absent-range exception when no range of it holds `addr`).
    pub fn read(&mut self, kind: RegisterKind, addr: u16, count: u16) -> Result<Vec<u16>, u8> {
        let absent = self.absent_range;
        let bank = match kind {
            RegisterKind::Holding => &mut self.holding,
            RegisterKind::Input => &mut self.input,
        };
        if !bank.contains(addr) {
            return Err(absent);
        }
        bank.read(addr, count).map(<[u16]>::to_vec)
    }

    /// A Modbus write of holding registers, with the device's semantics (a Growatt's HR2).
    pub fn write_holding(&mut self, addr: u16, values: &[u16]) -> Result<(), u8> {
        if !self.holding.contains(addr) {
            return Err(self.absent_range);
        }
        match &mut self.memory {
            Some(memory) => memory.write(&mut self.holding, addr, values)?,
            None => self.holding.write(addr, values)?,
        }
        self.refresh();
        Ok(())
    }

    /// A night on a PV-powered unit: what returns to its initial value at the next power-up.
    /// False for a device that is not PV-powered.
    pub fn power_up(&mut self) -> bool {
        let Some(memory) = &self.memory else {
            return false;
        };
        memory.power_up(&mut self.holding);
        self.refresh();
        true
    }

    /// Writes of remembered registers made while HR2 read 1 (0 for a meter).
    pub fn nonvolatile_writes(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.nonvolatile_writes)
    }

    /// Locks (or unlocks) a Growatt's HR2 against writes; false for a meter.
    pub fn lock_memory_state(&mut self, locked: bool) -> bool {
        match &mut self.memory {
            Some(memory) => {
                memory.locked = locked;
                true
            }
            None => false,
        }
    }

    /// Sets a named quantity (see [`Device::names`]); false for an unknown name.
    pub fn set(&mut self, name: &str, value: f64) -> bool {
        let found = match (&mut self.model, name) {
            (Model::Growatt(g), "pv_power") => {
                g.set_pv_power(value);
                true
            }
            _ => match self.slot(name) {
                Some(slot) => {
                    *slot = value;
                    true
                }
                None => false,
            },
        };
        self.refresh();
        found
    }

    pub fn get(&mut self, name: &str) -> Option<f64> {
        match (&self.model, name) {
            (Model::Growatt(g), "pv_power") => Some(g.pv_power()),
            _ => self.slot(name).map(|v| *v),
        }
    }

    /// The settable names of this model.
    pub fn names(&self) -> &'static [&'static str] {
        match self.model {
            Model::Meter(_) => MeterValues::NAMES,
            Model::Growatt(_) => GrowattValues::NAMES,
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut f64> {
        match &mut self.model {
            Model::Meter(m) => m.slot(name),
            Model::Growatt(g) => g.slot(name),
        }
    }

    /// Writes a raw register; input overrides stick across refreshes.
    pub fn set_raw(&mut self, kind: RegisterKind, addr: u16, value: u16) -> Result<(), u8> {
        match kind {
            RegisterKind::Holding => {
                self.holding.write(addr, &[value])?;
                self.refresh();
                Ok(())
            }
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

    /// Integrates energies over `dt`.
    pub fn integrate(&mut self, dt: Duration) {
        match &mut self.model {
            Model::Meter(m) => m.integrate(dt),
            Model::Growatt(g) => g.integrate(dt),
        }
        self.refresh();
    }

    /// Recomputes the input registers from the values.
    pub fn refresh(&mut self) {
        match &self.model {
            Model::Meter(m) => m.refresh(&mut self.input),
            Model::Growatt(g) => {
                g.refresh(&mut self.input);
                growatt::refresh_applied_cap(&mut self.input, &mut self.holding, self.nameplate_w);
            }
        }
        for &(addr, value) in &self.input_overrides {
            self.input.set(addr, value);
        }
    }
}

/// Steps the plant model: `inverter` follows its power rate, `meter` sees the difference.
pub(crate) fn step_plant(plant: &Plant, dt: Duration, meter: &mut Device, inverter: &mut Device) {
    let rate = plant::power_rate(&mut inverter.holding);
    let rated_w = inverter.nameplate_w;
    if let (Model::Meter(m), Model::Growatt(g)) = (&mut meter.model, &mut inverter.model) {
        plant.step(dt, rate, rated_w, m, g);
    }
    inverter.refresh();
    meter.refresh();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::EXCEPTION_ILLEGAL_VALUE;

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
        g.set("pv_power", 1000.0);
        assert!((g.get("pv_power").unwrap() - 1000.0).abs() < 1e-9);
        assert_eq!(g.get("pv1_power"), Some(550.0));
    }

    #[test]
    fn hr2_decides_what_a_night_resets_and_what_is_stored() {
        let mut g = Device::growatt(1);
        assert_eq!(g.holding.get(3), Some(255), "factory: not limited");
        g.write_holding(3, &[40]).unwrap();
        assert_eq!(g.nonvolatile_writes(), 0);
        assert!(g.power_up());
        assert_eq!(g.holding.get(3), Some(255), "HR2 = 0: back to 255");
        g.write_holding(2, &[1]).unwrap();
        g.write_holding(3, &[40]).unwrap();
        assert_eq!(g.nonvolatile_writes(), 1);
        g.power_up();
        assert_eq!(g.holding.get(3), Some(40), "HR2 = 1: kept");
        // A locked HR2 acknowledges the write and stays 1.
        g.lock_memory_state(true);
        g.write_holding(2, &[0]).unwrap();
        assert_eq!(g.holding.get(2), Some(1));
        // Outside the documented ranges: Illegal Data Value.
        assert_eq!(g.write_holding(3, &[101]), Err(EXCEPTION_ILLEGAL_VALUE));
        assert_eq!(g.write_holding(123, &[(-1001i16) as u16]), Err(3));
        g.write_holding(123, &[(-1000i16) as u16]).unwrap();
        // The cap it applies, inputs 101–103: 40 % of 4200 W.
        assert_eq!(g.input.get(101), Some(40));
        assert_eq!(g.input.get_u32(102), Some(16_800));
        let mut meter = Device::sdm230(2);
        assert!(!meter.power_up());
    }

    #[test]
    fn ranges_a_unit_lacks_answer_its_exception() {
        let mut xe = Device::growatt(1);
        assert!(xe.read(RegisterKind::Holding, 209, 15).is_ok());
        let mut tlx = Device::growatt_as(1, &GrowattProfile::MIN_6000TL_X);
        assert_eq!(
            tlx.read(RegisterKind::Holding, 209, 15),
            Err(EXCEPTION_ILLEGAL_FUNCTION)
        );
        assert_eq!(
            tlx.write_holding(209, &[1]),
            Err(EXCEPTION_ILLEGAL_FUNCTION)
        );
        let serial = tlx.read(RegisterKind::Holding, 3001, 5).unwrap();
        assert_eq!(serial[0], u16::from_be_bytes(*b"NT"));
        assert_eq!(
            tlx.read(RegisterKind::Holding, 43, 2).unwrap(),
            [5200, 0x0201]
        );
        // The meter: Illegal Data Address, and no identification block when told so.
        let mut meter = Device::meter(2, &MeterProfile::SDM230_NO_IDENT);
        assert_eq!(
            meter.read(RegisterKind::Holding, 0xFC00, 4),
            Err(EXCEPTION_ILLEGAL_ADDRESS)
        );
        let mut sdm630 = Device::meter(2, &MeterProfile::SDM630);
        assert_eq!(
            sdm630.read(RegisterKind::Holding, 0xFC02, 1).unwrap(),
            [112]
        );
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
        step_plant(&plant, Duration::from_secs(1), &mut meter, &mut inv);
        assert!((inv.get("ac_power").unwrap() - 1000.0).abs() < 1e-6);
        for _ in 0..5 {
            step_plant(&plant, Duration::from_secs(1), &mut meter, &mut inv);
        }
        // 50 % of 4200 W.
        assert!((inv.get("ac_power").unwrap() - 2100.0).abs() < 1e-6);
        assert!((meter.get("power").unwrap() - (500.0 - 2100.0)).abs() < 1e-6);
    }
}
