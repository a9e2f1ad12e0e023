//! Watching the bus: a recorder of signals with their arrival time, and the monitor that keeps
//! every published power and energy value and flags what must never be published.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dbus::Message;
use dbus::message::MessageType;

use crate::client::{Client, items_of};
use crate::worker::Worker;
use crate::{SETTINGS_SERVICE, Value};

/// A connection on its own thread that adds `rules` as match rules and hands every signal to
/// `on_signal` with the time it was read, until dropped.
pub struct Recorder {
    _worker: Worker,
}

impl Recorder {
    pub fn start(
        address: &str,
        rules: &[String],
        mut on_signal: impl FnMut(Instant, &Message) + Send + 'static,
    ) -> Recorder {
        let client = Client::connect(address);
        for rule in rules {
            client.add_match(rule);
        }
        let worker = Worker::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                if client
                    .ch
                    .read_write(Some(Duration::from_millis(20)))
                    .is_err()
                {
                    break;
                }
                let now = Instant::now();
                while let Some(m) = client.ch.pop_message() {
                    if m.msg_type() == MessageType::Signal {
                        on_signal(now, &m);
                    }
                }
            }
        });
        Recorder { _worker: worker }
    }
}

/// A power no SDM230 (100 A at 230 V) or MIN inverter can show.
pub const IMPOSSIBLE_POWER_W: f64 = 50_000.0;

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
    /// (time, well-known name, acquired) for the Victron services other than the settings.
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
                if name.starts_with("com.victronenergy.") && name != SETTINGS_SERVICE {
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

    /// Energy counters never go backwards, to 0 or non-finite; no non-finite or physically
    /// impossible power.
    fn check(&mut self, service: &str, path: &str, value: &Value) {
        let Some(v) = value.as_f64() else { return };
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

/// Watches every ItemsChanged and NameOwnerChanged on the bus, from before the services come.
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
            s.lock().unwrap_or_else(|e| e.into_inner()).on_signal(at, m);
        });
        Monitor {
            state,
            _recorder: recorder,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, MonitorState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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

    /// When `path` of `service` was published, all along.
    pub fn times(&self, service: &str, path: &str) -> Vec<Instant> {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.service == service && s.path == path)
            .map(|s| s.at)
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
}
