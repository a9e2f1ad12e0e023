//! The simulator as a process: SDM230 + Growatt on a pty, PATH a symlink to its slave.
//! Commands on stdin, one per line:
//!   set <unit> <name> <value>      a named value (`names <unit>` lists them)
//!   set <unit> hr<addr>|ir<addr> <value>   a raw register
//!   get <unit> <name>|hr<addr>|ir<addr>
//!   plant <load W> <pv available W> [ramp W/s] | plant off
//!   fault <unit> <offline|slow MS|crc|garbage|truncated|exception CODE|wrong-unit|late|none> [once]
//!   writes
//!   model <unit> <name>            another device at the unit, fresh from the factory
//!                                  (min-4200tl-xe, min-6000tl-x, mid-15ktl3-x, sph-5000tl-bl;
//!                                  sdm230, sdm230-no-ident, sdm120, sdm630)
//!   night <unit>                   the inverter's power-up after a night (HR3 back to 255
//!                                  unless HR2 = 1)
//!   hr2-locked <unit> on|off       HR2 writes acknowledged but not applied
//!   nv-writes <unit>               writes of HR3/4/5/99 made while HR2 read 1
//!   meter-silence on|off           the SDM230's 60 ms silence rule
//! Runs until killed; stdin EOF leaves it serving (the demo runs it in the background).

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use modbus_sim::{
    FaultKind, GrowattProfile, LineSettings, MeterProfile, MeterSilence, Parity, Plant,
    RegisterKind, SimConfig, SimHandle, Simulator,
};

const USAGE: &str = "usage: modbus-sim --link PATH [--baud 9600] [--even-parity] [--realistic] \
[--turnaround-ms 20] [--meter-unit 2] [--growatt-unit 1] [--plant]
  [--growatt-model min-4200tl-xe|min-6000tl-x|mid-15ktl3-x|sph-5000tl-bl]
  [--growatt-device-type CODE] [--growatt-hr44 WORD] [--growatt-rated-va TENTHS]
  [--growatt-hr2 0|1] [--growatt-hr2-locked]
  [--meter-model sdm230|sdm230-no-ident|sdm120|sdm630] [--meter-code CODE]
  [--meter-silence auto|on|off]";

/// The Growatt of the command line: a named model, then single registers overridden.
fn growatt_profile(args: &mut pico_args::Arguments) -> Result<GrowattProfile> {
    let mut p = match args.opt_value_from_str::<_, String>("--growatt-model")? {
        Some(name) => GrowattProfile::by_name(&name)
            .with_context(|| format!("unknown Growatt model {name:?}"))?,
        None => GrowattProfile::default(),
    };
    if let Some(code) = args.opt_value_from_str("--growatt-device-type")? {
        p.device_type = code;
    }
    if let Some(word) = args.opt_value_from_str("--growatt-hr44")? {
        p.trackers_phases = word;
    }
    if let Some(tenths) = args.opt_value_from_str("--growatt-rated-va")? {
        p.rated_va_tenths = tenths;
    }
    if let Some(state) = args.opt_value_from_str("--growatt-hr2")? {
        p.memory_state = state;
    }
    p.memory_state_locked |= args.contains("--growatt-hr2-locked");
    Ok(p)
}

fn meter_profile(args: &mut pico_args::Arguments) -> Result<MeterProfile> {
    let mut p = match args.opt_value_from_str::<_, String>("--meter-model")? {
        Some(name) => {
            MeterProfile::by_name(&name).with_context(|| format!("unknown meter {name:?}"))?
        }
        None => MeterProfile::default(),
    };
    if let Some(code) = args.opt_value_from_str("--meter-code")? {
        p.code = code;
    }
    Ok(p)
}

fn main() -> Result<()> {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        println!("{USAGE}");
        return Ok(());
    }
    let link: String = args.value_from_str("--link").context(USAGE)?;
    let baud: u32 = args.opt_value_from_str("--baud")?.unwrap_or(9600);
    let parity = if args.contains("--even-parity") {
        Parity::Even
    } else {
        Parity::None
    };
    let realistic = args.contains("--realistic");
    let turnaround_ms: u64 = args.opt_value_from_str("--turnaround-ms")?.unwrap_or(20);
    let meter_unit: u8 = args.opt_value_from_str("--meter-unit")?.unwrap_or(2);
    let growatt_unit: u8 = args.opt_value_from_str("--growatt-unit")?.unwrap_or(1);
    let plant = args.contains("--plant").then(Plant::default);
    let meter_silence = match args
        .opt_value_from_str::<_, String>("--meter-silence")?
        .as_deref()
    {
        None | Some("auto") => MeterSilence::WhenRealistic,
        Some("on") => MeterSilence::Always,
        Some("off") => MeterSilence::Never,
        Some(other) => bail!("--meter-silence {other}: expected auto, on or off\n{USAGE}"),
    };
    let growatt = growatt_profile(&mut args)?;
    let meter = meter_profile(&mut args)?;
    let rest = args.finish();
    if !rest.is_empty() {
        bail!("unexpected arguments {rest:?}\n{USAGE}");
    }
    let sim = Simulator::start(SimConfig {
        meter_unit: Some(meter_unit),
        growatt_unit: Some(growatt_unit),
        meter,
        growatt,
        serial: LineSettings { baud, parity },
        realistic,
        turnaround: Duration::from_millis(turnaround_ms),
        plant,
        print_writes: true,
        meter_silence,
    })
    .context("starting the simulator")?;
    // Replace a link left by an earlier run; refuse to clobber anything else.
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)?,
        Ok(_) => bail!("{link} exists and is not a symlink"),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(sim.tty_path(), &link)
        .with_context(|| format!("linking {link} to {}", sim.tty_path()))?;
    println!("modbus-sim: {link} -> {}", sim.tty_path());

    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match command(&sim, &line) {
            Ok(Some(out)) => println!("{out}"),
            Ok(None) => {}
            Err(e) => println!("error: {e:#}"),
        }
    }
    loop {
        std::thread::park();
    }
}

