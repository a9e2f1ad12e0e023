//! Client of `com.victronenergy.settings` (localsettings, spec §6) and device instance allocation.

use super::bus::{self, BUSITEM, DBUS_NAME, DBUS_PATH};
use super::value::{Value, append_variant, read_dict_sv, read_value};
use super::{BusAddress, Error};
use dbus::arg::{ArgType, IterAppend, Variant};
use dbus::channel::Channel;
use dbus::{Message, MessageType, Signature};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

pub(crate) const SETTINGS_SERVICE: &str = "com.victronenergy.settings";
const SETTINGS_IFACE: &str = "com.victronenergy.Settings";

/// Changes kept until the owner takes them; the oldest are dropped beyond this.
pub(crate) const MAX_QUEUED_CHANGES: usize = 64;

/// One setting to create (if absent) and follow. `default` must be `Int`, `Double` or `Text`
/// (localsettings refuses other types with −3, §10.13); `min`/`max` are left out when invalid.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingDef {
    /// Absolute path under `/Settings/`.
    pub path: String,
    pub default: Value,
    pub min: Value,
    pub max: Value,
}

impl SettingDef {
    pub fn new(path: impl Into<String>, default: impl Into<Value>) -> Self {
        SettingDef {
            path: path.into(),
            default: default.into(),
            min: Value::Invalid,
            max: Value::Invalid,
        }
    }

    pub fn range(mut self, min: impl Into<Value>, max: impl Into<Value>) -> Self {
        self.min = min.into();
        self.max = max.into();
        self
    }
}

pub struct Settings {
    ch: Channel,
    /// Last known value of every setting added through this client: changes are reported only
    /// for these, and only when the value differs.
    tracked: BTreeMap<String, Value>,
    changes: VecDeque<(String, Value)>,
}

impl Settings {
    /// Connects and waits up to `wait` for the settings service, polling every 250 ms (velib
    /// polls every second for 10 s; the daemon exits and is restarted if it never comes).
    pub fn connect(bus: &BusAddress, wait: Duration) -> Result<Self, Error> {
        let ch = bus::open(bus)?;
        // Subscribe before the first read so that no change is missed in between.
        let rule = format!("type='signal',sender='{SETTINGS_SERVICE}',interface='{BUSITEM}'");
        bus::add_match(&ch, &rule)?;
        let deadline = Instant::now() + wait;
        let mut logged = false;
        loop {
            let reply = bus::call(&ch, DBUS_NAME, DBUS_PATH, DBUS_NAME, "NameHasOwner", |a| {
                a.append(SETTINGS_SERVICE)
            })?;
            if reply.get1::<bool>() == Some(true) {
                if logged {
                    log::info!("vedbus: {SETTINGS_SERVICE} is up");
                }
                break;
            }
            if Instant::now() >= deadline {
                log::error!("vedbus: {SETTINGS_SERVICE} did not appear within {wait:?}");
                return Err(Error::SettingsUnavailable);
            }
            if !logged {
                log::info!("vedbus: waiting up to {wait:?} for {SETTINGS_SERVICE}");
                logged = true;
            }
            std::thread::sleep(Duration::from_millis(250).min(deadline - Instant::now()));
        }
        Ok(Settings {
            ch,
            tracked: BTreeMap::new(),
            changes: VecDeque::new(),
        })
    }

