//! A published Victron service: one private connection, the BusItem tree, batched signals.

use super::bus::{self, BUSITEM, DBUS_NAME, DBUS_PATH, UNKNOWN_METHOD, UNKNOWN_OBJECT};
use super::tree::{Item, Node, Tree, is_valid_leaf_path};
use super::value::{
    Format, INVALID_TEXT, Value, Writable, append_value_text_dict, append_variant, read_value,
};
use super::{BusAddress, Error};
use dbus::arg::{IterAppend, Variant};
use dbus::channel::Channel;
use dbus::strings::BusName;
use dbus::{Message, MessageType, Signature};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Accepted writes kept until the owner takes them. The owner drains them every loop iteration;
/// the bound only matters if it stops doing so (then the oldest are dropped).
pub(crate) const MAX_QUEUED_WRITES: usize = 32;

/// SetValue results. Callers only test for 0 (§1.3).
const SET_OK: i32 = 0;
const SET_REFUSED: i32 = 1;

pub struct Service {
    ch: Channel,
    tree: Tree,
    name: Option<String>,
    writes: VecDeque<(String, Value)>,
    /// Paths removed since the last flush, announced as invalid.
    removed: Vec<String>,
}

impl Service {
    /// Opens the service's own private connection. Nothing is visible to consumers until
    /// [`Service::register`].
    pub fn connect(bus: &BusAddress) -> Result<Self, Error> {
        Ok(Service {
            ch: bus::open(bus)?,
            tree: Tree::default(),
            name: None,
            writes: VecDeque::with_capacity(MAX_QUEUED_WRITES),
            removed: Vec::new(),
        })
    }

    /// Adds (or replaces) a leaf. Paths added after registration are announced by the next flush.
    pub fn add_path(&mut self, path: &str, value: Value, format: Format, writable: Writable) {
        if !is_valid_leaf_path(path) {
            log::error!("vedbus: refusing invalid object path {path:?}");
            return;
        }
        let value = value.normalized();
        self.removed.retain(|p| p != path);
        self.tree.insert(
            path,
            Item {
                value,
                format,
                writable,
                changed: true,
            },
        );
    }

