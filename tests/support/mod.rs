//! Test support shared by the integration tests: a private `dbus-daemon`, a localsettings
//! stand-in following spec §6, a generic fake Victron service, and client helpers.
//!
//! ```ignore
//! let bus = PrivateBus::start();                  // killed on drop
//! let settings = FakeSettings::start(&bus.address); // com.victronenergy.settings
//! settings.get("/Settings/Devices/x/ClassAndVrmInstance");
//! let battery = FakeService::start(&bus.address, "com.victronenergy.battery.t", &[("/Soc", Value::Double(50.0))]);
//! battery.set("/Soc", Value::Double(51.0));
//! ```
// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod limiter;

use dbus::Message;
use dbus::arg::{ArgType, PropMap, RefArg, Variant};
use dbus::channel::Channel;
use dbus::message::MessageType;
use dbus_modbus_client::vedbus::{BusAddress, Format, Pump, Service, Value, Writable};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod faults;
pub mod rng;

/// Generous: only a hung peer makes a test wait this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Private bus

/// A `dbus-daemon` on a private unix socket, killed (and its directory removed) on drop.
pub struct PrivateBus {
    pub address: String,
    child: Child,
    dir: PathBuf,
}

impl PrivateBus {
    pub fn start() -> PrivateBus {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vedbus-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.join("socket").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            // Quiet: as non-root in a container it warns that it cannot raise its fd limit.
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus-daemon) must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        PrivateBus {
            address,
            child,
            dir,
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the daemon: a bus that does not read.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn bus(&self) -> BusAddress {
        BusAddress::Address(self.address.clone())
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Client helpers

/// A plain client connection (the "separate client" of the tests).
pub struct Client {
    pub ch: Channel,
}

impl Client {
    pub fn connect(address: &str) -> Client {
        let mut ch = Channel::open_private(address).unwrap();
        ch.register().unwrap();
        Client { ch }
    }

    pub fn call(
        &self,
        dest: &str,
        path: &str,
        iface: &str,
        method: &str,
        fill: impl FnOnce(Message) -> Message,
    ) -> Result<Message, dbus::Error> {
        let m = fill(Message::new_method_call(dest, path, iface, method).unwrap());
        self.ch.send_with_reply_and_block(m, TIMEOUT)
    }

    pub fn busitem(&self, dest: &str, path: &str, method: &str) -> Result<Message, dbus::Error> {
        self.call(dest, path, "com.victronenergy.BusItem", method, |m| m)
    }

    /// SetValue with a ready-made variant argument.
    pub fn set_value<T: dbus::arg::Arg + dbus::arg::Append>(
        &self,
        dest: &str,
        path: &str,
        v: T,
    ) -> i32 {
        self.call(dest, path, "com.victronenergy.BusItem", "SetValue", |m| {
            m.append1(Variant(v))
        })
        .unwrap()
        .read1::<i32>()
        .unwrap()
    }

    pub fn add_match(&self, rule: &str) {
        self.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "AddMatch",
            |m| m.append1(rule),
        )
        .unwrap();
    }

    pub fn name_has_owner(&self, name: &str) -> bool {
        self.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            |m| m.append1(name),
        )
        .unwrap()
        .read1::<bool>()
        .unwrap()
    }

    /// Waits for the next signal named `member` (other messages are dropped).
    pub fn next_signal(&self, member: &str, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(m) = self.ch.pop_message() {
                if m.msg_type() == MessageType::Signal && m.member().as_deref() == Some(member) {
                    return Some(m);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.ch.read_write(Some(deadline - now)).ok()?;
        }
    }

    /// Every signal named `member` that arrives within `window`.
    pub fn signals_within(&self, member: &str, window: Duration) -> Vec<Message> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(m) =
            self.next_signal(member, deadline.saturating_duration_since(Instant::now()))
        {
            out.push(m);
        }
        out
    }
}

/// A variant's content as a `Value` the way consumers unwrap it (any empty array = invalid).
pub fn refarg_value(a: &dyn RefArg) -> Value {
    match a.arg_type() {
        ArgType::Variant => a
            .as_iter()
            .and_then(|mut i| i.next().map(refarg_value))
            .unwrap_or(Value::Invalid),
        ArgType::Int32
        | ArgType::Int64
        | ArgType::UInt32
        | ArgType::Int16
        | ArgType::UInt16
        | ArgType::Byte => Value::Int(a.as_i64().unwrap() as i32),
        ArgType::Double => Value::Double(a.as_f64().unwrap()),
        ArgType::String => Value::Text(a.as_str().unwrap().to_string()),
        ArgType::Array => {
            let items: Vec<&dyn RefArg> = a.as_iter().unwrap().collect();
            if items.is_empty() {
                Value::Invalid
            } else {
                Value::TextList(
                    items
                        .iter()
                        .map(|i| i.as_str().unwrap().to_string())
                        .collect(),
                )
            }
        }
        t => panic!("unexpected type {t:?}"),
    }
}

/// The reply of GetItems (or an ItemsChanged payload) as path -> (Value, Text).
pub fn items_of(m: &Message) -> BTreeMap<String, (Value, String)> {
    let items: HashMap<String, PropMap> = m.read1().unwrap();
    items
        .into_iter()
        .map(|(k, d)| {
            let v = refarg_value(&d["Value"].0);
            let t = d["Text"].0.as_str().unwrap().to_string();
            (k, (v, t))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Running a pumped object on a thread, so that blocking test clients can talk to it

/// Pumps `obj` on a thread until dropped; the test locks it to act on it between pumps.
pub struct Pumped<T: Pump + Send + 'static> {
    pub obj: Arc<Mutex<T>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Pump + Send + 'static> Pumped<T> {
    pub fn start(obj: T) -> Pumped<T> {
        let obj = Arc::new(Mutex::new(obj));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (obj.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let r = {
                    let mut g = o.lock().unwrap();
                    dbus_modbus_client::vedbus::pump_all(&mut [&mut *g], Duration::from_millis(5))
                };
                if r.is_err() {
                    break;
                }
                std::thread::yield_now();
            }
        });
        Pumped {
            obj,
            stop,
            thread: Some(thread),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.obj.lock().unwrap()
    }
}

impl<T: Pump + Send + 'static> Drop for Pumped<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A generic fake Victron service (battery, vebus stand-ins), built on vedbus::Service

pub struct FakeService {
    pub name: String,
    svc: Pumped<Service>,
}

impl FakeService {
    /// Publishes `name` with read-only `paths` (plus `/DeviceInstance` 0 if absent).
    pub fn start(address: &str, name: &str, paths: &[(&str, Value)]) -> FakeService {
        let mut s = Service::connect(&BusAddress::Address(address.to_string())).unwrap();
        if !paths.iter().any(|(p, _)| *p == "/DeviceInstance") {
            s.add_path(
                "/DeviceInstance",
                Value::Int(0),
                Format::Plain,
                Writable::No,
            );
        }
        for (p, v) in paths {
            s.add_path(
                p,
                v.clone(),
                Format::Plain,
                Writable::Double {
                    min: -1e9,
                    max: 1e9,
                },
            );
        }
        s.register(name).unwrap();
        FakeService {
            name: name.to_string(),
            svc: Pumped::start(s),
        }
    }

    /// Updates a value and flushes (one ItemsChanged).
    pub fn set(&self, path: &str, v: Value) {
        let mut s = self.svc.lock();
        s.set(path, v);
        s.flush();
    }

    pub fn service(&self) -> std::sync::MutexGuard<'_, Service> {
        self.svc.lock()
    }
}

// ---------------------------------------------------------------------------------------------
// localsettings stand-in (spec §6)

#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    Int(i64),
    Float(f64),
    Str(String),
}

