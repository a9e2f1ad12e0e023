//! A Victron service as velib_python's VeDbusService publishes it (testkit/README.md): the
//! battery and vebus stand-ins. Every path is an object with GetValue/GetText (read-only:
//! SetValue answers 1), every node above it answers GetValue/GetText for its subtree, `/`
//! also GetItems; a change goes out as one ItemsChanged on `/`, as velib's
//! `with service as s:` context does. Written on the dbus crate directly, not on the daemon's
//! vedbus code.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dbus::Message;
use dbus::arg::{PropMap, RefArg, Variant};
use dbus::channel::Channel;
use dbus::message::MessageType;

use crate::Value;
use crate::client::{BUSITEM, request_name};
use crate::python::float_str;
use crate::worker::Worker;

struct State {
    ch: Channel,
    paths: BTreeMap<String, Value>,
}

/// A service on its own connection, served by its own thread until dropped (which closes the
/// connection and so releases its name, as a velib service that goes away does).
pub struct FakeService {
    pub name: String,
    state: Arc<Mutex<State>>,
    _worker: Worker,
}

impl FakeService {
    /// Publishes `name` with read-only `paths`, plus those of velib's mandatory paths that
    /// systemcalc relies on where `paths` lacks them (`/DeviceInstance` 0, `/Connected` 1,
    /// `/ProductName`, `/Mgmt/Connection`): the paths exist before the name is requested, as
    /// velib's `register()` after `add_path` does.
    pub fn start(address: &str, name: &str, paths: &[(&str, Value)]) -> FakeService {
        let mut ch = Channel::open_private(address).unwrap();
        ch.register().unwrap();
        let mut all: BTreeMap<String, Value> = paths
            .iter()
            .map(|(p, v)| (p.to_string(), v.clone()))
            .collect();
        for (path, default) in [
            ("/DeviceInstance", Value::Int(0)),
            ("/Connected", Value::Int(1)),
            ("/ProductName", Value::from("testkit stand-in")),
            ("/Mgmt/Connection", Value::from("testkit")),
        ] {
            all.entry(path.into()).or_insert(default);
        }
        let state = Arc::new(Mutex::new(State { ch, paths: all }));
        let st = state.clone();
        let worker = Worker::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                {
                    let s = lock(&st);
                    if s.ch.read_write(Some(Duration::from_millis(5))).is_err() {
                        break;
                    }
                    while let Some(msg) = s.ch.pop_message() {
                        if msg.msg_type() == MessageType::MethodCall {
                            let reply = handle(&s.paths, &msg);
                            let _ = s.ch.send(reply);
                        }
                    }
                }
                std::thread::yield_now();
            }
        });
        assert!(
            request_name(&lock(&state).ch, name),
            "{name} is taken already"
        );
        FakeService {
            name: name.to_string(),
            state,
            _worker: worker,
        }
    }

    /// Changes a value; if it differs, one ItemsChanged on `/` announces it.
    pub fn set(&self, path: &str, v: Value) {
        let mut s = lock(&self.state);
        let old = s.paths.insert(path.to_string(), v.clone());
        if old.as_ref() == Some(&v) {
            return;
        }
        let mut item = PropMap::new();
        item.insert("Value".into(), Variant(wire(&v)));
        item.insert("Text".into(), Variant(Box::new(text(path, &v))));
        let changes = HashMap::from([(path.to_string(), item)]);
        if let Ok(sig) = Message::new_signal("/", BUSITEM, "ItemsChanged") {
            let _ = s.ch.send(sig.append1(changes));
            s.ch.flush();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// velib's `wrap_dbus_value`: a list goes out as an array of variants (`av`).
fn wire(v: &Value) -> Box<dyn RefArg> {
    match v {
        Value::TextList(l) => Box::new(
            l.iter()
                .map(|s| Variant(Box::new(s.clone()) as Box<dyn RefArg>))
                .collect::<Vec<_>>(),
        ),
        other => other.to_arg(),
    }
}

/// velib's GetText: `---` for invalid, hex for /ProductId, else Python's `str()`.
fn text(path: &str, v: &Value) -> String {
    match v {
        Value::Invalid => "---".into(),
        Value::Int(i) if path == "/ProductId" => format!("0x{i:X}"),
        Value::Int(i) => i.to_string(),
        Value::Double(d) => float_str(*d),
        Value::Text(s) => s.clone(),
        Value::TextList(l) => {
            let quoted: Vec<String> = l.iter().map(|s| format!("'{s}'")).collect();
            format!("[{}]", quoted.join(", "))
        }
    }
}

fn error(call: &Message, name: &str) -> Message {
    let name = dbus::strings::ErrorName::new(name).unwrap();
    call.error(&name, c"not here")
}

fn handle(paths: &BTreeMap<String, Value>, msg: &Message) -> Message {
    let path = msg.path().map(|p| p.to_string()).unwrap_or_default();
    let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
    if msg.interface().is_some_and(|i| &*i != BUSITEM) {
        return error(msg, "org.freedesktop.DBus.Error.UnknownMethod");
    }
    if let Some(v) = paths.get(&path) {
        return match member.as_str() {
            "GetValue" => msg.method_return().append1(Variant(wire(v))),
            "GetText" => msg.method_return().append1(text(&path, v)),
            // Not writeable: velib answers 1, no error.
            "SetValue" => msg.method_return().append1(1i32),
            "GetDescription" => msg.method_return().append1("No description given"),
            _ => error(msg, "org.freedesktop.DBus.Error.UnknownMethod"),
        };
    }
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    let below: Vec<(&str, &String, &Value)> = paths
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix.as_str()).map(|rel| (rel, k, v)))
        .collect();
    if below.is_empty() && path != "/" {
        return error(msg, "org.freedesktop.DBus.Error.UnknownObject");
    }
    match member.as_str() {
        "GetValue" => {
            let tree: PropMap = below
                .iter()
                .map(|(rel, _, v)| (rel.to_string(), Variant(wire(v))))
                .collect();
            msg.method_return().append1(Variant(tree))
        }
        "GetText" => {
            let tree: HashMap<String, String> = below
                .iter()
                .map(|(rel, full, v)| (rel.to_string(), text(full, v)))
                .collect();
            msg.method_return().append1(Variant(tree))
        }
        "GetItems" if path == "/" => {
            let items: HashMap<String, PropMap> = paths
                .iter()
                .map(|(k, v)| {
                    let mut d = PropMap::new();
                    d.insert("Value".into(), Variant(wire(v)));
                    d.insert("Text".into(), Variant(Box::new(text(k, v))));
                    (k.clone(), d)
                })
                .collect();
            msg.method_return().append1(items)
        }
        _ => error(msg, "org.freedesktop.DBus.Error.UnknownMethod"),
    }
}
