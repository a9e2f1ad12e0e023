//! The end-to-end rig: a private bus, the settings stand-in, other Victron services as needed,
//! the simulator behind a symlink (so the port can disappear and come back), a monitor that
//! watches every ItemsChanged from the start, the real daemon as a subprocess and a client.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use modbus_sim::{GROWATT_SERIAL, METER_SERIAL, SimConfig, SimHandle, Simulator};

use crate::stats::{Gaps, gaps};
use crate::worker::{Worker, scratch_path};
use crate::{
    Client, Daemon, FakeService, FakeSettings, Monitor, PrivateBus, Setting, SettingValue, TIMEOUT,
    Value, wait_for,
};

/// The simulator's units: the meter and the inverter.
pub const METER: u8 = 2;
pub const INVERTER: u8 = 1;

/// The simulated meter's service, as the daemon names it.
pub fn grid_name() -> String {
    format!("com.victronenergy.grid.eastron_{METER_SERIAL}")
}

/// The simulated inverter's service.
pub fn pv_name() -> String {
    format!("com.victronenergy.pvinverter.growatt_{GROWATT_SERIAL}")
}

/// A Victron service stand-in to run beside the daemon: its name and paths.
pub type ServiceSpec = (String, Vec<(&'static str, Value)>);

#[derive(Clone, Default)]
pub struct RigOptions {
    pub sim: SimConfig,
    /// Start the settings stand-in later (by hand) instead of before the daemon.
    pub no_settings: bool,
    /// Daemon arguments after `-s PORT --dbus ADDRESS -r 9600`.
    pub args: Vec<String>,
    /// A client takes this name before the daemon starts.
    pub take_name: Option<String>,
    /// Services started before the daemon (battery, vebus, system).
    pub services: Vec<ServiceSpec>,
    /// What the settings stand-in holds when it starts (full paths), as a GX's settings file
    /// would: e.g. the entries an earlier driver left.
    pub settings: Vec<(String, Setting)>,
}

/// Everything of one end-to-end run; fields drop in order, the daemon first.
pub struct Rig {
    pub daemon: Daemon,
    pub client: Client,
    /// The client holding `RigOptions::take_name`.
    pub squatter: Option<Client>,
    pub services: Vec<FakeService>,
    pub monitor: Monitor,
    pub sim: Arc<SimHandle>,
    pub settings: Option<FakeSettings>,
    /// What the daemon is given as its serial port: a symlink to the simulator's pty.
    pub link: PathBuf,
    exe: String,
    sim_config: SimConfig,
    dir: PathBuf,
    pub bus: PrivateBus,
}

impl Rig {
    pub fn start(exe: &str, opts: RigOptions) -> Rig {
        Rig::start_with(exe, opts, |_, _| {})
    }

    /// Starts everything; `before` runs on the simulator and the bus before the daemon starts.
    pub fn start_with(
        exe: &str,
        opts: RigOptions,
        before: impl FnOnce(&SimHandle, &Client),
    ) -> Rig {
        let bus = PrivateBus::start();
        let settings = (!opts.no_settings)
            .then(|| FakeSettings::start_with(&bus.address, opts.settings.clone()));
        let services = opts
            .services
            .iter()
            .map(|(name, paths)| FakeService::start(&bus.address, name, paths))
            .collect();
        let sim = Arc::new(Simulator::start(opts.sim.clone()).unwrap());
        let dir = scratch_path("rig");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("tty");
        std::os::unix::fs::symlink(sim.tty_path(), &link).unwrap();
        let monitor = Monitor::start(&bus.address);
        let client = Client::connect(&bus.address);
        let squatter = opts.take_name.as_ref().map(|name| {
            let c = Client::connect(&bus.address);
            assert!(c.request_name(name), "could not take {name}");
            c
        });
        before(&sim, &client);
        let args: Vec<&str> = opts.args.iter().map(String::as_str).collect();
        let daemon = start_daemon(exe, &link, &bus, &args);
        Rig {
            daemon,
            client,
            squatter,
            services,
            monitor,
            sim,
            settings,
            link,
            exe: exe.to_string(),
            sim_config: opts.sim,
            dir,
            bus,
        }
    }

    /// Stops the daemon (SIGTERM) and starts a new one with these arguments.
    pub fn restart_daemon(&mut self, args: &[&str]) {
        self.daemon.stop();
        self.daemon = start_daemon(&self.exe, &self.link, &self.bus, args);
    }

    /// The serial port the daemon was given.
    pub fn port(&self) -> &str {
        self.link.to_str().unwrap()
    }

    /// The settings stand-in (panics if the rig runs without one).
    pub fn settings(&self) -> &FakeSettings {
        self.settings.as_ref().expect("no settings service")
    }

    /// The service stand-in named `name`.
    pub fn service(&self, name: &str) -> &FakeService {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} in the rig"))
    }

    pub fn has(&self, name: &str) -> bool {
        self.client.name_has_owner(name)
    }

    pub fn wait_service(&self, name: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.has(name))
    }

    /// GetValue of `path` of `name`; Invalid if the call fails.
    pub fn value(&self, name: &str, path: &str) -> Value {
        self.client.value(name, path).unwrap_or(Value::Invalid)
    }

    /// Waits until `path` of `name` holds `want`; the last value seen.
    pub fn wait_value(&self, name: &str, path: &str, want: &Value, timeout: Duration) -> Value {
        let mut last = Value::Invalid;
        wait_for(timeout, || {
            last = self.value(name, path);
            last == *want
        });
        last
    }

    /// Waits until the setting `path` holds `want`; the last value seen.
    pub fn wait_setting(&self, path: &str, want: SettingValue) -> Option<SettingValue> {
        let mut last = None;
        wait_for(TIMEOUT, || {
            last = self.settings().get(path);
            last.as_ref() == Some(&want)
        });
        last
    }

    /// Both services registered with a live /Ac/Power.
    pub fn wait_online(&self, timeout: Duration) -> bool {
        wait_for(timeout, || {
            [grid_name(), pv_name()]
                .iter()
                .all(|n| self.has(n) && self.value(n, "/Ac/Power").is_valid())
        })
    }

    /// The grid meter's /Ac/Power updates in `[from, to]`, as the monitor saw them.
    pub fn grid_gaps(&self, from: Instant, to: Instant) -> Gaps {
        gaps(&self.monitor.times(&grid_name(), "/Ac/Power"), from, to)
    }

    /// The daemon still runs, never panicked, and the monitor saw nothing forbidden.
    pub fn assert_healthy(&mut self) {
        assert!(
            self.daemon.exited().is_none(),
            "the daemon exited: {}",
            self.daemon.log()
        );
        let log = self.daemon.log();
        assert!(!log.contains("panicked"), "{log}");
        let violations = self.monitor.lock().violations.clone();
        assert!(violations.is_empty(), "{violations:#?}");
    }

    /// Changes the meter's power every `period` until the returned worker is dropped, so every publish of
    /// the grid service carries a new /Ac/Power. Exporting: the import counter stands still.
    pub fn vary_meter_power(&self, period: Duration) -> Worker {
        let sim = self.sim.clone();
        Worker::spawn(move |stop| {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let _ = sim.set(METER, "power", -1000.0 - f64::from(i % 500));
                i = i.wrapping_add(1);
                std::thread::sleep(period);
            }
        })
    }

    /// The port disappears: the link is removed and the simulator's pty closed.
    pub fn unplug(&mut self) {
        std::fs::remove_file(&self.link).unwrap();
        let placeholder = Arc::new(Simulator::start(self.sim_config.clone()).unwrap());
        let old = std::mem::replace(&mut self.sim, placeholder);
        drop(
            Arc::try_unwrap(old)
                .ok()
                .expect("the simulator is still in use"),
        );
    }

    /// The port comes back at the same path (a new pty behind the link).
    pub fn plug(&mut self) {
        std::os::unix::fs::symlink(self.sim.tty_path(), &self.link).unwrap();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_daemon(exe: &str, port: &std::path::Path, bus: &PrivateBus, extra: &[&str]) -> Daemon {
    let port = port.to_str().unwrap();
    let mut args = vec!["-s", port, "--dbus", &bus.address, "-r", "9600"];
    args.extend_from_slice(extra);
    Daemon::start(exe, &args)
}