fn register_name(name: &str) -> Option<(RegisterKind, u16)> {
    let (kind, addr) = if let Some(a) = name.strip_prefix("hr") {
        (RegisterKind::Holding, a)
    } else {
        (RegisterKind::Input, name.strip_prefix("ir")?)
    };
    let addr = match addr.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16).ok()?,
        None => addr.parse().ok()?,
    };
    Some((kind, addr))
}

fn command(sim: &SimHandle, line: &str) -> Result<Option<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [] => Ok(None),
        ["set", unit, name, value] => {
            let unit: u8 = unit.parse()?;
            match register_name(name) {
                Some((kind, addr)) => sim.set_raw(unit, kind, addr, value.parse()?)?,
                None => sim.set(unit, name, value.parse()?)?,
            }
            Ok(None)
        }
        ["get", unit, name] => {
            let unit: u8 = unit.parse()?;
            Ok(Some(match register_name(name) {
                Some((kind, addr)) => sim.register(unit, kind, addr)?.to_string(),
                None => sim.get(unit, name)?.to_string(),
            }))
        }
        ["names", unit] => Ok(Some(sim.names(unit.parse()?)?.join(" "))),
        ["plant", "off"] => {
            sim.set_plant(None);
            Ok(None)
        }
        ["plant", load, pv, ramp @ ..] => {
            let mut plant = Plant {
                load_w: load.parse()?,
                pv_available_w: pv.parse()?,
                ..Plant::default()
            };
            if let [ramp] = ramp {
                plant.ramp_w_per_s = ramp.parse()?;
            }
            sim.set_plant(Some(plant));
            Ok(None)
        }
        ["fault", unit, rest @ ..] => {
            let unit: u8 = unit.parse()?;
            let once = rest.last() == Some(&"once");
            let args = if once {
                rest.get(..rest.len() - 1).unwrap_or(&[])
            } else {
                rest
            };
            let kind = match args {
                ["none"] => {
                    sim.clear_fault(unit);
                    return Ok(None);
                }
                ["offline"] => FaultKind::Offline,
                ["slow", ms] => FaultKind::Slow(Duration::from_millis(ms.parse()?)),
                ["crc"] => FaultKind::Crc,
                ["garbage"] => FaultKind::Garbage,
                ["truncated"] => FaultKind::Truncated,
                ["exception", code] => FaultKind::Exception(code.parse()?),
                ["wrong-unit"] => FaultKind::WrongUnit,
                ["late"] => FaultKind::Late,
                _ => bail!("unknown fault {args:?}"),
            };
            sim.fault(unit, kind, !once);
            Ok(None)
        }
        ["meter-silence", "on"] => {
            sim.set_meter_silence(true);
            Ok(None)
        }
        ["meter-silence", "off"] => {
            sim.set_meter_silence(false);
            Ok(None)
        }
        ["writes"] => Ok(Some(
            sim.writes()
                .iter()
                .map(|w| {
                    let t =
                        w.at.duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs_f64();
                    format!("{t:.3} unit {} hr {} = {}", w.unit, w.addr, w.value)
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )),
        ["model", unit, name] => {
            let unit: u8 = unit.parse()?;
            let replaced = match (GrowattProfile::by_name(name), MeterProfile::by_name(name)) {
                (Some(g), _) => sim.names(unit)?.contains(&"pv_power") && sim.replace_growatt(&g),
                (_, Some(m)) => sim.names(unit)?.contains(&"import_kwh") && sim.replace_meter(&m),
                _ => bail!("unknown model {name:?}"),
            };
            if !replaced {
                bail!("unit {unit} is not a device of that kind");
            }
            Ok(None)
        }
        ["night", unit] => {
            sim.power_up(unit.parse()?)?;
            Ok(None)
        }
        ["hr2-locked", unit, on @ ("on" | "off")] => {
            sim.lock_memory_state(unit.parse()?, *on == "on")?;
            Ok(None)
        }
        ["nv-writes", unit] => Ok(Some(sim.nonvolatile_writes(unit.parse()?)?.to_string())),
        _ => bail!("unknown command {line:?}"),
    }
}
