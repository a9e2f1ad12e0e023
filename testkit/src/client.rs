//! A plain client connection: the "separate client" of the tests, reading what a consumer of
//! Victron services reads.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use dbus::Message;
use dbus::arg::{PropMap, RefArg, Variant};
use dbus::channel::Channel;
use dbus::message::MessageType;

use crate::{TIMEOUT, Value};

pub const BUSITEM: &str = "com.victronenergy.BusItem";

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

    /// A method of the bus daemon itself.
    pub fn call_bus(
        &self,
        method: &str,
        fill: impl FnOnce(Message) -> Message,
    ) -> Result<Message, dbus::Error> {
        self.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            method,
            fill,
        )
    }

    pub fn busitem(&self, dest: &str, path: &str, method: &str) -> Result<Message, dbus::Error> {
        self.call(dest, path, BUSITEM, method, |m| m)
    }

    /// SetValue with a ready-made variant argument; the result code.
    pub fn set_value<T: dbus::arg::Arg + dbus::arg::Append>(
        &self,
        dest: &str,
        path: &str,
        v: T,
    ) -> i32 {
        self.call(dest, path, BUSITEM, "SetValue", |m| m.append1(Variant(v)))
            .unwrap()
            .read1::<i32>()
            .unwrap()
    }

    /// SetValue of a `Value` (Invalid sends an empty `ai`), returning the result code.
    pub fn set(&self, dest: &str, path: &str, v: &Value) -> i32 {
        self.call(dest, path, BUSITEM, "SetValue", |m| {
            m.append1(Variant(v.to_arg()))
        })
        .unwrap()
        .read1::<i32>()
        .unwrap()
    }

    /// GetValue of one path; None if the call fails.
    pub fn value(&self, dest: &str, path: &str) -> Option<Value> {
        let m = self.busitem(dest, path, "GetValue").ok()?;
        Some(value_of(&m))
    }

    /// GetItems on `/` of `dest` as path -> (Value, Text); None if the call fails.
    pub fn items(&self, dest: &str) -> Option<BTreeMap<String, (Value, String)>> {
        self.busitem(dest, "/", "GetItems")
            .ok()
            .map(|m| items_of(&m))
    }

    pub fn add_match(&self, rule: &str) {
        self.call_bus("AddMatch", |m| m.append1(rule)).unwrap();
    }

    pub fn name_has_owner(&self, name: &str) -> bool {
        self.call_bus("NameHasOwner", |m| m.append1(name))
            .unwrap()
            .read1::<bool>()
            .unwrap()
    }

    /// RequestName with DO_NOT_QUEUE, as Victron services do; whether this client owns it now.
    pub fn request_name(&self, name: &str) -> bool {
        request_name(&self.ch, name)
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

/// RequestName with DO_NOT_QUEUE on `ch`; whether it became the primary owner.
pub fn request_name(ch: &Channel, name: &str) -> bool {
    let m = Message::new_method_call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "RequestName",
    )
    .unwrap()
    .append2(name, 4u32);
    ch.send_with_reply_and_block(m, TIMEOUT)
        .ok()
        .and_then(|r| r.read1::<u32>().ok())
        == Some(1)
}

/// The value a GetValue reply carries.
pub fn value_of(m: &Message) -> Value {
    let v: Variant<Box<dyn RefArg>> = m.read1().unwrap();
    Value::from_arg(&*v.0)
}

/// The reply of GetItems (or an ItemsChanged payload) as path -> (Value, Text).
pub fn items_of(m: &Message) -> BTreeMap<String, (Value, String)> {
    let items: HashMap<String, PropMap> = m.read1().unwrap();
    items
        .into_iter()
        .map(|(k, d)| {
            let v = Value::from_arg(&d["Value"].0);
            let t = d["Text"].0.as_str().unwrap().to_string();
            (k, (v, t))
        })
        .collect()
}