    /// Creates the settings that do not exist yet (existing values are never overwritten) with
    /// one AddSettings call on `/`, and returns the values the service reports, in `defs` order.
    /// Those are the values to use: an instance may have been bumped, a setting may exist already.
    pub fn add_settings(&mut self, defs: &[SettingDef]) -> Result<Vec<Value>, Error> {
        for d in defs {
            if !matches!(d.default, Value::Int(_) | Value::Double(_) | Value::Text(_)) {
                return Err(Error::Invalid(format!(
                    "setting {} default {:?}",
                    d.path, d.default
                )));
            }
        }
        let reply = bus::call(
            &self.ch,
            SETTINGS_SERVICE,
            "/",
            SETTINGS_IFACE,
            "AddSettings",
            |a| append_setting_defs(a, defs),
        )?;
        let results = parse_add_settings_reply(&reply)
            .ok_or_else(|| Error::BadReply("AddSettings reply is not aa{sv}".into()))?;
        let mut values = Vec::with_capacity(defs.len());
        for d in defs {
            let r = results
                .iter()
                .find(|r| r.path == d.path)
                .ok_or_else(|| Error::BadReply(format!("AddSettings reply lacks {}", d.path)))?;
            match (&r.error, &r.value) {
                (0, Some(v)) => {
                    self.tracked.insert(d.path.clone(), v.clone());
                    values.push(v.clone());
                }
                (0, None) => {
                    return Err(Error::BadReply(format!(
                        "AddSettings: no value for {}",
                        d.path
                    )));
                }
                (code, _) => {
                    return Err(Error::Setting {
                        path: d.path.clone(),
                        code: *code,
                    });
                }
            }
        }
        Ok(values)
    }

    /// Writes a setting (SetValue); a non-zero result (−1: wrong type or out of range) is an error.
    pub fn set_value(&mut self, path: &str, v: Value) -> Result<(), Error> {
        let reply = bus::call(&self.ch, SETTINGS_SERVICE, path, BUSITEM, "SetValue", |a| {
            append_variant(a, &v)
        })?;
        match reply.get1::<i32>() {
            Some(0) => self.settle(path, v),
            Some(code) => Err(Error::Setting {
                path: path.to_string(),
                code,
            }),
            None => Err(Error::BadReply(format!("SetValue {path}: no int result"))),
        }
    }

    /// Reads a setting (GetValue). A setting this client follows takes the value read as its
    /// last known one (localsettings may have stored another value than the one written, e.g. a
    /// bumped instance).
    pub fn get_value(&mut self, path: &str) -> Result<Value, Error> {
        let reply = bus::call(
            &self.ch,
            SETTINGS_SERVICE,
            path,
            BUSITEM,
            "GetValue",
            |_| {},
        )?;
        let v = read_value(&mut reply.iter_init())
            .ok_or_else(|| Error::BadReply(format!("GetValue {path}")))?;
        self.settle(path, v.clone())?;
        Ok(v)
    }

    /// After a write or read of `path` that leaves it at `v`: the signals localsettings sent
    /// before its reply (a creation, earlier writes) waited in the queue during the blocking
    /// call and are older than `v`. They are handled now, and the changes of `path` they report
    /// dropped, so that the owner does not see the setting go back and forth (a service
    /// re-registering with a stale instance).
    fn settle(&mut self, path: &str, v: Value) -> Result<(), Error> {
        bus::dispatch(self, |s| &s.ch, Self::handle)?;
        self.changes.retain(|(p, _)| p != path);
        if let Some(known) = self.tracked.get_mut(path) {
            *known = v;
        }
        Ok(())
    }

    /// Follows a setting this client does not own (another service's, e.g. systemcalc's
    /// `/Settings/SystemSetup/BatteryService`) without creating it: its current value, Invalid
    /// while it does not exist; later changes (its creation included) come through
    /// [`take_changes`](Self::take_changes).
    pub fn follow(&mut self, path: &str) -> Result<Value, Error> {
        self.tracked.insert(path.to_string(), Value::Invalid);
        match self.get_value(path) {
            Ok(v) => Ok(v),
            // No object there (libdbus answers UnknownObject, older ones UnknownMethod): the
            // setting does not exist (yet).
            Err(Error::Call { detail, .. })
                if detail.starts_with("org.freedesktop.DBus.Error.Unknown") =>
            {
                Ok(Value::Invalid)
            }
            Err(e) => Err(e),
        }
    }

