//! A closed-loop limiter rig: private bus, settings stand-in, battery and vebus stand-ins, the
//! simulator (realistic 9600 baud timing, plant model) and the real daemon as a subprocess.
//! Used by tests/limiter_e2e.rs and benches/limiter_latency.rs; the daemon's path is passed in
//! because only test and bench crates know `CARGO_BIN_EXE_*`.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dbus::arg::{RefArg, Variant};
use dbus_modbus_client::modbus::SerialSettings;
use dbus_modbus_client::sim::{GROWATT_SERIAL, Plant, SimConfig, SimHandle, Simulator};
use dbus_modbus_client::vedbus::Value;

use super::{Client, FakeService, FakeSettings, PrivateBus, refarg_value};

pub const METER: u8 = 2;
pub const INVERTER: u8 = 1;
pub const HR3: u16 = 3;
pub const SETTINGS: &str = "com.victronenergy.settings";
pub const ENERGY_DIFFERENCE: &str = "/Settings/DynamicGeneration/energyDifference";
pub const DERATE_GENERATION: &str = "/Settings/DynamicGeneration/derateGeneration";
pub const MODE: &str = "/Settings/DynamicGeneration/Mode";
pub const EXPORT_LIMIT: &str = "/Settings/DynamicGeneration/ExportLimit";
/// Identification, G100 set-up and the first publish on a loaded machine.
pub const START_WAIT: Duration = Duration::from_secs(30);

pub fn pv_name() -> String {
    format!("com.victronenergy.pvinverter.growatt_{GROWATT_SERIAL}")
}

/// Polls `f` every 20 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The daemon as a subprocess, its log in a file; SIGKILLed on drop if still running.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(exe: &str, args: &[&str], log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().ok()?;
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HR3 write the simulator received.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hr3Write {
    pub at: SystemTime,
    pub percent: u16,
}

/// Everything the closed loop needs; fields drop in order (the daemon first).
pub struct LimiterRig {
    pub daemon: Daemon,
    pub client: Client,
    pub battery: FakeService,
    pub vebus: FakeService,
    pub sim: SimHandle,
    pub settings: FakeSettings,
    pub bus: PrivateBus,
}

impl LimiterRig {
    /// Starts everything and waits until the PV inverter's service is up and the G100 set-up
    /// is done. `before` runs on the bus before the daemon starts (e.g. to pre-create settings).
    /// `daemon_args` come after `-s TTY --dbus ADDRESS`.
    pub fn start(
        exe: &str,
        plant: Plant,
        daemon_args: &[&str],
        battery: &[(&str, Value)],
        vebus: &[(&str, Value)],
        before: impl FnOnce(&Client),
    ) -> LimiterRig {
        let bus = PrivateBus::start();
        let settings = FakeSettings::start(&bus.address);
        let battery = FakeService::start(&bus.address, "com.victronenergy.battery.test", battery);
        let vebus = FakeService::start(&bus.address, "com.victronenergy.vebus.test", vebus);
        let sim = Simulator::start(SimConfig {
            serial: SerialSettings::default(),
            realistic: true,
            plant: Some(plant),
            ..SimConfig::default()
        })
        .unwrap();
        let client = Client::connect(&bus.address);
        before(&client);
        let mut args = vec!["-s", sim.tty_path(), "--dbus", &bus.address];
        args.extend_from_slice(daemon_args);
        let log = std::env::temp_dir().join(format!(
            "limiter-rig-{}-{}.log",
            std::process::id(),
            next_rig_number()
        ));
        let daemon = Daemon::start(exe, &args, log);
        let rig = LimiterRig {
            daemon,
            client,
            battery,
            vebus,
            sim,
            settings,
            bus,
        };
        let up = wait_until(START_WAIT, || {
            rig.client.name_has_owner(&pv_name()) && rig.g100_setup_done()
        });
        assert!(up, "daemon did not come up; log:\n{}", rig.daemon.log());
        rig
    }

    /// Whether the simulated inverter has received the G100 fail-safe rate (HR3000, last write).
    fn g100_setup_done(&self) -> bool {
        self.sim
            .writes()
            .iter()
            .any(|w| w.unit == INVERTER && w.addr == 3000)
    }

    /// Every HR3 write to the inverter so far, oldest first.
    pub fn hr3_writes(&self) -> Vec<Hr3Write> {
        self.sim
            .writes()
            .into_iter()
            .filter(|w| w.unit == INVERTER && w.addr == HR3)
            .map(|w| Hr3Write {
                at: w.at,
                percent: w.value,
            })
            .collect()
    }

    /// The HR3 writes after the first `skip`.
    pub fn hr3_since(&self, skip: usize) -> Vec<u16> {
        self.hr3_writes()
            .into_iter()
            .skip(skip)
            .map(|w| w.percent)
            .collect()
    }

    /// Waits until more than `skip` HR3 writes exist; the new ones.
    pub fn wait_hr3_after(&self, skip: usize, timeout: Duration) -> Vec<u16> {
        wait_until(timeout, || self.hr3_writes().len() > skip);
        self.hr3_since(skip)
    }

    /// A path of the PV inverter's service (Invalid if unreadable).
    pub fn pv_value(&self, path: &str) -> Value {
        self.client
            .busitem(&pv_name(), path, "GetValue")
            .ok()
            .and_then(|m| m.read1::<Variant<Box<dyn RefArg>>>().ok())
            .map_or(Value::Invalid, |v| refarg_value(&*v.0))
    }

    pub fn status(&self) -> String {
        match self.pv_value("/dynamicGenerationStatus") {
            Value::Text(s) => s,
            other => format!("{other:?}"),
        }
    }

    /// Waits until `/dynamicGenerationStatus` reads `want`; the last text seen.
    pub fn wait_status(&self, want: &str, timeout: Duration) -> String {
        let mut last = String::new();
        wait_until(timeout, || {
            last = self.status();
            last == want
        });
        last
    }

    /// SetValue on the settings service; its return code.
    pub fn set_setting<T: dbus::arg::Arg + dbus::arg::Append>(&self, path: &str, v: T) -> i32 {
        self.client.set_value(SETTINGS, path, v)
    }

    /// SetValue of `/Ac/PowerLimit` on the PV inverter; its return code.
    pub fn set_power_limit(&self, watts: f64) -> i32 {
        self.client.set_value(&pv_name(), "/Ac/PowerLimit", watts)
    }

    /// Turns the limiter on in range: the simulator's consumption (import − export) is about
    /// 913 kWh, so 950 puts the offset at about −37 kWh.
    pub fn enable_limiter(&self) {
        assert_eq!(self.set_setting(ENERGY_DIFFERENCE, 950i32), 0);
        assert_eq!(self.set_setting(DERATE_GENERATION, 1i32), 0);
    }

    /// Changes the plant's house load, keeping the rest; the instant it took effect.
    pub fn set_load(&self, load_w: f64) -> Instant {
        let plant = self.sim.plant().unwrap_or_default();
        self.sim.set_plant(Some(Plant { load_w, ..plant }));
        Instant::now()
    }
}

fn next_rig_number() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The HR3 percent the limiter should write for a demand of `watts` on a 4200 W inverter
/// (limiter.md §1: ceil, clamped 2…100), computed independently of the daemon's code.
pub fn expected_percent(watts: f64) -> u16 {
    let mut p = 2u16;
    while p < 100 && f64::from(p) * 42.0 < watts {
        p += 1;
    }
    p
}
