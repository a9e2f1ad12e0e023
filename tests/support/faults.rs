//! The fault suite's rig (tests/faults_e2e.rs): the real daemon on a private bus, the simulator
//! behind a symlink the daemon is given (so the port can disappear and come back), and a
//! monitor that watches every ItemsChanged and name change for the invariants that must hold
//! whatever the fault: energy counters never go backwards, to 0 or non-finite; no non-finite or
//! physically impossible power is published.

use super::*;
use dbus_modbus_client::sim::{GROWATT_SERIAL, METER_SERIAL, SimConfig, SimHandle, Simulator};

pub const METER: u8 = 2;
pub const INVERTER: u8 = 1;
/// Identification and registration of a unit that answers.
pub const ONLINE_WAIT: Duration = Duration::from_secs(20);
/// Generous bound on "a unit that stops answering disappears" (5 s loss timeout by design).
pub const GONE_WAIT: Duration = Duration::from_secs(8);
/// A power no SDM230 (100 A at 230 V) or MIN inverter can show.
pub const IMPOSSIBLE_POWER_W: f64 = 50_000.0;

pub fn grid_name() -> String {
    format!("com.victronenergy.grid.eastron_{METER_SERIAL}")
}
pub fn pv_name() -> String {
    format!("com.victronenergy.pvinverter.growatt_{GROWATT_SERIAL}")
}

/// One published value as seen in an ItemsChanged.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub service: String,
    pub path: String,
    pub value: Value,
}

#[derive(Default)]
pub struct MonitorState {
    /// Well-known name -> unique name of its current owner.
    owners: HashMap<String, String>,
    /// Every /Ac/Power and energy update, in arrival order.
    pub seen: Vec<Seen>,
    /// (time, well-known name, acquired) for our services.
    pub names: Vec<(Instant, String, bool)>,
    last_energy: BTreeMap<(String, String), f64>,
    pub violations: Vec<String>,
}

fn is_counter(path: &str) -> bool {
    // Consumption (import - export) legitimately falls while exporting: not a counter.
    path.contains("/Energy/") && !path.ends_with("/Consumption")
}

