//! The supported devices: one file per model with its register table and published paths as
//! data, plus what is common to all of them: identification, derived values and the lifecycle of
//! a unit on the bus (identify → online → lost → probe → online).
//!
//! Knows nothing of wire details or D-Bus plumbing: values come from a [`RegisterMap`] and leave
//! as `(path, Option<f64>)` pairs.

pub mod growatt;
pub mod lifecycle;
pub mod plausibility;
pub mod sdm230;

use crate::registers::{PackLimits, Register, RegisterMap, decode_number, decode_text, lookup};

/// A supported model.
#[derive(Debug, PartialEq)]
pub struct Model {
    pub name: &'static str,
    /// Vendor part of the settings ident and the service suffix (`<vendor>_<serial>`).
    pub vendor: &'static str,
    pub default_role: &'static str,
    pub allowed_roles: &'static [&'static str],
    pub registers: &'static [Register],
    pub limits: PackLimits,
    pub paths: &'static [PathDef],
    /// `/RefreshTime` (ms): how often the main measurement is refreshed.
    pub refresh_time_ms: i32,
    /// Register holding the rated power (W), if the model has one.
    pub rated_power_w: Option<&'static str>,
}

pub static MODELS: [&Model; 2] = [&sdm230::MODEL, &growatt::MODEL];

/// How a value is rendered in GetText.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Watt,
    VoltAmpere,
    Volt,
    Ampere,
    Hertz,
    KiloWattHour,
    Celsius,
    Percent,
    Seconds,
    /// A plain number (power factor).
    Plain,
    /// An integer code (status, error, mode): published as int32.
    Code,
}

impl Unit {
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Watt => "W",
            Unit::VoltAmpere => "VA",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Hertz => "Hz",
            Unit::KiloWattHour => "kWh",
            Unit::Celsius => "°C",
            Unit::Percent => "%",
            Unit::Seconds => "s",
            Unit::Plain | Unit::Code => "",
        }
    }

    pub fn decimals(self) -> usize {
        match self {
            Unit::Watt | Unit::VoltAmpere | Unit::Seconds | Unit::Code => 0,
            Unit::Volt | Unit::Celsius | Unit::Percent => 1,
            Unit::Ampere | Unit::Hertz | Unit::KiloWattHour | Unit::Plain => 2,
        }
    }
}

/// Where a published value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// A register's scaled value.
    Reg(&'static str),
    Derived(Derived),
}

/// Values computed from several registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Derived {
    /// The SDM230 reports current unsigned; systemcalc adds currents like powers, so sign it.
    CurrentSignedLikePower,
    /// Import − export energy (kWh).
    NetImport,
    /// Growatt status → Victron status code, throttled while derating.
    StatusCode,
}

/// One published path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathDef {
    pub path: &'static str,
    pub unit: Unit,
    pub quantity: Quantity,
}

impl PathDef {
    pub const fn new(path: &'static str, unit: Unit, quantity: Quantity) -> Self {
        PathDef {
            path,
            unit,
            quantity,
        }
    }
}

/// Register lookups by name, resolved once per unit.
pub struct Values<'a> {
    map: &'a RegisterMap,
}

impl<'a> Values<'a> {
    pub fn new(map: &'a RegisterMap) -> Self {
        Values { map }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.map.number(self.map.index(name)?)
    }

    /// The value of one published path; `None` = invalid (not read yet, or not finite).
    pub fn path_value(&self, q: Quantity) -> Option<f64> {
        match q {
            Quantity::Reg(name) => self.get(name),
            Quantity::Derived(d) => self.derived(d),
        }
    }

    fn derived(&self, d: Derived) -> Option<f64> {
        match d {
            Derived::CurrentSignedLikePower => {
                let current = self.get("current")?.abs();
                let power = self.get("power")?;
                Some(if power < 0.0 { -current } else { current })
            }
            Derived::NetImport => Some(self.get("import_energy")? - self.get("export_energy")?),
            Derived::StatusCode => {
                let status = self.get("status")? as u16;
                let code = lookup(growatt::STATUS_CODES, status)?;
                let derating = self.get("derating_mode").unwrap_or(0.0);
                Some(if code == 7 && derating != 0.0 {
                    12.0
                } else {
                    code as f64
                })
            }
        }
    }
}

