//! One simulated device: its model's values and the registers computed from them. The model
//! files (sdm230.rs, growatt.rs) hold each device's register map and physics.

use std::time::Duration;

use crate::bank::{Bank, RegisterKind};
use crate::growatt::{self, GrowattValues};
use crate::plant::{self, Plant};
use crate::sdm230::{self, MeterValues};

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
}

impl Device {
    pub fn sdm230(unit: u8) -> Self {
        let (input, holding) = sdm230::banks(unit);
        Self::new(Model::Meter(MeterValues::default()), input, holding)
    }

    pub fn growatt(unit: u8) -> Self {
        let (input, holding) = growatt::banks(unit);
        Self::new(Model::Growatt(GrowattValues::default()), input, holding)
    }

    fn new(model: Model, input: Bank, holding: Bank) -> Self {
        let mut d = Self {
            model,
            input,
            holding,
            input_overrides: Vec::new(),
        };
        d.refresh();
        d
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
            Model::Growatt(g) => g.refresh(&mut self.input),
        }
        for &(addr, value) in &self.input_overrides {
            self.input.set(addr, value);
        }
    }
}

/// Steps the plant model: `inverter` follows its power rate, `meter` sees the difference.
pub(crate) fn step_plant(plant: &Plant, dt: Duration, meter: &mut Device, inverter: &mut Device) {
    let (rate, rated_w) = plant::inverter_limits(&mut inverter.holding);
    if let (Model::Meter(m), Model::Growatt(g)) = (&mut meter.model, &mut inverter.model) {
        plant.step(dt, rate, rated_w, m, g);
    }
    inverter.refresh();
    meter.refresh();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::EXCEPTION_ILLEGAL_ADDRESS;

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
