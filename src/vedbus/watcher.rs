//! Following other services' values (battery, vebus…): discovery by name prefix and
//! NameOwnerChanged, an initial GetItems scan (GetValue on `/` as fallback), then ItemsChanged and
//! PropertiesChanged. Scans are asynchronous: a slow peer never blocks the loop.

use super::bus::{self, BUSITEM, DBUS_NAME, DBUS_PATH};
use super::value::{Value, read_dict_sv, read_items};
use super::{BusAddress, Error};
use dbus::arg::ArgType;
use dbus::channel::Channel;
use dbus::{Message, MessageType};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Scans in flight; a peer that never answers is forgotten after `SCAN_TIMEOUT`.
const MAX_PENDING_SCANS: usize = 32;
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds memory when no path filter is given and a peer publishes without end.
const MAX_VALUES_PER_SERVICE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scan {
    Items,
    RootValue,
}

struct Pending {
    serial: u32,
    service: String,
    scan: Scan,
    sent: Instant,
}

struct Watched {
    /// Unique name of the current owner: signals carry it as sender.
    owner: String,
    values: BTreeMap<String, (Value, Instant)>,
}

pub struct Watcher {
    ch: Channel,
    prefixes: Vec<String>,
    paths: Vec<String>,
    services: BTreeMap<String, Watched>,
    pending: Vec<Pending>,
}

