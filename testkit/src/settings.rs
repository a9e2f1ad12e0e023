//! `com.victronenergy.settings` as Victron's localsettings serves it (localsettings.py v1.76,
//! summarised in testkit/README.md), for the tests and the demo: localsettings cannot be
//! installed here. Settings are objects under `/Settings/...`; groups exist while settings
//! live below them (`/`, `/Settings` and `/Settings/Devices` always). Every method a client
//! can call is served with localsettings' result codes, conversions (Python's `int()`,
//! `float()`, `str()`) and signals: PropertiesChanged on the setting's own path, never
//! ItemsChanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use dbus::Message;
use dbus::arg::{ArgType, PropMap, RefArg, Variant};
use dbus::channel::Channel;
use dbus::message::MessageType;

use crate::TIMEOUT;
use crate::client::{BUSITEM, request_name};
use crate::python::{self, PyValue, float_str};
use crate::worker::Worker;

pub const SETTINGS_SERVICE: &str = "com.victronenergy.settings";
pub const SETTINGS_IFACE: &str = "com.victronenergy.Settings";

/// A setting's value; its variant is the setting's type (`i`, `f` or `s`).
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

    /// localsettings' `convertToType(type, value)`.
    fn convert(kind: char, v: &PyValue) -> Option<SettingValue> {
        match kind {
            'i' => v.int().map(SettingValue::Int),
            'f' => v.float().map(SettingValue::Float),
            _ => v.str().map(SettingValue::Str),
        }
    }

    /// localsettings' `dbus_wrap`: an int above i32 goes out as Int64.
    fn wrapped(&self) -> Box<dyn RefArg> {
        match self {
            SettingValue::Int(i) => match i32::try_from(*i) {
                Ok(small) => Box::new(small),
                Err(_) => Box::new(*i),
            },
            SettingValue::Float(f) => Box::new(*f),
            SettingValue::Str(s) => Box::new(s.clone()),
        }
    }

    /// `str(value)`: the text GetText and the signals carry.
    fn text(&self) -> String {
        match self {
            SettingValue::Int(i) => i.to_string(),
            SettingValue::Float(f) => float_str(*f),
            SettingValue::Str(s) => s.clone(),
        }
    }

    fn less_than(&self, other: &SettingValue) -> bool {
        match (self, other) {
            (SettingValue::Int(a), SettingValue::Int(b)) => a < b,
            (SettingValue::Float(a), SettingValue::Float(b)) => a < b,
            (SettingValue::Str(a), SettingValue::Str(b)) => a < b,
            _ => false,
        }
    }
}

/// One setting with its attributes. A pre-filled setting may lack any attribute, as one read
/// from an old settings file does.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub value: SettingValue,
    pub default: Option<SettingValue>,
    pub min: Option<SettingValue>,
    pub max: Option<SettingValue>,
    pub silent: bool,
}

impl Setting {
    /// A setting holding `value`, without default or range.
    pub fn new(value: SettingValue) -> Setting {
        Setting {
            value,
            default: None,
            min: None,
            max: None,
            silent: false,
        }
    }

    pub fn with_default(self, default: SettingValue) -> Setting {
        Setting {
            default: Some(default),
            ..self
        }
    }

    pub fn with_range(self, min: SettingValue, max: SettingValue) -> Setting {
        Setting {
            min: Some(min),
            max: Some(max),
            ..self
        }
    }

    fn kind(&self) -> char {
        self.value.kind()
    }

    fn get_min(&self) -> Box<dyn RefArg> {
        self.min
            .as_ref()
            .map_or(Box::new(0i32), SettingValue::wrapped)
    }

    fn get_max(&self) -> Box<dyn RefArg> {
        self.max
            .as_ref()
            .map_or(Box::new(0i32), SettingValue::wrapped)
    }

    /// GetDefault: −1 (an Int32) when there is none.
    fn get_default(&self) -> Box<dyn RefArg> {
        self.default
            .as_ref()
            .map_or(Box::new(-1i32), SettingValue::wrapped)
    }
}

type Store = BTreeMap<String, Setting>;

/// The localsettings stand-in on its own connection and thread, until dropped.
pub struct FakeSettings {
    store: Arc<Mutex<Store>>,
    _worker: Worker,
}