    /// Every setting below the group `group` (e.g. `/Settings/Devices`), keyed by its path
    /// relative to the group (localsettings' group GetValue: `a{sv}` in a variant).
    pub fn values_below(&mut self, group: &str) -> Result<BTreeMap<String, Value>, Error> {
        let reply = bus::call(
            &self.ch,
            SETTINGS_SERVICE,
            group,
            BUSITEM,
            "GetValue",
            |_| {},
        )?;
        let mut it = reply.iter_init();
        let dict = it
            .recurse(ArgType::Variant)
            .as_mut()
            .and_then(read_dict_sv)
            .ok_or_else(|| Error::BadReply(format!("GetValue {group} is not a{{sv}}")))?;
        Ok(dict.into_iter().collect())
    }

    /// Removes settings (RemoveSettings on `group`, paths relative to it; docs/reference/
    /// victron.md §3): per path 0 removed, −1 no such setting (a group is not a setting).
    pub fn remove_settings(&mut self, group: &str, paths: &[String]) -> Result<Vec<i32>, Error> {
        let reply = bus::call(
            &self.ch,
            SETTINGS_SERVICE,
            group,
            SETTINGS_IFACE,
            "RemoveSettings",
            |a| a.append(paths),
        )?;
        let codes: Vec<i32> = reply
            .get1()
            .ok_or_else(|| Error::BadReply("RemoveSettings reply is not ai".into()))?;
        if codes.len() != paths.len() {
            return Err(Error::BadReply(format!(
                "RemoveSettings: {} results for {} paths",
                codes.len(),
                paths.len()
            )));
        }
        let prefix = if group == "/" { "" } else { group };
        for (p, code) in paths.iter().zip(&codes) {
            if *code == 0 {
                let rel = p.strip_prefix('/').unwrap_or(p);
                self.tracked.remove(&format!("{prefix}/{rel}"));
            }
        }
        Ok(codes)
    }

    /// The last known value of a setting added through this client.
    pub fn cached(&self, path: &str) -> Option<&Value> {
        self.tracked.get(path)
    }

    /// Changes of added settings made by others (GUI, another process), oldest first.
    pub fn take_changes(&mut self) -> impl Iterator<Item = (String, Value)> + '_ {
        self.changes.drain(..)
    }

    pub fn pump(&mut self, budget: Duration) -> Result<(), Error> {
        bus::pump_all(&mut [self], budget)
    }

    fn handle(&mut self, msg: &Message) {
        if msg.msg_type() != MessageType::Signal {
            if msg.msg_type() == MessageType::MethodCall && !bus::handle_common(&self.ch, msg) {
                bus::reply_error(&self.ch, msg, bus::UNKNOWN_OBJECT, "nothing exported here");
            }
            return;
        }
        let member = msg.member();
        let updates = match member.as_deref() {
            Some("PropertiesChanged") => {
                let Some(path) = msg.path().map(|p| p.to_string()) else {
                    return;
                };
                read_dict_sv(&mut msg.iter_init())
                    .and_then(|d| d.into_iter().find(|(k, _)| k == "Value"))
                    .map(|(_, v)| vec![(path, v)])
            }
            Some("ItemsChanged") => super::value::read_items(&mut msg.iter_init()),
            _ => None,
        };
        for (path, v) in updates.into_iter().flatten() {
            self.note_change(path, v);
        }
    }

    fn note_change(&mut self, path: String, v: Value) {
        let Some(known) = self.tracked.get_mut(&path) else {
            return;
        };
        if *known == v {
            return;
        }
        *known = v.clone();
        if self.changes.len() >= MAX_QUEUED_CHANGES {
            self.changes.pop_front();
        }
        self.changes.push_back((path, v));
    }
}

impl bus::Connection for Settings {
    fn channel(&self) -> &Channel {
        &self.ch
    }

    fn handle(&mut self, msg: &Message) {
        Settings::handle(self, msg)
    }
}