/// `name` is `prefix` or lies below it (`com.victronenergy.battery` matches
/// `com.victronenergy.battery.ttyO1`, not `com.victronenergy.batteryx`).
pub(crate) fn name_matches(prefix: &str, name: &str) -> bool {
    let prefix = prefix.trim_end_matches('.');
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Watcher {
    /// Watches services whose name matches one of `prefixes`, keeping only `paths` (all paths
    /// when empty; a vebus service has hundreds, so name the ones you need).
    pub fn connect(bus: &BusAddress, prefixes: &[&str], paths: &[&str]) -> Result<Self, Error> {
        let ch = bus::open(bus)?;
        // Only the name changes below the prefixes, not every client connecting to the bus.
        for p in prefixes {
            let ns = p.trim_end_matches('.');
            bus::add_match(
                &ch,
                &format!(
                    "type='signal',sender='{DBUS_NAME}',member='NameOwnerChanged',arg0namespace='{ns}'"
                ),
            )?;
        }
        // Value signals come through one match per watched service (`appeared`): a match on
        // every ItemsChanged would wake the daemon for each service on the bus, its own too.
        let mut w = Watcher {
            ch,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            services: BTreeMap::new(),
            pending: Vec::new(),
        };
        let names = bus::call(&w.ch, DBUS_NAME, DBUS_PATH, DBUS_NAME, "ListNames", |_| {})?;
        let mut names: Vec<String> = names.get1::<Vec<String>>().unwrap_or_default();
        names.retain(|n| w.wanted(n));
        for name in names {
            let owner = bus::call(
                &w.ch,
                DBUS_NAME,
                DBUS_PATH,
                DBUS_NAME,
                "GetNameOwner",
                |a| a.append(name.as_str()),
            );
            if let Some(owner) = owner.ok().and_then(|m| m.get1::<String>()) {
                w.appeared(name, owner);
            }
        }
        Ok(w)
    }

    pub fn pump(&mut self, budget: Duration) -> Result<(), Error> {
        bus::pump_all(&mut [self], budget)
    }

    /// The value of `path` in the first service (by name) matching `prefix` that has it, with the
    /// time it was received. `None` when no such service is present (or it lacks the path).
    pub fn get(&self, prefix: &str, path: &str) -> Option<(Value, Instant)> {
        self.services
            .iter()
            .filter(|(name, _)| name_matches(prefix, name))
            .find_map(|(_, s)| s.values.get(path).cloned())
    }

    /// The value of `path` in the service named exactly `service`, with the time it was
    /// received.
    pub fn value_of(&self, service: &str, path: &str) -> Option<(&Value, Instant)> {
        self.services
            .get(service)?
            .values
            .get(path)
            .map(|(v, at)| (v, *at))
    }

    /// Names of the present services matching `prefix`.
    pub fn services<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.services
            .keys()
            .filter(move |n| name_matches(prefix, n))
            .map(String::as_str)
    }

    fn wanted(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name_matches(p, name))
    }

    fn keeps(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p == path)
    }

    fn appeared(&mut self, name: String, owner: String) {
        log::info!("vedbus: watching {name}");
        self.forget(&name);
        // Signals only from the watched services, not every ItemsChanged on the bus (a GX has
        // dozens of services). Sent before the scan, so no change between the two is missed.
        self.match_rule("AddMatch", &owner);
        let values = BTreeMap::new();
        self.services
            .insert(name.clone(), Watched { owner, values });
        self.request(name, Scan::Items);
    }

    fn forget(&mut self, name: &str) {
        if let Some(old) = self.services.remove(name) {
            self.match_rule("RemoveMatch", &old.owner);
        }
    }

    /// Adds or removes the signal subscription for one sender, without waiting for the reply
    /// (an error reply only means the sender is already gone).
    fn match_rule(&self, method: &str, owner: &str) {
        let rule = format!("type='signal',sender='{owner}',interface='{BUSITEM}'");
        if let Ok(msg) = Message::new_method_call(DBUS_NAME, DBUS_PATH, DBUS_NAME, method) {
            bus::send(&self.ch, msg.append1(rule));
        }
    }

    fn request(&mut self, service: String, scan: Scan) {
        let method = if scan == Scan::Items {
            "GetItems"
        } else {
            "GetValue"
        };
        let Ok(msg) = Message::new_method_call(service.as_str(), "/", BUSITEM, method) else {
            return;
        };
        let Ok(serial) = self.ch.send(msg) else {
            return;
        };
        if self.pending.len() >= MAX_PENDING_SCANS {
            self.pending.remove(0);
        }
        self.pending.push(Pending {
            serial,
            service,
            scan,
            sent: Instant::now(),
        });
    }

    fn store(&mut self, service: &str, updates: Vec<(String, Value)>) {
        let now = Instant::now();
        let keep: Vec<(String, Value)> =
            updates.into_iter().filter(|(p, _)| self.keeps(p)).collect();
        if let Some(s) = self.services.get_mut(service) {
            for (p, v) in keep {
                if s.values.len() < MAX_VALUES_PER_SERVICE || s.values.contains_key(&p) {
                    s.values.insert(p, (v, now));
                }
            }
        }
    }

    fn service_of_sender(&self, sender: &str) -> Option<String> {
        self.services
            .iter()
            .find(|(_, s)| s.owner == sender)
            .map(|(n, _)| n.clone())
    }

    fn handle(&mut self, msg: &Message) {
        match msg.msg_type() {
            MessageType::Signal => self.handle_signal(msg),
            MessageType::MethodReturn | MessageType::Error => self.handle_reply(msg),
            MessageType::MethodCall => {
                if !bus::handle_common(&self.ch, msg) {
                    bus::reply_error(&self.ch, msg, bus::UNKNOWN_OBJECT, "nothing exported here");
                }
            }
        }
    }

    fn handle_signal(&mut self, msg: &Message) {
        let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
        if member == "NameOwnerChanged" && msg.sender().as_deref() == Some(DBUS_NAME) {
            let (name, _old, new) = msg.get3::<String, String, String>();
            let (Some(name), Some(new)) = (name, new) else {
                return;
            };
            if !self.wanted(&name) {
                return;
            }
            if new.is_empty() {
                if self.services.contains_key(&name) {
                    log::info!("vedbus: {name} is gone");
                }
                self.forget(&name);
            } else {
                self.appeared(name, new);
            }
            return;
        }
        let Some(sender) = msg.sender().map(|s| s.to_string()) else {
            return;
        };
        let Some(service) = self.service_of_sender(&sender) else {
            return;
        };
        let updates = match member.as_str() {
            "ItemsChanged" => read_items(&mut msg.iter_init()),
            "PropertiesChanged" => {
                let Some(path) = msg.path().map(|p| p.to_string()) else {
                    return;
                };
                read_dict_sv(&mut msg.iter_init())
                    .and_then(|d| d.into_iter().find(|(k, _)| k == "Value"))
                    .map(|(_, v)| vec![(path, v)])
            }
            _ => None,
        };
        if let Some(u) = updates {
            self.store(&service, u);
        }
    }

    fn handle_reply(&mut self, msg: &Message) {
        let Some(serial) = msg.get_reply_serial() else {
            return;
        };
        let Some(i) = self.pending.iter().position(|p| p.serial == serial) else {
            return;
        };
        let p = self.pending.swap_remove(i);
        if !self.services.contains_key(&p.service) {
            return;
        }
        let is_error = msg.msg_type() == MessageType::Error;
        match (p.scan, is_error) {
            (Scan::Items, true) => self.request(p.service, Scan::RootValue),
            (Scan::Items, false) => {
                if let Some(items) = read_items(&mut msg.iter_init()) {
                    self.store(&p.service, items);
                }
            }
            (Scan::RootValue, false) => {
                let mut it = msg.iter_init();
                let dict = it.recurse(ArgType::Variant).as_mut().and_then(read_dict_sv);
                if let Some(d) = dict {
                    // Node GetValue keys are relative to `/`, without the slash.
                    let abs = d.into_iter().map(|(k, v)| (format!("/{k}"), v)).collect();
                    self.store(&p.service, abs);
                }
            }
            (Scan::RootValue, true) => log::warn!("vedbus: cannot read {}", p.service),
        }
    }
}

impl bus::Connection for Watcher {
    fn channel(&self) -> &Channel {
        &self.ch
    }

    fn handle(&mut self, msg: &Message) {
        Watcher::handle(self, msg)
    }

    fn after_read(&mut self) {
        let now = Instant::now();
        self.pending
            .retain(|p| now.duration_since(p.sent) < SCAN_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn prefix_matching_stops_at_dots() {
        assert!(name_matches(
            "com.victronenergy.battery",
            "com.victronenergy.battery.ttyO1"
        ));
        assert!(name_matches(
            "com.victronenergy.battery.",
            "com.victronenergy.battery.x"
        ));
        assert!(name_matches(
            "com.victronenergy.battery",
            "com.victronenergy.battery"
        ));
        assert!(!name_matches(
            "com.victronenergy.battery",
            "com.victronenergy.batteryx.a"
        ));
        assert!(!name_matches(
            "com.victronenergy.battery",
            "com.victronenergy.vebus.a"
        ));
    }
}
