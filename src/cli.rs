//! Command line, compatible with the original Python service's flags.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

pub const USAGE: &str = "\
dbus-modbus-client: Modbus RTU devices (Eastron SDM230, Growatt MIN/MID) on the Venus OS D-Bus

Usage: dbus-modbus-client [OPTIONS]

Options:
  -s, --serial PORT          serial port (default /dev/ttyUSB0; /dev/serial/by-id/... links work)
  -r, --rate BAUD            baud rate (default 9600)
      --parity none|even     parity, 8 data bits, 1 stop bit (default none)
  -m, --mode rtu             transport; only rtu is supported
  -F, --force-devices LIST   rtu:TTY:RATE:UNIT[,...] instead of the default units on --serial
                             (TTY a name under /dev or a full path)
      --meter-unit N         SDM230 unit id when -F is not given (default 2)
      --inverter-unit N      Growatt unit id when -F is not given (default 1)
  -x, --exit                 exit on a fatal error (serial port gone) so the supervisor restarts us
  -d, --debug                debug logging
      --dbus BUS             system, session or a D-Bus address (default: session if
                             DBUS_SESSION_BUS_ADDRESS is set, else system)
      --models               list the supported models and exit
  -P, --probe UNIT           identify one unit on --serial (or rtu:TTY:RATE:UNIT), print its
                             registers and exit
      --export-limit W       G100 export limit in W (default 3680)
      --rated-power W        inverter rated power if it cannot be read from the inverter
                             (HR6-7 reads 0)
      --force-model VENDOR:CODE[,...]
                             drive a unit reporting CODE (Growatt device type, Eastron meter
                             code) as VENDOR's model although its table refuses or lacks it,
                             e.g. growatt:5300
      --power-limit-timeout S  /Ac/PowerLimit keep-alive in external mode (default 60)
      --stale-grid S         grid reading age that triggers the G100 fail-safe (default 5)
      --publish-interval MS  minimum time between D-Bus updates of one service (default 200)
      --max-transaction MS   longest single Modbus read on the wire (default 100)
      --command-interval UNIT=MS[,UNIT=MS...]
                             minimum time between two commands to a unit, from the end of
                             one exchange to the next request (default: the model's, 400 for
                             the Growatt, none beyond its 60 ms silence for the SDM230; the
                             Growatt's protocol asks for 850, suggests 1000)
  -h, --help                 this text
  -V, --version              version
";

#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub path: String,
    pub baud: u32,
}

/// One unit to drive: which port, which Modbus unit id.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitSpec {
    pub port: PortSpec,
    pub unit: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub units: Vec<UnitSpec>,
    pub even_parity: bool,
    pub exit_on_fatal: bool,
    pub debug: bool,
    pub dbus: Option<String>,
    pub export_limit_w: f64,
    pub rated_power_w: Option<f64>,
    /// `--force-model`: `(vendor, code)` pairs.
    pub forced_models: Vec<(String, u16)>,
    pub power_limit_timeout: Duration,
    pub stale_grid: Duration,
    pub publish_interval: Duration,
    pub max_transaction: Duration,
    /// `--command-interval`: a unit's minimum interval between commands, overriding its model's.
    pub command_intervals: Vec<(u8, Duration)>,
}

impl Options {
    /// The interval `--command-interval` gives `unit`, if any.
    pub fn command_interval(&self, unit: u8) -> Option<Duration> {
        self.command_intervals
            .iter()
            .rev()
            .find(|(u, _)| *u == unit)
            .map(|(_, d)| *d)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run(Options),
    Probe(Options),
    Models,
    Help,
    Version,
}

#[derive(Debug, PartialEq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn err(msg: impl Into<String>) -> CliError {
    CliError(msg.into())
}

fn tty_path(tty: &str) -> String {
    if tty.contains('/') {
        tty.to_string()
    } else {
        format!("/dev/{tty}")
    }
}