    /// Every published leaf path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.tree.iter().map(|(p, _)| p.as_str())
    }

    pub fn has_path(&self, path: &str) -> bool {
        self.tree.get(path).is_some()
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        self.tree.get(path).map(|i| &i.value)
    }

    /// Updates a value; it is signalled by the next flush only if it differs from the current one.
    pub fn set(&mut self, path: &str, value: Value) {
        let value = value.normalized();
        match self.tree.get_mut(path) {
            Some(item) if item.value != value => {
                item.value = value;
                item.changed = true;
            }
            Some(_) => {}
            None => log::debug!("vedbus: set on unknown path {path}"),
        }
    }

    /// Removes a leaf. Consumers that cached it see it turn invalid in the next ItemsChanged
    /// (there is no "removed" signal in the BusItem protocol).
    pub fn remove_path(&mut self, path: &str) {
        if self.tree.remove(path) && self.name.is_some() && !self.removed.iter().any(|p| p == path)
        {
            self.removed.push(path.to_string());
        }
    }

    pub fn set_writable(&mut self, path: &str, w: Writable) {
        if let Some(item) = self.tree.get_mut(path) {
            item.writable = w;
        }
    }

    /// The well-known name, while registered.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The connection's unique name (`:1.42`), which signals carry as sender.
    pub fn unique_name(&self) -> Option<&str> {
        self.ch.unique_name()
    }

    /// Requests the well-known name (DO_NOT_QUEUE) once every path exists, so that a consumer
    /// scanning the instant the name appears sees `/DeviceInstance` (§2, §10.2).
    pub fn register(&mut self, name: &str) -> Result<(), Error> {
        if BusName::new(name).is_err() || name.starts_with(':') {
            return Err(Error::Invalid(format!("bad service name {name:?}")));
        }
        if self.name.as_deref() == Some(name) {
            return Ok(());
        }
        self.unregister();
        // What changed before registration is part of the initial scan, not a change.
        self.tree.iter_mut().for_each(|(_, i)| i.changed = false);
        const DO_NOT_QUEUE: u32 = 4;
        let reply = bus::call(
            &self.ch,
            DBUS_NAME,
            DBUS_PATH,
            DBUS_NAME,
            "RequestName",
            |a| {
                a.append(name);
                a.append(DO_NOT_QUEUE);
            },
        )?;
        match reply.get1::<u32>() {
            // 1 = primary owner, 4 = already the owner.
            Some(1) | Some(4) => {
                self.name = Some(name.to_string());
                log::info!("vedbus: registered {name}");
                Ok(())
            }
            Some(3) => Err(Error::NameTaken(name.to_string())),
            other => Err(Error::Call {
                method: "RequestName".into(),
                detail: format!("unexpected reply {other:?}"),
            }),
        }
    }

    /// Releases the well-known name: consumers see the service disappear. The tree is kept, so
    /// the service may register again (role or instance change).
    pub fn unregister(&mut self) {
        let Some(name) = self.name.take() else { return };
        match bus::call(
            &self.ch,
            DBUS_NAME,
            DBUS_PATH,
            DBUS_NAME,
            "ReleaseName",
            |a| a.append(name.as_str()),
        ) {
            Ok(_) => log::info!("vedbus: released {name}"),
            Err(e) => log::warn!("vedbus: releasing {name}: {e}"),
        }
    }

    /// Emits one `ItemsChanged` on `/` with every item changed since the last flush, nothing when
    /// nothing changed. No per-item `PropertiesChanged`: every current consumer listens to
    /// ItemsChanged (veutil and aiovelib emit only that), and one signal per cycle instead of one
    /// per item keeps bus traffic low on the GX (§1.2, §10.6).
    pub fn flush(&mut self) {
        if self.removed.is_empty() && !self.tree.iter().any(|(_, i)| i.changed) {
            return;
        }
        if self.name.is_none() {
            self.tree.iter_mut().for_each(|(_, i)| i.changed = false);
            self.removed.clear();
            return;
        }
        // libdbus queues outgoing messages without limit. If the bus has not taken the previous
        // signal yet, keep the changes for the next flush: they coalesce into one signal and the
        // queue stays bounded however slow the bus is.
        if self.ch.has_messages_to_send()
            && bus::read_nonblocking(&self.ch).is_ok()
            && self.ch.has_messages_to_send()
        {
            return;
        }
        let Ok(mut msg) = Message::new_signal("/", BUSITEM, "ItemsChanged") else {
            return;
        };
        let mut ia = IterAppend::new(&mut msg);
        let tree = &mut self.tree;
        let removed = &mut self.removed;
        ia.append_dict(
            &Signature::make::<&str>(),
            &Signature::make::<HashMap<&str, Variant<u8>>>(),
            |d| {
                for (path, item) in tree.iter_mut().filter(|(_, i)| i.changed) {
                    item.changed = false;
                    let text = item.text();
                    d.append_dict_entry(|e| {
                        e.append(path.as_str());
                        append_value_text_dict(e, &item.value, &text);
                    });
                }
                for path in removed.drain(..) {
                    d.append_dict_entry(|e| {
                        e.append(path.as_str());
                        append_value_text_dict(e, &Value::Invalid, INVALID_TEXT);
                    });
                }
            },
        );
        bus::send(&self.ch, msg);
    }

    /// Answers pending method calls for up to `budget`.
    pub fn pump(&mut self, budget: Duration) -> Result<(), Error> {
        bus::pump_all(&mut [self], budget)
    }

    /// Accepted SetValue writes, oldest first: every one, even of an unchanged value (keep-alive
    /// semantics, §5.3). The stored value is already updated when the write is accepted; the owner
    /// may overwrite it with what it actually applied.
    pub fn take_writes(&mut self) -> impl Iterator<Item = (String, Value)> + '_ {
        self.writes.drain(..)
    }

    fn handle(&mut self, msg: &Message) {
        if msg.msg_type() != MessageType::MethodCall || bus::handle_common(&self.ch, msg) {
            return;
        }
        let path = msg.path().map(|p| p.to_string()).unwrap_or_default();
        let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
        let iface = msg.interface().map(|i| i.to_string());
        let kind = self.tree.kind(&path);
        if kind == Node::Unknown {
            bus::reply_error(&self.ch, msg, UNKNOWN_OBJECT, &format!("no object {path}"));
            return;
        }
        match (iface.as_deref(), member.as_str()) {
            (Some("org.freedesktop.DBus.Introspectable") | None, "Introspect") => {
                let xml = self.tree.introspect(&path);
                bus::reply(&self.ch, msg, |a| a.append(xml.as_str()));
            }
            (Some(BUSITEM) | None, m) => self.handle_busitem(msg, &path, kind, m),
            _ => bus::reply_error(
                &self.ch,
                msg,
                UNKNOWN_METHOD,
                &format!("no method {member}"),
            ),
        }
    }

    fn handle_busitem(&mut self, msg: &Message, path: &str, kind: Node, member: &str) {
        let ch = &self.ch;
        match (member, kind) {
            ("GetValue", Node::Leaf) => {
                if let Some(item) = self.tree.get(path) {
                    bus::reply(ch, msg, |a| append_variant(a, &item.value));
                }
            }
            ("GetText", Node::Leaf) => {
                if let Some(item) = self.tree.get(path) {
                    let text = item.text();
                    bus::reply(ch, msg, |a| a.append(text.as_str()));
                }
            }
            ("GetValue", _) => {
                let tree = &self.tree;
                bus::reply(ch, msg, |a| {
                    a.append_variant(&Signature::make::<HashMap<&str, Variant<u8>>>(), |v| {
                        v.append_dict(
                            &Signature::make::<&str>(),
                            &Signature::make::<Variant<u8>>(),
                            |d| {
                                for (rel, item) in tree.below(path) {
                                    d.append_dict_entry(|e| {
                                        e.append(rel);
                                        append_variant(e, &item.value);
                                    });
                                }
                            },
                        )
                    })
                });
            }
            ("GetText", _) => {
                let tree = &self.tree;
                bus::reply(ch, msg, |a| {
                    a.append_variant(&Signature::make::<HashMap<&str, &str>>(), |v| {
                        v.append_dict(
                            &Signature::make::<&str>(),
                            &Signature::make::<&str>(),
                            |d| {
                                for (rel, item) in tree.below(path) {
                                    let text = item.text();
                                    d.append_dict_entry(|e| {
                                        e.append(rel);
                                        e.append(text.as_str());
                                    });
                                }
                            },
                        )
                    })
                });
            }
            ("GetItems", _) if path == "/" => {
                let tree = &self.tree;
                bus::reply(ch, msg, |a| {
                    a.append_dict(
                        &Signature::make::<&str>(),
                        &Signature::make::<HashMap<&str, Variant<u8>>>(),
                        |d| {
                            for (p, item) in tree.iter() {
                                let text = item.text();
                                d.append_dict_entry(|e| {
                                    e.append(p.as_str());
                                    append_value_text_dict(e, &item.value, &text);
                                });
                            }
                        },
                    )
                });
            }
            ("SetValue", Node::Leaf) => {
                let result = self.set_value(path, msg);
                bus::reply(&self.ch, msg, |a| a.append(result));
            }
            _ => bus::reply_error(
                ch,
                msg,
                UNKNOWN_METHOD,
                &format!("no method {member} on {path}"),
            ),
        }
    }

    /// A write request: validated synchronously, refused with a non-zero result, never an error.
    fn set_value(&mut self, path: &str, msg: &Message) -> i32 {
        let Some(item) = self.tree.get_mut(path) else {
            return SET_REFUSED;
        };
        let Some(requested) = read_value(&mut msg.iter_init()) else {
            log::debug!("vedbus: SetValue {path}: unreadable argument");
            return SET_REFUSED;
        };
        let value = match item.writable.coerce(&requested) {
            Ok(v) => v.normalized(),
            Err(why) => {
                log::debug!("vedbus: SetValue {path} {requested:?} refused: {why:?}");
                return SET_REFUSED;
            }
        };
        if item.value != value {
            item.value = value.clone();
            item.changed = true;
        }
        if self.writes.len() >= MAX_QUEUED_WRITES {
            log::warn!("vedbus: write queue full, dropping the oldest write");
            self.writes.pop_front();
        }
        self.writes.push_back((path.to_string(), value));
        SET_OK
    }
}

impl bus::Connection for Service {
    fn channel(&self) -> &Channel {
        &self.ch
    }

    fn handle(&mut self, msg: &Message) {
        Service::handle(self, msg)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.unregister();
    }
}