impl SettingValue {
    fn kind(&self) -> char {
        match self {
            SettingValue::Int(_) => 'i',
            SettingValue::Float(_) => 'f',
            SettingValue::Str(_) => 's',
        }
    }
    fn boxed(&self) -> Box<dyn RefArg> {
        match self {
            SettingValue::Int(i) => Box::new(*i as i32),
            SettingValue::Float(f) => Box::new(*f),
            SettingValue::Str(s) => Box::new(s.clone()),
        }
    }
    fn text(&self) -> String {
        match self {
            SettingValue::Int(i) => i.to_string(),
            SettingValue::Float(f) => f.to_string(),
            SettingValue::Str(s) => s.clone(),
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            SettingValue::Int(i) => Some(*i as f64),
            SettingValue::Float(f) => Some(*f),
            SettingValue::Str(_) => None,
        }
    }
    /// Converts a written value to this setting's type like localsettings (None = −1).
    fn convert(&self, a: &dyn RefArg) -> Option<SettingValue> {
        let a = if a.arg_type() == ArgType::Variant {
            a.as_iter()?.next()?
        } else {
            a
        };
        match self.kind() {
            'i' => match a.arg_type() {
                ArgType::String => a
                    .as_str()?
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .map(SettingValue::Int),
                ArgType::Double => Some(SettingValue::Int(a.as_f64()? as i64)),
                _ => a.as_i64().map(SettingValue::Int),
            },
            'f' => match a.arg_type() {
                ArgType::String => a
                    .as_str()?
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .map(SettingValue::Float),
                _ => a
                    .as_f64()
                    .or(a.as_i64().map(|i| i as f64))
                    .map(SettingValue::Float),
            },
            _ => a.as_str().map(|s| SettingValue::Str(s.to_string())),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Setting {
    pub value: SettingValue,
    pub default: SettingValue,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

type Store = Arc<Mutex<BTreeMap<String, Setting>>>;

/// `com.victronenergy.settings` on its own connection and thread.
pub struct FakeSettings {
    store: Store,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSettings {
    pub fn start(address: &str) -> FakeSettings {
        let store: Store = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (st, sp, addr) = (store.clone(), stop.clone(), address.to_string());
        let thread = std::thread::spawn(move || {
            let mut ch = Channel::open_private(&addr).unwrap();
            ch.register().unwrap();
            let m = Message::new_method_call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "RequestName",
            )
            .unwrap()
            .append2("com.victronenergy.settings", 4u32);
            ch.send_with_reply_and_block(m, TIMEOUT).unwrap();
            tx.send(()).unwrap();
            while !sp.load(Ordering::SeqCst) {
                if ch.read_write(Some(Duration::from_millis(5))).is_err() {
                    break;
                }
                while let Some(msg) = ch.pop_message() {
                    if msg.msg_type() == MessageType::MethodCall {
                        handle_settings_call(&ch, &st, &msg);
                    }
                }
            }
        });
        rx.recv_timeout(TIMEOUT)
            .expect("fake settings did not start");
        FakeSettings {
            store,
            stop,
            thread: Some(thread),
        }
    }

    pub fn get(&self, path: &str) -> Option<SettingValue> {
        self.store
            .lock()
            .unwrap()
            .get(path)
            .map(|s| s.value.clone())
    }

    pub fn setting(&self, path: &str) -> Option<Setting> {
        self.store.lock().unwrap().get(path).cloned()
    }
}

impl Drop for FakeSettings {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply_with(ch: &Channel, call: &Message, f: impl FnOnce(Message) -> Message) {
    ch.send(f(call.method_return())).unwrap();
}

fn reply_unknown(ch: &Channel, call: &Message) {
    let name = dbus::strings::ErrorName::new("org.freedesktop.DBus.Error.UnknownObject").unwrap();
    ch.send(call.error(&name, c"unknown path")).unwrap();
}

fn value_text(v: &SettingValue) -> PropMap {
    let mut d = PropMap::new();
    d.insert("Value".into(), Variant(v.boxed()));
    d.insert("Text".into(), Variant(Box::new(v.text())));
    d
}

fn handle_settings_call(ch: &Channel, store: &Store, msg: &Message) {
    let path = msg.path().map(|p| p.to_string()).unwrap_or_default();
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    match member.as_str() {
        "AddSettings" => {
            let Ok(defs) = msg.read1::<Vec<PropMap>>() else {
                return reply_unknown(ch, msg);
            };
            let results: Vec<PropMap> = defs.iter().map(|d| add_setting(store, &path, d)).collect();
            reply_with(ch, msg, |r| r.append1(results));
        }
        "SetValue" => {
            let mut changed = None;
            let result = {
                let mut s = store.lock().unwrap();
                let mut all = s.clone();
                match (s.get_mut(&path), msg.get1::<Variant<Box<dyn RefArg>>>()) {
                    (None, _) => return reply_unknown(ch, msg),
                    (Some(setting), Some(v)) => match setting.value.convert(&*v.0) {
                        Some(nv) if in_range(setting, &nv) => {
                            let nv = if path.ends_with("/ClassAndVrmInstance") {
                                all.remove(&path);
                                match unique_class_instance(&all, &nv) {
                                    Some(u) => u,
                                    None => return reply_with(ch, msg, |r| r.append1(-1i32)),
                                }
                            } else {
                                nv
                            };
                            if nv != setting.value {
                                setting.value = nv.clone();
                                changed = Some(nv);
                            }
                            0i32
                        }
                        _ => -1,
                    },
                    (Some(_), None) => -1,
                }
            };
            reply_with(ch, msg, |r| r.append1(result));
            if let Some(v) = changed {
                let sig = Message::new_signal(
                    path.as_str(),
                    "com.victronenergy.BusItem",
                    "PropertiesChanged",
                )
                .unwrap()
                .append1(value_text(&v));
                ch.send(sig).unwrap();
            }
        }
        "GetValue" => {
            let s = store.lock().unwrap();
            match s.get(&path) {
                Some(setting) => reply_with(ch, msg, |r| r.append1(Variant(setting.value.boxed()))),
                None => {
                    let prefix = if path == "/" {
                        "/".to_string()
                    } else {
                        format!("{path}/")
                    };
                    let below: PropMap = s
                        .iter()
                        .filter_map(|(k, v)| {
                            k.strip_prefix(&prefix)
                                .map(|rel| (rel.to_string(), Variant(v.value.boxed())))
                        })
                        .collect();
                    if below.is_empty() && path != "/" {
                        return reply_unknown(ch, msg);
                    }
                    reply_with(ch, msg, |r| r.append1(Variant(below)));
                }
            }
        }
        "GetText" => match store.lock().unwrap().get(&path) {
            Some(setting) => reply_with(ch, msg, |r| r.append1(setting.value.text())),
            None => reply_unknown(ch, msg),
        },
        "GetItems" if path == "/" => {
            let s = store.lock().unwrap();
            let items: HashMap<String, PropMap> = s
                .iter()
                .map(|(k, v)| {
                    let mut d = value_text(&v.value);
                    d.insert("Default".into(), Variant(v.default.boxed()));
                    (k.clone(), d)
                })
                .collect();
            reply_with(ch, msg, |r| r.append1(items));
        }
        _ => reply_unknown(ch, msg),
    }
}

fn in_range(s: &Setting, v: &SettingValue) -> bool {
    match (v.num(), s.min, s.max) {
        (Some(n), Some(min), Some(max)) if !(min == 0.0 && max == 0.0) => n >= min && n <= max,
        _ => true,
    }
}

/// `class:instance` with the instance bumped until no other ClassAndVrmInstance holds it.
fn unique_class_instance(
    others: &BTreeMap<String, Setting>,
    v: &SettingValue,
) -> Option<SettingValue> {
    let SettingValue::Str(s) = v else { return None };
    let (class, inst) = s.split_once(':')?;
    if class.is_empty() || !class.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let mut inst: i64 = inst.parse().ok()?;
    let taken = |i: i64| {
        others.iter().any(|(k, o)| {
            k.starts_with("/Settings/Devices/")
                && k.ends_with("/ClassAndVrmInstance")
                && o.value == SettingValue::Str(format!("{class}:{i}"))
        })
    };
    while taken(inst) {
        inst += 1;
    }
    Some(SettingValue::Str(format!("{class}:{inst}")))
}

/// One AddSettings entry, with the §6 error codes.
fn add_setting(store: &Store, group: &str, d: &PropMap) -> PropMap {
    let rel = d
        .get("path")
        .and_then(|v| v.0.as_str())
        .unwrap_or("")
        .to_string();
    let mut out = PropMap::new();
    out.insert("path".into(), Variant(Box::new(rel.clone())));
    let code = add_setting_code(store, group, &rel, d);
    out.insert("error".into(), Variant(Box::new(code.0)));
    if let Some(v) = code.1 {
        out.insert("value".into(), Variant(v.boxed()));
    }
    out
}

fn add_setting_code(
    store: &Store,
    group: &str,
    rel: &str,
    d: &PropMap,
) -> (i32, Option<SettingValue>) {
    let full = if group == "/" {
        if !rel.starts_with("/Settings/") {
            return (-9, None);
        }
        rel.to_string()
    } else {
        format!("{group}/{}", rel.trim_start_matches('/'))
    };
    if full.contains("/_") {
        return (-2, None);
    }
    if full.ends_with('/') || full.contains("//") {
        return (-4, None);
    }
    let Some(default) = d.get("default") else {
        return (-6, None);
    };
    let default = match default.0.arg_type() {
        ArgType::Int32 | ArgType::Int64 => SettingValue::Int(default.0.as_i64().unwrap()),
        ArgType::Double => SettingValue::Float(default.0.as_f64().unwrap()),
        ArgType::String => SettingValue::Str(default.0.as_str().unwrap().to_string()),
        _ => return (-3, None),
    };
    let num = |k: &str| {
        d.get(k)
            .and_then(|v| v.0.as_f64().or(v.0.as_i64().map(|i| i as f64)))
    };
    let (min, max) = (num("min"), num("max"));
    let mut s = store.lock().unwrap();
    let prefix = format!("{full}/");
    if s.keys().any(|k| k.starts_with(&prefix)) {
        return (-8, None);
    }
    if let Some(existing) = s.get(&full) {
        if existing.value.kind() != default.kind() {
            return (-5, None);
        }
        return (0, Some(existing.value.clone()));
    }
    let setting = Setting {
        value: default.clone(),
        default: default.clone(),
        min,
        max,
    };
    if !in_range(&setting, &default) {
        return (-7, None);
    }
    let value = if full.ends_with("/ClassAndVrmInstance") {
        match unique_class_instance(&s, &default) {
            Some(v) => v,
            None => return (-6, None),
        }
    } else {
        default
    };
    s.insert(
        full,
        Setting {
            value: value.clone(),
            ..setting
        },
    );
    (0, Some(value))
}

// ---------------------------------------------------------------------------------------------
// The daemon (or any of our binaries) as a subprocess

/// A subprocess whose stdout and stderr go to a log file; stopped (SIGTERM, then SIGKILL) on
/// drop, and its log printed if the test is failing.
pub struct Daemon {
    child: Child,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Starts `exe` (e.g. `env!("CARGO_BIN_EXE_dbus-modbus-client")`) with `args`.
    pub fn start(exe: &str, args: &[&str]) -> Daemon {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let log_path = std::env::temp_dir().join(format!(
            "daemon-test-{}-{}.log",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{exe}: {e}"));
        Daemon { child, log_path }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.log().contains(needle))
    }

    /// Whether the process has exited (without reaping more than once).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGTERM, then waits (SIGKILL after `TIMEOUT`); the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ----\n{}----",
                self.log_path.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Client {
    /// GetItems on `/` of `dest` as path -> (Value, Text); None if the call fails.
    pub fn items(&self, dest: &str) -> Option<BTreeMap<String, (Value, String)>> {
        self.busitem(dest, "/", "GetItems")
            .ok()
            .map(|m| items_of(&m))
    }

    /// GetValue of one path; None if the call fails.
    pub fn value(&self, dest: &str, path: &str) -> Option<Value> {
        let m = self.busitem(dest, path, "GetValue").ok()?;
        let v: Variant<Box<dyn RefArg>> = m.read1().ok()?;
        Some(refarg_value(&*v.0))
    }

    /// SetValue of a `Value` (Invalid sends an empty `ai`), returning the result code.
    pub fn set(&self, dest: &str, path: &str, v: &Value) -> i32 {
        match v {
            Value::Int(i) => self.set_value(dest, path, *i),
            Value::Double(d) => self.set_value(dest, path, *d),
            Value::Text(s) => self.set_value(dest, path, s.clone()),
            Value::TextList(l) => self.set_value(dest, path, l.clone()),
            Value::Invalid => self.set_value(dest, path, Vec::<i32>::new()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recording signals with their arrival time

/// A connection on its own thread that adds `rules` as match rules and hands every signal to
/// `on_signal` with the time it was read, until dropped.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
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
        Recorder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Records the arrival time of every ItemsChanged signal of `service` that carries `path`.
pub fn record_item_updates(
    address: &str,
    service: &str,
    path: &str,
) -> (Recorder, Arc<Mutex<Vec<Instant>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let rule = format!(
        "type='signal',sender='{service}',interface='com.victronenergy.BusItem',\
         member='ItemsChanged',path='/'"
    );
    let path = path.to_string();
    let rec = Recorder::start(address, &[rule], move |at, m| {
        // The bus also sends us NameAcquired and the like.
        let carries =
            m.member().as_deref() == Some("ItemsChanged") && items_of(m).contains_key(&path);
        if carries && let Ok(mut v) = s.lock() {
            v.push(at);
        }
    });
    (rec, seen)
}