/// Parses `rtu:TTY:RATE:UNIT`.
fn parse_device(spec: &str) -> Result<UnitSpec, CliError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [mode, tty, rate, unit] = parts.as_slice() else {
        return Err(err(format!(
            "bad device '{spec}': expected rtu:TTY:RATE:UNIT"
        )));
    };
    if *mode != "rtu" {
        return Err(err(format!(
            "bad device '{spec}': only rtu is supported, not '{mode}'"
        )));
    }
    if tty.is_empty() {
        return Err(err(format!("bad device '{spec}': empty TTY")));
    }
    Ok(UnitSpec {
        port: PortSpec {
            path: tty_path(tty),
            baud: parse_baud(rate)?,
        },
        unit: parse_unit(unit)?,
    })
}

fn parse_baud(s: &str) -> Result<u32, CliError> {
    match s.parse::<u32>() {
        Ok(b) if (1200..=115_200).contains(&b) => Ok(b),
        _ => Err(err(format!("bad baud rate '{s}': expected 1200..115200"))),
    }
}

fn parse_unit(s: &str) -> Result<u8, CliError> {
    match s.parse::<u8>() {
        Ok(u) if (1..=247).contains(&u) => Ok(u),
        _ => Err(err(format!("bad unit id '{s}': expected 1..247"))),
    }
}

/// Parses `VENDOR:CODE[,VENDOR:CODE...]`, the vendors those of the supported models.
fn parse_forced_models(list: &str) -> Result<Vec<(String, u16)>, CliError> {
    list.split(',')
        .map(|item| {
            let bad = || {
                let vendors: Vec<&str> = crate::devices::vendors().collect();
                err(format!(
                    "bad --force-model '{item}': expected VENDOR:CODE, VENDOR one of {}",
                    vendors.join(", ")
                ))
            };
            let (vendor, code) = item.split_once(':').ok_or_else(bad)?;
            if !crate::devices::vendors().any(|v| v == vendor) {
                return Err(bad());
            }
            let code = code.parse::<u16>().map_err(|_| bad())?;
            Ok((vendor.to_string(), code))
        })
        .collect()
}

fn parse_positive(name: &str, s: &str) -> Result<f64, CliError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(err(format!("bad {name} '{s}': expected a positive number"))),
    }
}

fn parse_secs(name: &str, s: &str) -> Result<Duration, CliError> {
    parse_positive(name, s).map(Duration::from_secs_f64)
}

fn parse_ms(name: &str, s: &str) -> Result<Duration, CliError> {
    parse_positive(name, s).map(|ms| Duration::from_secs_f64(ms / 1000.0))
}

/// The longest interval `--command-interval` accepts: beyond it a unit is hardly a live device.
const MAX_COMMAND_INTERVAL_MS: u64 = 10_000;

/// Parses `UNIT=MS[,UNIT=MS...]`.
fn parse_command_intervals(s: &str) -> Result<Vec<(u8, Duration)>, CliError> {
    s.split(',')
        .map(|item| {
            let (unit, ms) = item.split_once('=').ok_or_else(|| {
                err(format!(
                    "bad command interval '{item}': expected UNIT=MS, e.g. 1=850"
                ))
            })?;
            let ms = match ms.trim().parse::<u64>() {
                Ok(ms) if ms <= MAX_COMMAND_INTERVAL_MS => ms,
                _ => {
                    return Err(err(format!(
                        "bad command interval '{item}': expected 0..{MAX_COMMAND_INTERVAL_MS} ms"
                    )));
                }
            };
            Ok((parse_unit(unit.trim())?, Duration::from_millis(ms)))
        })
        .collect()
}

/// An option's value parsed by `parse`, when given.
fn opt_parsed<T>(
    args: &mut pico_args::Arguments,
    keys: impl Into<pico_args::Keys>,
    parse: impl FnOnce(&str) -> Result<T, CliError>,
) -> Result<Option<T>, CliError> {
    opt(args, keys)?.map(|v| parse(&v)).transpose()
}