/// What identification found on a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub model: &'static Model,
    pub serial: String,
    pub firmware: String,
    pub hardware: String,
    /// The model code read from the device, for the log.
    pub code: u16,
    pub rated_power_w: Option<f64>,
}

impl Identity {
    /// Settings ident and service suffix: `<vendor>_<serial>` reduced to `[A-Za-z0-9_]`.
    pub fn ident(&self) -> String {
        ident_for(self.model.vendor, &self.serial)
    }
}

/// `<vendor>_<serial>` with every character outside `[A-Za-z0-9_]` replaced, so it is a valid
/// settings ident and bus-name element (the vendor prefix keeps it from starting with a digit).
pub fn ident_for(vendor: &str, serial: &str) -> String {
    let serial: String = serial
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{vendor}_{serial}")
}

/// SDM230 identification from holding 0xFC00..0xFC03: serial (u32), meter code, firmware.
pub fn identify_sdm230(ident_words: &[u16]) -> Option<Identity> {
    let [hi, lo, code, fw] = ident_words else {
        return None;
    };
    let serial = decode_number(crate::registers::Kind::U32, &[*hi, *lo])? as u64;
    Some(Identity {
        model: &sdm230::MODEL,
        serial: serial.to_string(),
        firmware: format!("{:X}.{:02X}", fw >> 8, fw & 0xFF),
        hardware: format!("{code:04X}"),
        code: *code,
        rated_power_w: None,
    })
}

/// Growatt identification from holding 0..=44 and, if the unit has them, 209..=223 (new serial).
/// `None` when the block does not look like a Growatt (no rated power, no device type).
pub fn identify_growatt(hr0_44: &[u16], hr209_223: Option<&[u16]>) -> Option<Identity> {
    let rated = decode_number(crate::registers::Kind::U32, hr0_44.get(6..8)?)? * 0.1;
    let code = *hr0_44.get(43)?;
    if rated <= 0.0 || code == 0 {
        return None;
    }
    let new_serial = hr209_223.map(decode_text).unwrap_or_default();
    let old_serial = decode_text(hr0_44.get(growatt::SERIAL_OLD.0..growatt::SERIAL_OLD.1)?);
    let serial = if new_serial.is_empty() {
        old_serial
    } else {
        new_serial
    };
    if serial.is_empty() {
        return None;
    }
    Some(Identity {
        model: &growatt::MODEL,
        serial,
        firmware: decode_text(hr0_44.get(9..12)?),
        hardware: decode_text(hr0_44.get(12..15)?),
        code,
        rated_power_w: Some(rated),
    })
}