impl FakeSettings {
    /// An empty settings service.
    pub fn start(address: &str) -> FakeSettings {
        FakeSettings::start_with(address, Vec::new())
    }

    /// A settings service that starts with `settings` (full paths), as localsettings starts
    /// with what its settings file holds: no checks, no signals.
    pub fn start_with(address: &str, settings: Vec<(String, Setting)>) -> FakeSettings {
        let store = Arc::new(Mutex::new(settings.into_iter().collect::<Store>()));
        let (ready_tx, ready) = mpsc::channel();
        let (st, addr) = (store.clone(), address.to_string());
        let worker = Worker::spawn(move |stop| {
            let mut ch = Channel::open_private(&addr).unwrap();
            ch.register().unwrap();
            assert!(
                request_name(&ch, SETTINGS_SERVICE),
                "{SETTINGS_SERVICE} is taken"
            );
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::SeqCst) {
                if ch.read_write(Some(Duration::from_millis(5))).is_err() {
                    break;
                }
                while let Some(msg) = ch.pop_message() {
                    if msg.msg_type() == MessageType::MethodCall {
                        let mut store = lock(&st);
                        let mut out = Outbox::default();
                        let reply = handle(&mut store, &msg, &mut out);
                        drop(store);
                        // Signals go out before the reply, as localsettings emits them while
                        // it handles the call.
                        for sig in out.signals {
                            let _ = ch.send(sig);
                        }
                        let _ = ch.send(reply);
                    }
                }
            }
        });
        ready
            .recv_timeout(TIMEOUT)
            .expect("the settings stand-in did not start");
        FakeSettings {
            store,
            _worker: worker,
        }
    }

    pub fn get(&self, path: &str) -> Option<SettingValue> {
        lock(&self.store).get(path).map(|s| s.value.clone())
    }

    pub fn setting(&self, path: &str) -> Option<Setting> {
        lock(&self.store).get(path).cloned()
    }

    /// Every setting with its attributes, by full path.
    pub fn snapshot(&self) -> BTreeMap<String, Setting> {
        lock(&self.store).clone()
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Outbox {
    signals: Vec<Message>,
}

impl Outbox {
    /// PropertiesChanged on `path` (interface BusItem), as localsettings' SettingObject sends.
    fn properties_changed(&mut self, path: &str, changes: PropMap) {
        if let Ok(sig) = Message::new_signal(path, BUSITEM, "PropertiesChanged") {
            self.signals.push(sig.append1(changes));
        }
    }

    /// The invalid value a removed setting announces (SettingObject.remove).
    fn removed(&mut self, path: &str) {
        let mut gone = PropMap::new();
        gone.insert("Value".into(), Variant(Box::new(Vec::<i32>::new())));
        gone.insert("Text".into(), Variant(Box::new(String::new())));
        self.properties_changed(path, gone);
    }
}

// ---------------------------------------------------------------------------------------------
// Object tree

/// Groups that localsettings creates at start and never removes.
const PERMANENT_GROUPS: [&str; 3] = ["/", "/Settings", "/Settings/Devices"];

fn is_group(store: &Store, path: &str) -> bool {
    if PERMANENT_GROUPS.contains(&path) {
        return true;
    }
    let prefix = format!("{path}/");
    store.keys().any(|k| k.starts_with(&prefix))
}

/// `/Settings/Devices/<ident>/ClassAndVrmInstance`: the one special setting (DeviceGroup).
fn is_class_and_instance(path: &str) -> bool {
    path.strip_prefix("/Settings/Devices/")
        .and_then(|rest| rest.strip_suffix("/ClassAndVrmInstance"))
        .is_some_and(|ident| !ident.is_empty() && !ident.contains('/'))
}

/// A path relative to `group` as localsettings resolves it (one leading slash dropped), as a
/// full path; None if it is not a valid D-Bus object path (localsettings then fails the call).
fn resolve(group: &str, relative: &str) -> Option<String> {
    let rel = relative.strip_prefix('/').unwrap_or(relative);
    let valid = rel
        .split('/')
        .all(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    valid.then(|| {
        if group == "/" {
            format!("/{rel}")
        } else {
            format!("{group}/{rel}")
        }
    })
}

/// `class:instance` parsed as localsettings does: two parts, the second an int.
fn parse_class_instance(v: &SettingValue) -> Option<(String, i64)> {
    let SettingValue::Str(s) = v else { return None };
    let mut parts = s.split(':');
    let (class, instance) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((class.to_string(), python::parse_int(instance)?))
}

/// `class:instance` with the instance bumped until no other ClassAndVrmInstance under
/// /Settings/Devices holds it (DevicesGroup.assureFreeInstance); None if unparseable.
fn free_class_instance(store: &Store, own: &str, v: &SettingValue) -> Option<SettingValue> {
    let (class, mut instance) = parse_class_instance(v)?;
    let taken: Vec<&SettingValue> = store
        .iter()
        .filter(|(k, _)| {
            String::as_str(k) != own
                && k.starts_with("/Settings/Devices/")
                && k.ends_with("/ClassAndVrmInstance")
        })
        .map(|(_, s)| &s.value)
        .collect();
    loop {
        let candidate = SettingValue::Str(format!("{class}:{instance}"));
        if !taken.contains(&&candidate) {
            return Some(candidate);
        }
        instance += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Method calls

const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";
/// What dbus-python answers when localsettings raises: the whole call fails.
const TYPE_ERROR: &str = "org.freedesktop.DBus.Python.TypeError";
const VALUE_ERROR: &str = "org.freedesktop.DBus.Python.ValueError";

fn error(call: &Message, name: &str, text: &str) -> Message {
    let name = dbus::strings::ErrorName::new(name).unwrap();
    let text = std::ffi::CString::new(text).unwrap_or_default();
    call.error(&name, &text)
}

fn handle(store: &mut Store, msg: &Message, out: &mut Outbox) -> Message {
    let path = msg.path().map(|p| p.to_string()).unwrap_or_default();
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    let iface = msg.interface().map(|i| i.to_string());
    // dbus-python finds a method on any interface when the call names none.
    let on = |want: &str| iface.as_deref().is_none_or(|i| i == want);
    if store.contains_key(&path) {
        return match member.as_str() {
            "GetValue" if on(BUSITEM) => msg
                .method_return()
                .append1(Variant(store[&path].value.wrapped())),
            "GetText" if on(BUSITEM) => msg.method_return().append1(store[&path].value.text()),
            "SetValue" if on(BUSITEM) => {
                let code = match msg.get1::<Variant<Box<dyn RefArg>>>() {
                    Some(v) => set_value(store, &path, &PyValue::of(&*v.0), out),
                    None => return error(msg, TYPE_ERROR, "SetValue takes one variant"),
                };
                msg.method_return().append1(code)
            }
            "GetMin" if on(BUSITEM) => msg.method_return().append1(Variant(store[&path].get_min())),
            "GetMax" if on(BUSITEM) => msg.method_return().append1(Variant(store[&path].get_max())),
            "GetDefault" if on(BUSITEM) => msg
                .method_return()
                .append1(Variant(store[&path].get_default())),
            "SetDefault" if on(BUSITEM) => {
                if is_class_and_instance(&path) {
                    // Its override lacks the `sender` argument dbus-python passes: a TypeError.
                    return error(msg, TYPE_ERROR, "SetDefault() got an unexpected keyword");
                }
                let code = match store[&path].default.clone() {
                    None => -1,
                    Some(d) => {
                        let d = match d {
                            SettingValue::Int(i) => PyValue::Int(i128::from(i)),
                            SettingValue::Float(f) => PyValue::Float(f),
                            SettingValue::Str(s) => PyValue::Str(s),
                        };
                        set_value(store, &path, &d, out);
                        0
                    }
                };
                msg.method_return().append1(code)
            }
            "GetSilent" if on(SETTINGS_IFACE) => msg.method_return().append1(store[&path].silent),
            "GetAttributes" if on(SETTINGS_IFACE) => {
                let s = &store[&path];
                msg.method_return()
                    .append3(
                        Variant(s.get_default()),
                        Variant(s.get_min()),
                        Variant(s.get_max()),
                    )
                    .append1(i32::from(s.silent))
            }
            _ => error(msg, UNKNOWN_METHOD, "no such method on a setting"),
        };
    }
    if !is_group(store, &path) {
        return error(msg, UNKNOWN_OBJECT, "unknown path");
    }
    match member.as_str() {
        "AddSettings" if on(SETTINGS_IFACE) => {
            let Some(defs) = msg.get1::<Vec<PropMap>>() else {
                return error(msg, TYPE_ERROR, "AddSettings takes aa{sv}");
            };
            let mut results = Vec::with_capacity(defs.len());
            for d in &defs {
                match add_settings_entry(store, &path, d, out) {
                    Some(r) => results.push(r),
                    None => return error(msg, VALUE_ERROR, "no object can be registered there"),
                }
            }
            msg.method_return().append1(results)
        }
        "AddSetting" | "AddSilentSetting" if on(SETTINGS_IFACE) => {
            let args = msg.get_items();
            let mut it = msg.iter_init();
            let (Some(group), Some(name)) = (it.read::<&str>().ok(), it.read::<&str>().ok()) else {
                return error(msg, TYPE_ERROR, "AddSetting takes ssvsvv");
            };
            let group = if group.starts_with('/') || group.is_empty() {
                group.to_string()
            } else {
                format!("/{group}")
            };
            let relative = if name.starts_with('/') {
                format!("{group}{name}")
            } else {
                format!("{group}/{name}")
            };
            let arg = |i: usize| args.get(i).map(|a| PyValue::of(a));
            let kind = args.get(3).and_then(|a| a.as_str()).unwrap_or("");
            let silent = member == "AddSilentSetting";
            let (Some(default), Some(min), Some(max)) = (arg(2), arg(4), arg(5)) else {
                return error(msg, TYPE_ERROR, "AddSetting takes ssvsvv");
            };
            let spec = Spec {
                default: Some(default),
                kind: kind.chars().next().filter(|_| kind.len() == 1),
                min: Some(min),
                max: Some(max),
                silent,
            };
            match add_setting(store, &path, &relative, &spec, out) {
                Some((code, _)) => msg.method_return().append1(code),
                None => error(msg, VALUE_ERROR, "no object can be registered there"),
            }
        }
        "RemoveSettings" if on(SETTINGS_IFACE) => {
            let Some(paths) = msg.get1::<Vec<String>>() else {
                return error(msg, TYPE_ERROR, "RemoveSettings takes as");
            };
            let codes: Vec<i32> = paths
                .iter()
                .map(|p| match resolve(&path, p) {
                    Some(full) if store.contains_key(&full) => {
                        store.remove(&full);
                        out.removed(&full);
                        0
                    }
                    _ => -1,
                })
                .collect();
            msg.method_return().append1(codes)
        }
        "GetValue" if on(BUSITEM) => {
            let below: PropMap = settings_below(store, &path)
                .map(|(rel, s)| (rel, Variant(s.value.wrapped())))
                .collect();
            msg.method_return().append1(Variant(below))
        }
        "GetText" if on(BUSITEM) => {
            let below: HashMap<String, String> = settings_below(store, &path)
                .map(|(rel, s)| (rel, s.value.text()))
                .collect();
            msg.method_return().append1(Variant(below))
        }
        "SetDefault" if on(BUSITEM) => {
            // The group calls each setting's SetDefault without the `sender` it requires.
            error(msg, TYPE_ERROR, "SetDefault() missing 1 required argument")
        }
        "GetItems" if path == "/" && on(BUSITEM) => {
            let items: HashMap<String, PropMap> = store
                .iter()
                .map(|(k, s)| (k.clone(), properties(s)))
                .collect();
            msg.method_return().append1(items)
        }
        _ => error(msg, UNKNOWN_METHOD, "no such method on a group"),
    }
}

/// Settings below `group`, keyed by their path relative to it.
fn settings_below<'a>(
    store: &'a Store,
    group: &str,
) -> impl Iterator<Item = (String, &'a Setting)> + 'a {
    let prefix = if group == "/" {
        "/".to_string()
    } else {
        format!("{group}/")
    };
    store.iter().filter_map(move |(k, s)| {
        k.strip_prefix(prefix.as_str())
            .map(|rel| (rel.to_string(), s))
    })
}

/// GetItems' entry of a setting: Value, Text, and Min, Max, Default where set.
fn properties(s: &Setting) -> PropMap {
    let mut d = PropMap::new();
    d.insert("Value".into(), Variant(s.value.wrapped()));
    d.insert("Text".into(), Variant(Box::new(s.value.text())));
    for (key, v) in [("Max", &s.max), ("Min", &s.min), ("Default", &s.default)] {
        if let Some(v) = v {
            d.insert(key.into(), Variant(v.wrapped()));
        }
    }
    d
}

/// SettingObject.SetValue: 0, or −1 when the value does not convert, is out of range, or is
/// not a `class:instance` for a ClassAndVrmInstance.
fn set_value(store: &mut Store, path: &str, v: &PyValue, out: &mut Outbox) -> i32 {
    let s = &store[path];
    let Some(new) = SettingValue::convert(s.kind(), v) else {
        return -1;
    };
    if s.min.as_ref().is_some_and(|min| new.less_than(min))
        || s.max.as_ref().is_some_and(|max| max.less_than(&new))
    {
        return -1;
    }
    if new != s.value && !store_value(store, path, new, false, out) {
        return -1;
    }
    0
}

/// SettingObject._setValue: stores `value` (a ClassAndVrmInstance moved to a free instance)
/// and signals it, with the attributes when `attributes`; false if a ClassAndVrmInstance
/// cannot be parsed.
fn store_value(
    store: &mut Store,
    path: &str,
    value: SettingValue,
    attributes: bool,
    out: &mut Outbox,
) -> bool {
    let value = if is_class_and_instance(path) {
        match free_class_instance(store, path, &value) {
            Some(v) => v,
            None => return false,
        }
    } else {
        value
    };
    let Some(s) = store.get_mut(path) else {
        return false;
    };
    s.value = value;
    let mut change = PropMap::new();
    change.insert("Value".into(), Variant(s.value.wrapped()));
    change.insert("Text".into(), Variant(Box::new(s.value.text())));
    if attributes {
        change.insert("Default".into(), Variant(s.get_default()));
        if s.kind() != 's' {
            change.insert("Min".into(), Variant(s.get_min()));
            change.insert("Max".into(), Variant(s.get_max()));
        }
    }
    out.properties_changed(path, change);
    true
}

/// What AddSetting(s) asks for, before conversion.
struct Spec {
    default: Option<PyValue>,
    /// `i`, `f` or `s`; anything else is −3.
    kind: Option<char>,
    min: Option<PyValue>,
    max: Option<PyValue>,
    silent: bool,
}

/// One AddSettings entry: `path`, `error` and (with a setting to show) `value`; None when the
/// path is no valid object path (localsettings then fails the whole call).
fn add_settings_entry(
    store: &mut Store,
    group: &str,
    d: &PropMap,
    out: &mut Outbox,
) -> Option<PropMap> {
    let mut result = PropMap::new();
    let path = d.get("path").map(|v| &v.0);
    let Some(relative) = path
        .filter(|p| p.arg_type() == ArgType::String)
        .and_then(|p| p.as_str())
    else {
        if let Some(p) = path {
            result.insert("path".into(), Variant(p.box_clone()));
        }
        result.insert("error".into(), Variant(Box::new(-4i32)));
        return Some(result);
    };
    result.insert("path".into(), Variant(Box::new(relative.to_string())));
    let default = d.get("default").map(|v| &v.0);
    let kind = match default.map(|v| v.arg_type()) {
        Some(ArgType::Int32 | ArgType::Int64) => 'i',
        Some(ArgType::Double) => 'f',
        Some(ArgType::String) => 's',
        _ => {
            result.insert("error".into(), Variant(Box::new(-3i32)));
            return Some(result);
        }
    };
    let spec = Spec {
        default: default.map(|v| PyValue::of(v)),
        kind: Some(kind),
        min: d.get("min").map(|v| PyValue::of(&v.0)),
        max: d.get("max").map(|v| PyValue::of(&v.0)),
        silent: d.get("silent").is_some_and(|v| PyValue::of(&v.0).truthy()),
    };
    let (code, shown) = add_setting(store, group, relative, &spec, out)?;
    result.insert("error".into(), Variant(Box::new(code)));
    if let Some(full) = shown {
        result.insert("value".into(), Variant(store[&full].value.wrapped()));
    }
    Some(result)
}

/// GroupObject.addSetting: the error code and the setting whose value the reply shows; None
/// when localsettings would raise (an invalid object path, a setting where a group must go).
fn add_setting(
    store: &mut Store,
    group: &str,
    relative: &str,
    spec: &Spec,
    out: &mut Outbox,
) -> Option<(i32, Option<String>)> {
    if relative.contains("/_") {
        return Some((-2, None));
    }
    let Some(kind) = spec.kind.filter(|k| ['i', 'f', 's'].contains(k)) else {
        return Some((-3, None));
    };
    let convert = |v: &Option<PyValue>| v.as_ref().and_then(|v| SettingValue::convert(kind, v));
    let Some(value) = convert(&spec.default) else {
        return Some((-6, None));
    };
    let (mut min, mut max) = (convert(&spec.min), convert(&spec.max));
    if kind == 's' {
        (min, max) = (None, None);
    } else {
        let zero = |v: &Option<SettingValue>| {
            matches!(v, Some(SettingValue::Int(0)))
                || matches!(v, Some(SettingValue::Float(f)) if *f == 0.0)
        };
        if zero(&min) && zero(&max) {
            (min, max) = (None, None);
        }
        if min.as_ref().is_some_and(|m| value.less_than(m))
            || max.as_ref().is_some_and(|m| m.less_than(&value))
        {
            return Some((-7, None));
        }
    }
    if group == "/" && !relative.starts_with("/Settings/") {
        return Some((-9, None));
    }
    let full = resolve(group, relative)?;
    let wanted = Setting {
        value: value.clone(),
        default: Some(value.clone()),
        min,
        max,
        silent: spec.silent,
    };
    if let Some(existing) = store.get(&full) {
        if existing.kind() != kind {
            return Some((-5, None));
        }
        if is_class_and_instance(&full) && parse_class_instance(&value).is_none() {
            return Some((-6, Some(full)));
        }
        let changed = existing.default != wanted.default
            || existing.min != wanted.min
            || existing.max != wanted.max
            || existing.silent != wanted.silent;
        if changed {
            let current = existing.value.clone();
            let s = store.get_mut(&full)?;
            (s.default, s.min, s.max, s.silent) =
                (wanted.default, wanted.min, wanted.max, wanted.silent);
            store_value(store, &full, current, true, out);
        }
        return Some((0, Some(full)));
    }
    if is_group(store, &full) {
        return Some((-8, None));
    }
    // A setting on the way to the new one would have to become a group: dbus-python refuses
    // to register a second object on its path.
    let mut parent = full.as_str();
    while let Some((p, _)) = parent.rsplit_once('/') {
        if store.contains_key(p) {
            return None;
        }
        parent = p;
    }
    store.insert(full.clone(), wanted);
    if !store_value(store, &full, value, true, out) {
        store.remove(&full);
        out.removed(&full);
        return Some((-6, None));
    }
    Some((0, Some(full)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Client, PrivateBus, Value, items_of, value_of};

    fn add(c: &Client, group: &str, entries: Vec<PropMap>) -> Vec<(i32, Option<Value>)> {
        let reply = c
            .call(
                SETTINGS_SERVICE,
                group,
                SETTINGS_IFACE,
                "AddSettings",
                |m| m.append1(entries),
            )
            .unwrap();
        let results: Vec<PropMap> = reply.read1().unwrap();
        results
            .iter()
            .map(|r| {
                let code = r["error"].0.as_i64().unwrap() as i32;
                (code, r.get("value").map(|v| Value::from_arg(&v.0)))
            })
            .collect()
    }

    fn entry(path: &str, default: Box<dyn RefArg>, range: Option<(i32, i32)>) -> PropMap {
        let mut d = PropMap::new();
        d.insert("path".into(), Variant(Box::new(path.to_string())));
        d.insert("default".into(), Variant(default));
        if let Some((min, max)) = range {
            d.insert("min".into(), Variant(Box::new(min)));
            d.insert("max".into(), Variant(Box::new(max)));
        }
        d
    }

    /// (path, Value, keys of the payload) of every PropertiesChanged until none comes.
    fn changes(c: &Client) -> Vec<(String, Value, Vec<String>)> {
        c.signals_within("PropertiesChanged", Duration::from_millis(200))
            .iter()
            .map(|m| {
                let d: PropMap = m.read1().unwrap();
                let mut keys: Vec<String> = d.keys().cloned().collect();
                keys.sort();
                let path = m.path().unwrap().to_string();
                (path, Value::from_arg(&d["Value"].0), keys)
            })
            .collect()
    }

    fn watching(bus: &PrivateBus) -> Client {
        let c = Client::connect(&bus.address);
        c.add_match("type='signal',member='PropertiesChanged'");
        c
    }

    #[test]
    fn add_settings_codes_values_and_signals_are_localsettings_own() {
        let bus = PrivateBus::start();
        let _settings = FakeSettings::start(&bus.address);
        let c = watching(&bus);
        let dev = "/Settings/Devices";
        let results = add(
            &c,
            "/",
            vec![
                entry("/Settings/T/Int", Box::new(3i32), Some((0, 10))),
                entry("/Settings/T/_x", Box::new(1i32), None),
                entry("/Settings/T/U", Box::new(1u32), None),
                entry("/Settings/T/Low", Box::new(-1i32), Some((0, 10))),
                entry("/Other/X", Box::new(1i32), None),
                entry("/Settings/T", Box::new(1i32), None),
                entry(
                    &format!("{dev}/a/ClassAndVrmInstance"),
                    Box::new("grid:40".to_string()),
                    None,
                ),
                entry(
                    &format!("{dev}/b/ClassAndVrmInstance"),
                    Box::new("grid:40".to_string()),
                    None,
                ),
                entry(
                    &format!("{dev}/c/ClassAndVrmInstance"),
                    Box::new("grid".to_string()),
                    None,
                ),
            ],
        );
        let int = |i| Some(Value::Int(i));
        let text = |s: &str| Some(Value::from(s));
        assert_eq!(
            results,
            [
                (0, int(3)),
                (-2, None),
                (-3, None),
                (-7, None),
                (-9, None),
                (-8, None),
                (0, text("grid:40")),
                (0, text("grid:41")),
                (-6, None),
            ]
        );
        // New settings announce themselves with their attributes; the refused class instance
        // was created and removed again.
        let seen = changes(&c);
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            seen[0],
            (
                "/Settings/T/Int".into(),
                Value::Int(3),
                keys(&["Default", "Max", "Min", "Text", "Value"])
            )
        );
        assert_eq!(seen[2].2, keys(&["Default", "Text", "Value"]));
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[3].1, Value::Invalid);

        // Existing: the value stays; the same attributes say nothing, new ones are signalled.
        assert_eq!(c.set_value(SETTINGS_SERVICE, "/Settings/T/Int", 7), 0);
        changes(&c);
        let again = entry("/Settings/T/Int", Box::new(3i32), Some((0, 10)));
        assert_eq!(add(&c, "/", vec![again]), [(0, int(7))]);
        assert!(changes(&c).is_empty());
        let wider = entry("T/Int", Box::new(3i32), Some((0, 20)));
        assert_eq!(add(&c, "/Settings", vec![wider]), [(0, int(7))]);
        assert_eq!(changes(&c).len(), 1);
        let other_type = entry("/Settings/T/Int", Box::new("x".to_string()), None);
        assert_eq!(add(&c, "/", vec![other_type]), [(-5, None)]);
    }

    #[test]
    fn set_value_converts_like_python_and_checks_the_range() {
        let bus = PrivateBus::start();
        let settings = FakeSettings::start_with(
            &bus.address,
            vec![
                (
                    "/Settings/T/I".into(),
                    Setting::new(SettingValue::Int(1))
                        .with_range(SettingValue::Int(0), SettingValue::Int(20)),
                ),
                (
                    "/Settings/T/F".into(),
                    Setting::new(SettingValue::Float(1.0)),
                ),
                (
                    "/Settings/T/S".into(),
                    Setting::new(SettingValue::Str("a".into())),
                ),
            ],
        );
        let c = watching(&bus);
        let svc = SETTINGS_SERVICE;
        assert_eq!(c.set_value(svc, "/Settings/T/I", " 12 "), 0);
        assert_eq!(settings.get("/Settings/T/I"), Some(SettingValue::Int(12)));
        assert_eq!(c.set_value(svc, "/Settings/T/I", 7.9), 0);
        assert_eq!(settings.get("/Settings/T/I"), Some(SettingValue::Int(7)));
        for bad in ["1.5", "x", ""] {
            assert_eq!(c.set_value(svc, "/Settings/T/I", bad), -1, "{bad:?}");
        }
        assert_eq!(c.set_value(svc, "/Settings/T/I", 21), -1);
        assert_eq!(c.set_value(svc, "/Settings/T/F", 5), 0);
        assert_eq!(c.set_value(svc, "/Settings/T/S", 5), 0);
        assert_eq!(
            settings.get("/Settings/T/S"),
            Some(SettingValue::Str("5".into()))
        );
        let text = |p: &str| -> String { c.busitem(svc, p, "GetText").unwrap().read1().unwrap() };
        assert_eq!(text("/Settings/T/F"), "5.0");
        // Only changes are signalled, with Value and Text.
        assert_eq!(c.set_value(svc, "/Settings/T/F", 5.0), 0);
        let seen = changes(&c);
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(
            seen[2],
            (
                "/Settings/T/F".into(),
                Value::Double(5.0),
                vec!["Text".into(), "Value".into()]
            )
        );
        // A pre-filled setting has no default: GetItems leaves it out, GetDefault says -1.
        let items = c.busitem(svc, "/", "GetItems").unwrap();
        let raw: HashMap<String, PropMap> = items.read1().unwrap();
        assert!(!raw["/Settings/T/F"].contains_key("Default"));
        assert_eq!(raw["/Settings/T/I"]["Max"].0.as_i64(), Some(20));
        assert_eq!(items_of(&items)["/Settings/T/S"].0, Value::from("5"));
        assert_eq!(
            value_of(&c.busitem(svc, "/Settings/T/F", "GetDefault").unwrap()),
            Value::Int(-1)
        );
    }

    #[test]
    fn remove_settings_answers_per_path_signals_and_drops_empty_groups() {
        let bus = PrivateBus::start();
        let settings = FakeSettings::start_with(
            &bus.address,
            vec![
                (
                    "/Settings/Devices/a/ClassAndVrmInstance".into(),
                    Setting::new(SettingValue::Str("grid:40".into())),
                ),
                (
                    "/Settings/Devices/a/CustomName".into(),
                    Setting::new(SettingValue::Str("x".into())),
                ),
                (
                    "/Settings/Other/V".into(),
                    Setting::new(SettingValue::Int(5)),
                ),
            ],
        );
        let c = watching(&bus);
        let remove = |group: &str, paths: &[&str]| -> Vec<i32> {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            c.call(
                SETTINGS_SERVICE,
                group,
                SETTINGS_IFACE,
                "RemoveSettings",
                |m| m.append1(paths),
            )
            .unwrap()
            .read1()
            .unwrap()
        };
        assert_eq!(
            remove(
                "/Settings/Devices",
                &["a/CustomName", "/a/ClassAndVrmInstance", "a/Nope", "a"]
            ),
            [0, 0, -1, -1]
        );
        let seen = changes(&c);
        assert_eq!(
            seen.iter()
                .map(|(p, v, _)| (p.as_str(), v.clone()))
                .collect::<Vec<_>>(),
            [
                ("/Settings/Devices/a/CustomName", Value::Invalid),
                ("/Settings/Devices/a/ClassAndVrmInstance", Value::Invalid)
            ]
        );
        assert_eq!(settings.get("/Settings/Devices/a/CustomName"), None);
        // The emptied group is gone; /Settings/Devices stays.
        let group = |p: &str| {
            c.busitem(SETTINGS_SERVICE, p, "GetValue")
                .map(|m| value_of(&m))
        };
        assert!(group("/Settings/Devices/a").is_err());
        assert!(group("/Settings/Devices").is_ok());
        assert_eq!(remove("/", &["/Settings/Other/V"]), [0]);
        assert!(group("/Settings/Other").is_err());
    }
}