/// A duration option read by `parse` (`parse_secs`, `parse_ms`), when given; errors name it
/// by its key ("--stale-grid" → "stale grid").
fn opt_duration(
    args: &mut pico_args::Arguments,
    key: &'static str,
    parse: fn(&str, &str) -> Result<Duration, CliError>,
) -> Result<Option<Duration>, CliError> {
    let name = key.trim_start_matches('-').replace('-', " ");
    opt_parsed(args, key, |v| parse(&name, v))
}

fn opt(
    args: &mut pico_args::Arguments,
    keys: impl Into<pico_args::Keys>,
) -> Result<Option<String>, CliError> {
    args.opt_value_from_str(keys)
        .map_err(|e| err(e.to_string()))
}

pub fn parse(args: Vec<OsString>) -> Result<Command, CliError> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    if args.contains("--models") {
        return Ok(Command::Models);
    }
    let exit_on_fatal = args.contains(["-x", "--exit"]);
    let debug = args.contains(["-d", "--debug"]);
    let serial = opt(&mut args, ["-s", "--serial"])?.unwrap_or_else(|| "/dev/ttyUSB0".into());
    let baud = opt(&mut args, ["-r", "--rate"])?
        .map(|r| parse_baud(&r))
        .transpose()?
        .unwrap_or(9600);
    let even_parity = match opt(&mut args, "--parity")?.as_deref() {
        None | Some("none") => false,
        Some("even") => true,
        Some(p) => return Err(err(format!("bad parity '{p}': expected none or even"))),
    };
    if let Some(mode) = opt(&mut args, ["-m", "--mode"])?
        && mode != "rtu"
    {
        return Err(err(format!("unsupported mode '{mode}': only rtu")));
    }
    let forced = opt(&mut args, ["-F", "--force-devices"])?;
    let meter_unit = opt_parsed(&mut args, "--meter-unit", parse_unit)?.unwrap_or(2);
    let inverter_unit = opt_parsed(&mut args, "--inverter-unit", parse_unit)?.unwrap_or(1);
    let probe = opt(&mut args, ["-P", "--probe"])?;
    let dbus = opt(&mut args, "--dbus")?;
    let export_limit_w = opt_parsed(&mut args, "--export-limit", |v| {
        parse_positive("export limit", v)
    })?
    .unwrap_or(3680.0);
    let rated_power_w = opt_parsed(&mut args, "--rated-power", |v| {
        parse_positive("rated power", v)
    })?;
    let forced_models =
        opt_parsed(&mut args, "--force-model", parse_forced_models)?.unwrap_or_default();
    let power_limit_timeout = opt_duration(&mut args, "--power-limit-timeout", parse_secs)?
        .unwrap_or(Duration::from_secs(60));
    let stale_grid =
        opt_duration(&mut args, "--stale-grid", parse_secs)?.unwrap_or(Duration::from_secs(5));
    let publish_interval = opt_duration(&mut args, "--publish-interval", parse_ms)?
        .unwrap_or(Duration::from_millis(200));
    let max_transaction = opt_duration(&mut args, "--max-transaction", parse_ms)?
        .unwrap_or(Duration::from_millis(100));
    let mut command_intervals = Vec::new();
    while let Some(list) = opt(&mut args, "--command-interval")? {
        command_intervals.extend(parse_command_intervals(&list)?);
    }
    let rest = args.finish();
    if let Some(extra) = rest.first() {
        return Err(err(format!(
            "unexpected argument '{}'",
            extra.to_string_lossy()
        )));
    }

    let port = PortSpec { path: serial, baud };
    let units = match (&probe, forced) {
        (Some(p), _) if p.starts_with("rtu:") => vec![parse_device(p)?],
        (Some(p), _) => vec![UnitSpec {
            port,
            unit: parse_unit(p)?,
        }],
        (None, Some(list)) => list
            .split(',')
            .map(parse_device)
            .collect::<Result<_, _>>()?,
        (None, None) => vec![
            UnitSpec {
                port: port.clone(),
                unit: inverter_unit,
            },
            UnitSpec {
                port,
                unit: meter_unit,
            },
        ],
    };
    let options = Options {
        units,
        even_parity,
        exit_on_fatal,
        debug,
        dbus,
        export_limit_w,
        rated_power_w,
        forced_models,
        power_limit_timeout,
        stale_grid,
        publish_interval,
        max_transaction,
        command_intervals,
    };
    Ok(if probe.is_some() {
        Command::Probe(options)
    } else {
        Command::Run(options)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(OsString::from).collect())
    }

    fn options(args: &[&str]) -> Options {
        match run(args).unwrap() {
            Command::Run(o) | Command::Probe(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_original_service() {
        let o = options(&["-x", "-s", "/dev/ttyUSB0", "-r", "9600"]);
        assert!(o.exit_on_fatal);
        let port = PortSpec {
            path: "/dev/ttyUSB0".into(),
            baud: 9600,
        };
        assert_eq!(
            o.units,
            vec![
                UnitSpec {
                    port: port.clone(),
                    unit: 1
                },
                UnitSpec { port, unit: 2 }
            ]
        );
        assert_eq!(o.export_limit_w, 3680.0);
        assert_eq!(o.max_transaction, Duration::from_millis(100));
        assert_eq!(o.command_interval(1), None);
    }

    #[test]
    fn command_intervals_are_per_unit_and_the_last_one_wins() {
        let o = options(&[
            "--command-interval",
            "1=850",
            "--command-interval",
            "2=0,1=1000",
        ]);
        assert_eq!(o.command_interval(1), Some(Duration::from_millis(1000)));
        assert_eq!(o.command_interval(2), Some(Duration::ZERO));
        assert_eq!(o.command_interval(3), None);
        for bad in ["1", "1=x", "0=850", "1=20000", "1=850,"] {
            assert!(run(&["--command-interval", bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn force_devices_takes_several_ports() {
        let o = options(&[
            "--force-devices",
            "rtu:ttyUSB0:9600:2,rtu:/dev/serial/by-id/x:19200:1",
            "-d",
        ]);
        assert!(o.debug);
        assert_eq!(o.units[0].port.path, "/dev/ttyUSB0");
        assert_eq!(o.units[0].unit, 2);
        assert_eq!(
            o.units[1].port,
            PortSpec {
                path: "/dev/serial/by-id/x".into(),
                baud: 19200
            }
        );
    }

    #[test]
    fn probe_takes_a_unit_or_a_device() {
        assert!(
            matches!(run(&["-P", "2", "-s", "/dev/ttyS1"]), Ok(Command::Probe(o)) if o.units[0].unit == 2 && o.units[0].port.path == "/dev/ttyS1")
        );
        assert!(
            matches!(run(&["--probe", "rtu:ttyS2:9600:7"]), Ok(Command::Probe(o)) if o.units[0].unit == 7)
        );
    }

    #[test]
    fn force_model_takes_vendor_code_pairs() {
        let o = options(&["--force-model", "growatt:5300,eastron:112"]);
        assert_eq!(
            o.forced_models,
            [("growatt".to_string(), 5300), ("eastron".to_string(), 112)]
        );
        assert!(options(&[]).forced_models.is_empty());
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        for bad in [
            &["-r", "fast"][..],
            &["-F", "tcp:1.2.3.4:502:1"],
            &["-F", "rtu:ttyUSB0:9600"],
            &["-F", "rtu:ttyUSB0:9600:0"],
            &["-m", "tcp"],
            &["--parity", "odd"],
            &["--export-limit", "-5"],
            &["--force-model", "growatt"],
            &["--force-model", "sma:5100"],
            &["--force-model", "growatt:x"],
            &["--force-model", "growatt:5100,eastron:70000"],
            &["--bogus"],
            &["-s"],
        ] {
            let e = run(bad).unwrap_err();
            assert!(!e.0.is_empty(), "{bad:?}");
        }
        assert_eq!(run(&["-h"]), Ok(Command::Help));
        assert_eq!(run(&["-V"]), Ok(Command::Version));
        assert_eq!(run(&["--models"]), Ok(Command::Models));
    }
}
