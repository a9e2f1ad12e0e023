//! Eastron SDM230 Modbus: single-phase energy meter. Input registers hold IEEE 754 floats
//! (big-endian, two registers each); identification lives in holding registers 0xFC00..0xFC03:
//! serial, meter code (docs/reference/eastron-sdm230.md §4) and firmware. [`MeterProfile`]
//! selects the code and whether that block exists at all.

use std::time::Duration;

use crate::bank::Bank;

pub const METER_SERIAL: u32 = 21_034_567;
/// Meter code at 0xFC02 of an SDM230-Modbus (docs/reference/eastron-sdm230.md §4).
pub const METER_CODE: u16 = 43;
pub const METER_FIRMWARE: u16 = 0x0102;

/// Which Eastron meter the simulator serves: its code at 0xFC02 and whether it answers the
/// block at 0xFC00 at all (the SDM230 documents do not list it; a meter may refuse it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterProfile {
    pub name: &'static str,
    pub code: u16,
    pub ident_block: bool,
}

impl MeterProfile {
    pub const SDM230: MeterProfile = MeterProfile {
        name: "sdm230",
        code: METER_CODE,
        ident_block: true,
    };
    /// An SDM230 that answers 0xFC00–0xFC03 with Illegal Data Address.
    pub const SDM230_NO_IDENT: MeterProfile = MeterProfile {
        name: "sdm230-no-ident",
        code: METER_CODE,
        ident_block: false,
    };
    /// A single-phase SDM120 (code 32).
    pub const SDM120: MeterProfile = MeterProfile {
        name: "sdm120",
        code: 32,
        ident_block: true,
    };
    /// A three-phase SDM630 (code 112) answering the same single-phase input addresses (its L1
    /// values): what the daemon must refuse.
    pub const SDM630: MeterProfile = MeterProfile {
        name: "sdm630",
        code: 112,
        ident_block: true,
    };

    pub const ALL: [MeterProfile; 4] = [
        Self::SDM230,
        Self::SDM230_NO_IDENT,
        Self::SDM120,
        Self::SDM630,
    ];

    pub fn by_name(name: &str) -> Option<MeterProfile> {
        Self::ALL.into_iter().find(|p| p.name == name)
    }
}

impl Default for MeterProfile {
    fn default() -> Self {
        Self::SDM230
    }
}

/// The measured quantities the input registers are computed from.
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

impl Default for MeterValues {
    fn default() -> Self {
        Self {
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
        }
    }
}

/// Input and holding registers of a meter at `unit`, as it leaves the factory (1 stop bit, no
/// parity, 9600 baud).
pub(crate) fn banks(unit: u8, profile: &MeterProfile) -> (Bank, Bank) {
    // Blocks follow the original driver's read barriers (0x12, 0x46, 0x156).
    let input = Bank::with_blocks(&[
        (0x0000, 0x0012),
        (0x0012, 0x0026),
        (0x0046, 0x0050),
        (0x0156, 0x015A),
    ]);
    let ident: &[(u16, u16)] = if profile.ident_block {
        &[(0x0012, 0x001E), (0xFC00, 0xFC04)]
    } else {
        &[(0x0012, 0x001E)]
    };
    let mut holding = Bank::with_blocks(ident);
    holding.set_f32(0x0012, 0.0); // 1 stop bit, no parity
    holding.set_f32(0x0014, f64::from(unit));
    holding.set_f32(0x001C, 2.0); // 9600 baud
    holding.set_u32(0xFC00, METER_SERIAL);
    holding.set(0xFC02, profile.code);
    holding.set(0xFC03, METER_FIRMWARE);
    (input, holding)
}

impl MeterValues {
    /// The names `set`/`get` (and the process' `set UNIT NAME VALUE`) accept.
    pub const NAMES: &'static [&'static str] = &[
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
    ];

    pub(crate) fn slot(&mut self, name: &str) -> Option<&mut f64> {
        Some(match name {
            "voltage" => &mut self.voltage,
            "current" => &mut self.current,
            "power" => &mut self.power,
            "apparent" => &mut self.apparent,
            "reactive" => &mut self.reactive,
            "pf" => &mut self.pf,
            "angle" => &mut self.angle,
            "frequency" => &mut self.frequency,
            "import_kwh" => &mut self.import_kwh,
            "export_kwh" => &mut self.export_kwh,
            "import_kvarh" => &mut self.import_kvarh,
            "export_kvarh" => &mut self.export_kvarh,
            _ => return None,
        })
    }

    /// Import counts while power is positive, export while negative; reactive alike.
    pub(crate) fn integrate(&mut self, dt: Duration) {
        let hours = dt.as_secs_f64() / 3600.0;
        if self.power > 0.0 {
            self.import_kwh += self.power * hours / 1000.0;
        } else {
            self.export_kwh += -self.power * hours / 1000.0;
        }
        if self.reactive > 0.0 {
            self.import_kvarh += self.reactive * hours / 1000.0;
        } else {
            self.export_kvarh += -self.reactive * hours / 1000.0;
        }
    }

    /// Writes the values into the input registers.
    pub(crate) fn refresh(&self, input: &mut Bank) {
        for (addr, v) in [
            (0x0000, self.voltage),
            (0x0006, self.current),
            (0x000C, self.power),
            (0x0012, self.apparent),
            (0x0018, self.reactive),
            (0x001E, self.pf),
            (0x0024, self.angle),
            (0x0046, self.frequency),
            (0x0048, self.import_kwh),
            (0x004A, self.export_kwh),
            (0x004C, self.import_kvarh),
            (0x004E, self.export_kvarh),
            (0x0156, self.import_kwh + self.export_kwh),
            (0x0158, self.import_kvarh + self.export_kvarh),
        ] {
            input.set_f32(addr, v);
        }
    }
}