/// The published `(path, value)` pairs of a unit, in table order.
pub fn published_values<'a>(
    model: &'static Model,
    map: &'a RegisterMap,
) -> impl Iterator<Item = (&'static PathDef, Option<f64>)> + 'a {
    let values = Values::new(map);
    model
        .paths
        .iter()
        .map(move |p| (p, values.path_value(p.quantity)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{Access, Read};
    use std::time::Instant;

    fn f32_words(v: f32) -> [u16; 2] {
        let b = v.to_bits();
        [(b >> 16) as u16, b as u16]
    }

    fn sdm_map(power: f32, current: f32, import: f32, export: f32) -> RegisterMap {
        let mut map = RegisterMap::new(sdm230::MODEL.registers, sdm230::MODEL.limits);
        let now = Instant::now();
        let mut store = |addr: u16, v: f32| {
            let read = Read {
                access: Access::Input,
                addr,
                count: 2,
                fast: false,
            };
            map.store(&read, &f32_words(v), now);
        };
        store(0x000C, power);
        store(0x0006, current);
        store(0x0048, import);
        store(0x004A, export);
        map
    }

    fn value(model: &'static Model, map: &RegisterMap, path: &str) -> Option<f64> {
        published_values(model, map)
            .find(|(p, _)| p.path == path)
            .and_then(|(_, v)| v)
    }

    #[test]
    fn sdm230_current_is_signed_like_power_and_consumption_is_net_import() {
        let map = sdm_map(-920.0, 4.0, 1234.5, 234.5);
        let m = &sdm230::MODEL;
        assert_eq!(value(m, &map, "/Ac/L1/Power"), Some(-920.0));
        assert_eq!(value(m, &map, "/Ac/L1/Current"), Some(-4.0));
        assert_eq!(value(m, &map, "/Ac/Energy/Consumption"), Some(1000.0));
        assert_eq!(
            value(m, &map, "/Ac/Frequency"),
            None,
            "not read yet → invalid"
        );
        let map = sdm_map(500.0, 2.2, 1.0, 0.0);
        assert!((value(m, &map, "/Ac/Current").unwrap() - 2.2).abs() < 1e-6);
    }

    #[test]
    fn every_path_names_a_register_of_its_model() {
        for model in MODELS {
            for p in model.paths {
                if let Quantity::Reg(name) = p.quantity {
                    assert!(model.registers.iter().any(|r| r.name == name), "{}", p.path);
                }
            }
        }
    }

    #[test]
    fn growatt_status_maps_honestly() {
        let mut map = RegisterMap::new(growatt::MODEL.registers, growatt::MODEL.limits);
        let now = Instant::now();
        let m = &growatt::MODEL;
        let status = |map: &mut RegisterMap, s: u16, derating: u16| {
            map.store(
                &Read {
                    access: Access::Input,
                    addr: 0,
                    count: 1,
                    fast: false,
                },
                &[s],
                now,
            );
            map.store(
                &Read {
                    access: Access::Input,
                    addr: 104,
                    count: 1,
                    fast: false,
                },
                &[derating],
                now,
            );
            value(m, map, "/StatusCode")
        };
        assert_eq!(status(&mut map, 0, 0), Some(8.0));
        assert_eq!(status(&mut map, 1, 0), Some(7.0));
        assert_eq!(status(&mut map, 1, 7), Some(12.0));
        assert_eq!(status(&mut map, 3, 0), Some(10.0));
        assert_eq!(status(&mut map, 9, 0), None);
    }

    #[test]
    fn identifies_sdm230_and_growatt() {
        let id = identify_sdm230(&[0x0098, 0x9680, 0x0084, 0x0102]).unwrap();
        assert_eq!(id.serial, "10000000");
        assert_eq!(id.ident(), "eastron_10000000");
        assert_eq!(id.firmware, "1.02");
        assert_eq!(identify_sdm230(&[1, 2]), None);

        let mut hr = [0u16; 45];
        hr[6] = 0;
        hr[7] = 42000; // 4200.0 W
        hr[9..12].copy_from_slice(&[0x4142, 0x3132, 0x3334]); // "AB1234"
        hr[23..28].copy_from_slice(&[0x5158, 0x4142, 0x3132, 0x3334, 0x3536]); // "QXAB123456"
        hr[43] = 5100;
        let id = identify_growatt(&hr, None).unwrap();
        assert_eq!(id.serial, "QXAB123456");
        assert_eq!(id.rated_power_w, Some(4200.0));
        assert_eq!(id.firmware, "AB1234");
        let new = [0x4e45u16, 0x5731, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // "NEW1"
        assert_eq!(identify_growatt(&hr, Some(&new)).unwrap().serial, "NEW1");
        hr[43] = 0;
        assert_eq!(identify_growatt(&hr, None), None);
    }

    #[test]
    fn idents_are_safe_bus_name_elements() {
        assert_eq!(ident_for("growatt", "AB-12.3 x"), "growatt_AB_12_3_x");
    }
}