impl MonitorState {
    fn on_signal(&mut self, at: Instant, m: &Message) {
        match m.member().as_deref() {
            Some("NameOwnerChanged") => {
                let Ok((name, _old, new)) = m.read3::<String, String, String>() else {
                    return;
                };
                if name.starts_with("com.victronenergy.") && name != "com.victronenergy.settings" {
                    self.names.push((at, name.clone(), !new.is_empty()));
                    if new.is_empty() {
                        self.owners.remove(&name);
                    } else {
                        self.owners.insert(name, new);
                    }
                }
            }
            Some("ItemsChanged") => {
                let sender = m.sender().map(|s| s.to_string()).unwrap_or_default();
                let Some(service) = self
                    .owners
                    .iter()
                    .find(|(_, u)| **u == sender)
                    .map(|(n, _)| n.clone())
                else {
                    return; // an unregistered connection: nobody can address it
                };
                for (path, (value, _)) in items_of(m) {
                    self.check(&service, &path, &value);
                    if path == "/Ac/Power" || path.contains("/Energy/") {
                        self.seen.push(Seen {
                            at,
                            service: service.clone(),
                            path,
                            value,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn check(&mut self, service: &str, path: &str, value: &Value) {
        let v = match value {
            Value::Double(d) => *d,
            Value::Int(i) => f64::from(*i),
            _ => return,
        };
        if !v.is_finite() {
            self.violations
                .push(format!("{service} {path} = {v} (non-finite)"));
        }
        if path.ends_with("Power") && v.abs() > IMPOSSIBLE_POWER_W {
            self.violations
                .push(format!("{service} {path} = {v} (impossible)"));
        }
        if is_counter(path) {
            if v == 0.0 {
                self.violations.push(format!("{service} {path} went to 0"));
            }
            let key = (service.to_string(), path.to_string());
            if let Some(&last) = self.last_energy.get(&key)
                && v < last
            {
                self.violations
                    .push(format!("{service} {path} went backwards: {last} -> {v}"));
            }
            if v.is_finite() {
                self.last_energy.insert(key, v);
            }
        }
    }
}

/// Watches every ItemsChanged and NameOwnerChanged on the bus.
pub struct Monitor {
    pub state: Arc<Mutex<MonitorState>>,
    _recorder: Recorder,
}

impl Monitor {
    pub fn start(address: &str) -> Monitor {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let s = state.clone();
        let rules = [
            "type='signal',interface='com.victronenergy.BusItem',member='ItemsChanged'".to_string(),
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'".to_string(),
        ];
        let recorder = Recorder::start(address, &rules, move |at, m| {
            s.lock().unwrap().on_signal(at, m);
        });
        Monitor {
            state,
            _recorder: recorder,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, MonitorState> {
        self.state.lock().unwrap()
    }

    /// Updates of `path` of `service` in `[from, to]`.
    pub fn updates(&self, service: &str, path: &str, from: Instant, to: Instant) -> Vec<Seen> {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.service == service && s.path == path && s.at >= from && s.at <= to)
            .cloned()
            .collect()
    }

    /// How often `service` lost its name in `[from, to]`.
    pub fn releases(&self, service: &str, from: Instant, to: Instant) -> usize {
        self.lock()
            .names
            .iter()
            .filter(|(at, n, acquired)| n == service && !acquired && *at >= from && *at <= to)
            .count()
    }

    /// The longest gap between two grid /Ac/Power updates in `[from, to]` and their number.
    pub fn longest_grid_gap(&self, from: Instant, to: Instant) -> (Duration, usize) {
        let times: Vec<Instant> = self
            .updates(&grid_name(), "/Ac/Power", from, to)
            .iter()
            .map(|s| s.at)
            .collect();
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(Duration::MAX);
        (gap, times.len())
    }
}

#[derive(Clone, Default)]
pub struct RigOptions {
    /// Start the settings stand-in later (by hand) instead of before the daemon.
    pub no_settings: bool,
    /// More daemon arguments (e.g. `-x`).
    pub args: Vec<String>,
    /// A client takes this name before the daemon starts.
    pub take_name: Option<String>,
}

/// Bus, settings, simulator behind a symlink, monitor, daemon and a client.
pub struct Rig {
    pub client: Client,
    pub daemon: Daemon,
    /// The client holding `RigOptions::take_name`.
    pub squatter: Option<Client>,
    pub sim: Arc<SimHandle>,
    pub settings: Option<FakeSettings>,
    pub monitor: Monitor,
    /// What the daemon is given as its serial port: a symlink to the simulator's pty.
    pub link: PathBuf,
    dir: PathBuf,
    pub bus: PrivateBus,
}

pub fn start_sim() -> SimHandle {
    Simulator::start(SimConfig {
        // Real timing at 9600 baud: the bus is busy like on the GX, and the load stays low
        // with several rigs running in parallel.
        realistic: true,
        ..SimConfig::default()
    })
    .unwrap()
}

impl Rig {
    pub fn start(exe: &str, opts: RigOptions) -> Rig {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let bus = PrivateBus::start();
        let settings = (!opts.no_settings).then(|| FakeSettings::start(&bus.address));
        let sim = Arc::new(start_sim());
        let dir = std::env::temp_dir().join(format!(
            "faults-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("tty");
        std::os::unix::fs::symlink(sim.tty_path(), &link).unwrap();
        let monitor = Monitor::start(&bus.address);
        let client = Client::connect(&bus.address);
        let squatter = opts.take_name.as_ref().map(|name| {
            let c = Client::connect(&bus.address);
            let reply = c
                .call(
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "RequestName",
                    |m| m.append2(name.as_str(), 4u32),
                )
                .unwrap();
            assert_eq!(reply.read1::<u32>().unwrap(), 1, "could not take {name}");
            c
        });
        let link_s = link.to_str().unwrap().to_string();
        let mut args: Vec<&str> = vec!["-s", &link_s, "--dbus", &bus.address, "-r", "9600"];
        args.extend(opts.args.iter().map(String::as_str));
        let daemon = Daemon::start(exe, &args);
        Rig {
            client,
            daemon,
            squatter,
            sim,
            settings,
            monitor,
            link,
            dir,
            bus,
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.client.name_has_owner(name)
    }

    pub fn value(&self, name: &str, path: &str) -> Value {
        self.client.value(name, path).unwrap_or(Value::Invalid)
    }

    /// Both services registered with a live /Ac/Power.
    pub fn wait_online(&self) -> bool {
        wait_for(ONLINE_WAIT, || {
            [grid_name(), pv_name()]
                .iter()
                .all(|n| self.has(n) && self.value(n, "/Ac/Power").is_valid())
        })
    }

    /// Waits until `path` of `name` holds `want`.
    pub fn wait_value(&self, name: &str, path: &str, want: &Value, timeout: Duration) -> bool {
        wait_for(timeout, || self.value(name, path) == *want)
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

    /// Changes the meter's power every 40 ms until the guard is dropped, so every publish of
    /// the grid service carries a new /Ac/Power.
    pub fn vary_meter_power(&self) -> VaryPower {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, sim) = (stop.clone(), self.sim.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u32;
            while !s.load(Ordering::SeqCst) {
                // Export: the import counter stands still, the export counter rises.
                let _ = sim.set(METER, "power", -1000.0 - f64::from(i % 500));
                i += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        VaryPower {
            stop,
            thread: Some(thread),
        }
    }

    /// The port disappears: the link is removed and the simulator's pty closed.
    pub fn unplug(&mut self) {
        std::fs::remove_file(&self.link).unwrap();
        let placeholder = Arc::new(start_sim());
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

pub struct VaryPower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for VaryPower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lines of `log` containing `needle`.
pub fn lines_containing(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}