fn append_setting_defs(a: &mut IterAppend, defs: &[SettingDef]) {
    let sv = Signature::make::<HashMap<&str, Variant<u8>>>();
    a.append_array(&sv, |arr| {
        for d in defs {
            arr.append_dict(
                &Signature::make::<&str>(),
                &Signature::make::<Variant<u8>>(),
                |dict| {
                    dict.append_dict_entry(|e| {
                        e.append("path");
                        append_variant(e, &Value::Text(d.path.clone()));
                    });
                    dict.append_dict_entry(|e| {
                        e.append("default");
                        append_variant(e, &d.default);
                    });
                    for (key, v) in [("min", &d.min), ("max", &d.max)] {
                        if v.is_valid() {
                            dict.append_dict_entry(|e| {
                                e.append(key);
                                append_variant(e, v);
                            });
                        }
                    }
                },
            )
        }
    });
}

struct AddResult {
    path: String,
    error: i32,
    value: Option<Value>,
}

fn parse_add_settings_reply(reply: &Message) -> Option<Vec<AddResult>> {
    let mut it = reply.iter_init();
    let mut list = it.recurse(ArgType::Array)?;
    let mut out = Vec::new();
    while list.arg_type() == ArgType::Array {
        let entry = read_dict_sv(&mut list)?;
        let get = |k: &str| {
            entry
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        out.push(AddResult {
            path: get("path").and_then(|v| v.as_str().map(str::to_string))?,
            error: get("error").and_then(|v| v.as_i32())?,
            value: get("value"),
        });
        if !list.next() {
            break;
        }
    }
    Some(out)
}

/// Parses localsettings' `"<class>:<instance>"`.
pub(crate) fn parse_class_instance(s: &str) -> Option<(&str, i32)> {
    let (class, instance) = s.split_once(':')?;
    let valid_class = !class.is_empty()
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid_class.then_some(())?;
    Some((class, instance.parse().ok()?))
}

/// The settings identifier rule of localsettings: `[A-Za-z0-9_]`, not starting with `_`.
pub(crate) fn is_valid_ident(ident: &str) -> bool {
    !ident.is_empty()
        && !ident.starts_with('_')
        && ident
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(crate) fn class_instance_path(ident: &str) -> String {
    format!("/Settings/Devices/{ident}/ClassAndVrmInstance")
}

/// Allocates (or reads back) the device's class and instance through
/// `/Settings/Devices/<ident>/ClassAndVrmInstance`, preferring `<class>:<preferred>`. Returns what
/// localsettings holds: the instance may be bumped, and an existing record keeps its class (the
/// role chosen earlier).
pub fn allocate_instance(
    settings: &mut Settings,
    ident: &str,
    class: &str,
    preferred: i32,
) -> Result<(String, i32), Error> {
    if !is_valid_ident(ident) {
        return Err(Error::Invalid(format!("settings ident {ident:?}")));
    }
    let path = class_instance_path(ident);
    let def = SettingDef::new(path.clone(), format!("{class}:{preferred}"));
    let values = settings.add_settings(&[def])?;
    let text = values.first().and_then(Value::as_str).unwrap_or_default();
    let (class, instance) = parse_class_instance(text)
        .ok_or_else(|| Error::BadReply(format!("{path} = {text:?}, not class:instance")))?;
    Ok((class.to_string(), instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_instance_parsing() {
        assert_eq!(parse_class_instance("grid:40"), Some(("grid", 40)));
        assert_eq!(
            parse_class_instance("pvinverter:-1"),
            Some(("pvinverter", -1))
        );
        for bad in ["grid", ":40", "grid:x", "grid:40:1", "gr id:4"] {
            assert_eq!(parse_class_instance(bad), None, "{bad}");
        }
    }

    #[test]
    fn ident_rule() {
        assert!(is_valid_ident("growatt_AB123"));
        for bad in ["", "_x", "a-b", "a/b", "a.b"] {
            assert!(!is_valid_ident(bad), "{bad}");
        }
    }
}
