//! `--probe`: identify one unit and print its registers, then exit. `--models`: list the models.

use std::io::Write;

use anyhow::{Context, bail};

use crate::cli::Options;
use crate::devices::{Explained, MODELS, Model, Quantity, Recognition, RegisterReader};
use crate::modbus::{ReadFunction, RtuMaster};
use crate::registers::{Access, Kind, RegisterMap, decode_number, decode_text};

pub fn list_models(out: &mut impl Write) -> std::io::Result<()> {
    for m in MODELS {
        writeln!(
            out,
            "{:<24} role {:<11} vendor {}",
            m.name, m.roles.default, m.vendor
        )?;
    }
    Ok(())
}

/// Identifies the unit in `opts.units[0]` and prints what it is and every register of its model.
pub fn probe(opts: &Options, out: &mut impl Write) -> anyhow::Result<()> {
    let Some(spec) = opts.units.first() else {
        bail!("no unit to probe")
    };
    let settings = super::port::serial_settings(opts.even_parity, spec.port.baud);
    let mut master = RtuMaster::open(&spec.port.path, settings)
        .with_context(|| format!("opening {}", spec.port.path))?;
    let mut buf = [0u16; 125];
    let interval = opts.command_interval(spec.unit);
    master.set_pacing(spec.unit, super::port::unit_pacing(None, interval));
    let overrides = super::port::IdentifyOverrides {
        forced: opts.forced_models.clone(),
        rated_power_w: opts.rated_power_w,
    };
    let recognition = super::port::identify(&mut master, spec.unit, &overrides)
        .with_context(|| format!("unit {} on {} does not answer", spec.unit, spec.port.path))?;
    let ctx = overrides.context(spec.unit);
    let mut explain = |model: &Model, out: &mut dyn Write| -> std::io::Result<()> {
        // From here on the unit's own pace.
        master.set_pacing(spec.unit, super::port::unit_pacing(Some(model), interval));
        let mut regs = super::port::UnitRegisters::new(&mut master, spec.unit);
        let regs: &mut dyn RegisterReader = &mut regs;
        writeln!(out, "identification and set-up, and what the daemon does:")?;
        for Explained {
            register,
            value,
            meaning,
            action,
        } in (model.explain)(regs, &ctx, opts.export_limit_w)
        {
            writeln!(out, "  {register:<12} {value:<14} {meaning}")?;
            writeln!(out, "  {:<12} {:<14} -> {action}", "", "")?;
        }
        Ok(())
    };
    let id = match recognition {
        Recognition::Found(id) => id,
        Recognition::Unsupported { model, why } => {
            writeln!(
                out,
                "unit {} on {}: {}, not driven",
                spec.unit, spec.port.path, model.name
            )?;
            explain(model, out)?;
            bail!("{why}")
        }
        Recognition::Other => bail!(
            "unit {} on {} answers but is not a supported model (see --models)",
            spec.unit,
            spec.port.path
        ),
    };
    writeln!(
        out,
        "unit {} on {}: {}",
        spec.unit, spec.port.path, id.model.name
    )?;
    writeln!(
        out,
        "  serial {}  firmware {}  hardware {}  model code {}",
        id.serial, id.firmware, id.hardware, id.code
    )?;
    writeln!(out, "  {}", id.details)?;
    if let Some(rating) = &id.rating {
        match rating.watts {
            Some(w) => writeln!(out, "  rated power {w:.0} W ({})", rating.source)?,
            None => writeln!(out, "  {}", rating.source)?,
        }
    }
    explain(id.model, out)?;
    writeln!(out, "registers:")?;
    let mut map = RegisterMap::new(id.model.registers, id.model.limits);
    for r in id.model.registers {
        let f = match r.access {
            Access::Holding => ReadFunction::Holding,
            Access::Input => ReadFunction::Input,
        };
        let words = &mut buf[..r.kind.words() as usize];
        let shown = match master.read_registers(spec.unit, f, r.addr, words) {
            Ok(()) => {
                let read = crate::registers::Read {
                    access: r.access,
                    addr: r.addr,
                    count: r.kind.words(),
                    fast: false,
                };
                map.store(&read, words, std::time::Instant::now());
                match r.kind {
                    Kind::Text { .. } => format!("{:?}", decode_text(words)),
                    k => decode_number(k, words)
                        .map_or("not finite".into(), |v| format!("{}", v * r.scale)),
                }
            }
            Err(e) => format!("error: {e}"),
        };
        let table = if r.access == Access::Holding {
            "holding"
        } else {
            "input"
        };
        writeln!(
            out,
            "  {table:<7} {:>5} {:<28} {shown}  {words:04x?}",
            r.addr, r.name
        )?;
    }
    writeln!(out, "published paths:")?;
    for (p, v) in id.model.published_values(&map) {
        let source = match p.quantity {
            Quantity::Reg(reg) => id.model.register_name(reg),
            Quantity::Derived(_) => "derived",
        };
        let shown = v.map_or("invalid".to_string(), |v| {
            format!("{v} {}", p.unit.suffix())
        });
        for path in p.paths() {
            writeln!(out, "  {path:<36} {shown:<16} ({source})")?;
        }
    }
    Ok(())
}
