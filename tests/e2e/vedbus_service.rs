//! The published service seen from a separate client on a private dbus-daemon.

use dbus::Message;
use dbus::arg::{ArgType, PropMap, Variant};
use dbus_modbus_client::vedbus::{self, Error, Format, Service, Writable};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use testkit::{Client, PrivateBus, TIMEOUT, Value, items_of, value_of};

use crate::in_process::{Pumped, bus_address};

const NAME: &str = "com.victronenergy.grid.test_1";

fn meter(bus: &PrivateBus) -> Service {
    let mut s = Service::connect(&bus_address(bus)).unwrap();
    s.add_path(
        "/DeviceInstance",
        vedbus::Value::Int(40),
        Format::Plain,
        Writable::No,
    );
    s.add_path(
        "/ProductId",
        vedbus::Value::Int(0xB023),
        Format::Hex,
        Writable::No,
    );
    s.add_path(
        "/Mgmt/ProcessName",
        vedbus::Value::from("dbus-modbus-client"),
        Format::Plain,
        Writable::No,
    );
    s.add_path(
        "/Ac/Power",
        vedbus::Value::Double(1234.4),
        Format::unit("W", 0),
        Writable::No,
    );
    s.add_path(
        "/Ac/L1/Power",
        vedbus::Value::Double(-5.25),
        Format::unit("W", 1),
        Writable::No,
    );
    s.add_path(
        "/Ac/Energy/Forward",
        vedbus::Value::Invalid,
        Format::unit("kWh", 2),
        Writable::No,
    );
    s.add_path(
        "/Ac/Frequency",
        vedbus::Value::Double(f64::NAN),
        Format::unit("Hz", 1),
        Writable::No,
    );
    s.add_path(
        "/AllowedRoles",
        vedbus::Value::TextList(vec!["grid".into(), "pvinverter".into()]),
        Format::Plain,
        Writable::No,
    );
    s.add_path(
        "/Position",
        vedbus::Value::Int(0),
        Format::Plain,
        Writable::Int { min: 0, max: 2 },
    );
    s.add_path(
        "/Ac/PowerLimit",
        vedbus::Value::Double(3000.0),
        Format::unit("W", 0),
        Writable::Double {
            min: 0.0,
            max: 3000.0,
        },
    );
    s.add_path(
        "/CustomName",
        vedbus::Value::from(""),
        Format::Plain,
        Writable::Text,
    );
    s.add_path(
        "/Role",
        vedbus::Value::from("grid"),
        Format::Plain,
        Writable::OneOf(vec!["grid".into(), "pvinverter".into()]),
    );
    s
}

fn started(bus: &PrivateBus) -> Pumped<Service> {
    let mut s = meter(bus);
    s.register(NAME).unwrap();
    Pumped::start(s)
}

/// The signature inside the variant a GetValue returned.
fn inner_signature(m: &Message) -> String {
    m.iter_init()
        .recurse(ArgType::Variant)
        .unwrap()
        .signature()
        .to_string()
}

#[test]
fn get_items_get_value_get_text_key_formats() {
    let bus = PrivateBus::start();
    let _svc = started(&bus);
    let c = Client::connect(&bus.address);

    // GetItems on `/`: absolute keys with a leading slash, Value and Text for every leaf.
    let items = items_of(&c.busitem(NAME, "/", "GetItems").unwrap());
    assert_eq!(items["/DeviceInstance"], (Value::Int(40), "40".to_string()));
    assert_eq!(
        items["/Ac/Power"],
        (Value::Double(1234.4), "1234 W".to_string())
    );
    assert_eq!(
        items["/Ac/L1/Power"],
        (Value::Double(-5.25), "-5.2 W".to_string())
    );
    assert_eq!(items["/ProductId"].1, "0xB023");
    // Invalid reads `---`, as velib's GetText says.
    assert_eq!(
        items["/Ac/Energy/Forward"],
        (Value::Invalid, "---".to_string())
    );
    assert_eq!(items.len(), 12);
    assert!(items.keys().all(|k| k.starts_with('/')));

    // GetValue on `/` and on a node: relative keys without a leading slash, one variant level.
    let root: PropMap = c
        .busitem(NAME, "/", "GetValue")
        .unwrap()
        .read1::<Variant<PropMap>>()
        .unwrap()
        .0;
    let keys: BTreeSet<&str> = root.keys().map(String::as_str).collect();
    assert!(
        keys.contains("Ac/Power")
            && keys.contains("DeviceInstance")
            && keys.contains("Mgmt/ProcessName")
    );
    assert_eq!(
        Value::from_arg(&root["Ac/L1/Power"].0),
        Value::Double(-5.25)
    );
    let ac: PropMap = c
        .busitem(NAME, "/Ac", "GetValue")
        .unwrap()
        .read1::<Variant<PropMap>>()
        .unwrap()
        .0;
    let keys: BTreeSet<&str> = ac.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Energy/Forward",
            "Frequency",
            "L1/Power",
            "Power",
            "PowerLimit"
        ]
        .into_iter()
        .collect()
    );
    let texts: HashMap<String, String> = c
        .busitem(NAME, "/Ac/L1", "GetText")
        .unwrap()
        .read1::<Variant<HashMap<String, String>>>()
        .unwrap()
        .0;
    assert_eq!(
        texts,
        HashMap::from([("Power".to_string(), "-5.2 W".to_string())])
    );

    // Leaves: a plain variant and a string.
    let v = c.busitem(NAME, "/Ac/Power", "GetValue").unwrap();
    assert_eq!(inner_signature(&v), "d");
    assert_eq!(value_of(&v), Value::Double(1234.4));
    assert_eq!(
        inner_signature(&c.busitem(NAME, "/DeviceInstance", "GetValue").unwrap()),
        "i"
    );
    assert_eq!(
        inner_signature(&c.busitem(NAME, "/AllowedRoles", "GetValue").unwrap()),
        "as"
    );
    let t: String = c
        .busitem(NAME, "/Ac/Power", "GetText")
        .unwrap()
        .read1()
        .unwrap();
    assert_eq!(t, "1234 W");

    // Unknown objects are an error reply; GetItems exists on `/` only.
    let e = c.busitem(NAME, "/Ac/Nope", "GetValue").unwrap_err();
    assert_eq!(e.name(), Some("org.freedesktop.DBus.Error.UnknownObject"));
    assert!(c.busitem(NAME, "/Ac", "GetItems").is_err());
}

#[test]
fn invalid_values_are_empty_int_arrays() {
    let bus = PrivateBus::start();
    let svc = started(&bus);
    let c = Client::connect(&bus.address);
    for path in ["/Ac/Energy/Forward", "/Ac/Frequency"] {
        let m = c.busitem(NAME, path, "GetValue").unwrap();
        assert_eq!(inner_signature(&m), "ai", "{path}");
        assert_eq!(value_of(&m), Value::Invalid, "{path}");
    }
    // Setting NaN or infinity later publishes invalid too.
    svc.lock()
        .set("/Ac/Power", vedbus::Value::Double(f64::INFINITY));
    let m = c.busitem(NAME, "/Ac/Power", "GetValue").unwrap();
    assert_eq!(inner_signature(&m), "ai");
    let t: String = c
        .busitem(NAME, "/Ac/Power", "GetText")
        .unwrap()
        .read1()
        .unwrap();
    assert_eq!(t, "---");
}

#[test]
fn items_changed_batches_only_what_changed() {
    let bus = PrivateBus::start();
    let mut svc = meter(&bus);
    svc.register(NAME).unwrap();
    let c = Client::connect(&bus.address);
    let sender = svc.unique_name().unwrap().to_string();
    c.add_match(&format!(
        "type='signal',sender='{sender}',interface='com.victronenergy.BusItem'"
    ));

    // Several changes in one iteration: one signal on `/` with absolute keys.
    svc.set("/Ac/Power", vedbus::Value::Double(100.0));
    svc.set("/Ac/L1/Power", vedbus::Value::Double(100.0));
    svc.set("/Ac/Frequency", vedbus::Value::Double(50.0));
    svc.set("/DeviceInstance", vedbus::Value::Int(40)); // unchanged
    svc.flush();
    svc.pump(Duration::ZERO).unwrap();
    let sig = c
        .next_signal("ItemsChanged", TIMEOUT)
        .expect("ItemsChanged");
    assert_eq!(sig.path().unwrap().to_string(), "/");
    let items = items_of(&sig);
    let expected: BTreeMap<String, (Value, String)> = BTreeMap::from([
        (
            "/Ac/Power".to_string(),
            (Value::Double(100.0), "100 W".to_string()),
        ),
        (
            "/Ac/L1/Power".to_string(),
            (Value::Double(100.0), "100.0 W".to_string()),
        ),
        (
            "/Ac/Frequency".to_string(),
            (Value::Double(50.0), "50.0 Hz".to_string()),
        ),
    ]);
    assert_eq!(items, expected);

    // Nothing changed: no signal. Proven by order: the next signal is the next real change.
    svc.set("/Ac/Power", vedbus::Value::Double(100.0));
    svc.flush();
    svc.flush();
    svc.set("/Ac/Power", vedbus::Value::Double(f64::NAN));
    svc.flush();
    svc.pump(Duration::ZERO).unwrap();
    let sig = c
        .next_signal("ItemsChanged", TIMEOUT)
        .expect("ItemsChanged");
    let items = items_of(&sig);
    assert_eq!(items.len(), 1);
    assert_eq!(items["/Ac/Power"].0, Value::Invalid);
    // A removed path disappears from GetItems and is announced as invalid; a new one is announced.
    svc.remove_path("/Ac/Frequency");
    svc.add_path(
        "/Ac/L2/Power",
        vedbus::Value::Double(7.0),
        Format::Plain,
        Writable::No,
    );
    svc.flush();
    svc.pump(Duration::ZERO).unwrap();
    let items = items_of(
        &c.next_signal("ItemsChanged", TIMEOUT)
            .expect("ItemsChanged"),
    );
    // A removed path reads as invalid, with velib's text for it.
    assert_eq!(items["/Ac/Frequency"], (Value::Invalid, "---".to_string()));
    assert_eq!(items["/Ac/L2/Power"].0, Value::Double(7.0));
    assert_eq!(items.len(), 2);
    assert!(!svc.has_path("/Ac/Frequency"));
    // No per-item PropertiesChanged is emitted (ItemsChanged only, like veutil).
    assert!(
        c.signals_within("PropertiesChanged", Duration::from_millis(50))
            .is_empty()
    );
}

#[test]
fn set_value_validates_coerces_and_reports_every_accepted_write() {
    let bus = PrivateBus::start();
    let svc = started(&bus);
    let c = Client::connect(&bus.address);
    let get = |p: &str| value_of(&c.busitem(NAME, p, "GetValue").unwrap());

    // Refusals: non-zero result, never a D-Bus error, value unchanged.
    assert_ne!(c.set_value(NAME, "/Ac/Power", 5.0), 0, "read-only");
    assert_eq!(get("/Ac/Power"), Value::Double(1234.4));
    assert_ne!(c.set_value(NAME, "/Position", 3), 0, "out of range");
    assert_ne!(c.set_value(NAME, "/Position", "abc"), 0, "wrong type");
    assert_ne!(
        c.set_value(NAME, "/Position", 1.5),
        0,
        "fractional for an int path"
    );
    assert_ne!(c.set_value(NAME, "/Ac/PowerLimit", -1.0), 0, "below min");
    assert_ne!(
        c.set_value(NAME, "/Ac/PowerLimit", Vec::<i32>::new()),
        0,
        "invalid"
    );
    assert_ne!(
        c.set_value(NAME, "/Role", "genset"),
        0,
        "not an allowed role"
    );
    assert_eq!(get("/Position"), Value::Int(0));
    assert_eq!(svc.lock().take_writes().count(), 0);

    // Accepted: numeric strings, doubles and ints, coerced to the path's type.
    assert_eq!(c.set_value(NAME, "/Position", "2"), 0);
    assert_eq!(get("/Position"), Value::Int(2));
    assert_eq!(c.set_value(NAME, "/Position", 1.0), 0);
    assert_eq!(get("/Position"), Value::Int(1));
    assert_eq!(c.set_value(NAME, "/Ac/PowerLimit", 1500), 0);
    assert_eq!(get("/Ac/PowerLimit"), Value::Double(1500.0));
    assert_eq!(c.set_value(NAME, "/Ac/PowerLimit", "1200.5"), 0);
    assert_eq!(get("/Ac/PowerLimit"), Value::Double(1200.5));
    // Keep-alive: the same value again still reaches the owner.
    assert_eq!(c.set_value(NAME, "/Ac/PowerLimit", 1200.5), 0);
    assert_eq!(c.set_value(NAME, "/CustomName", "Roof"), 0);
    assert_eq!(c.set_value(NAME, "/Role", "pvinverter"), 0);
    // A basic value not wrapped in a variant (dbus-send `int32:0`) is accepted too.
    let r: i32 = c
        .call(
            NAME,
            "/Position",
            "com.victronenergy.BusItem",
            "SetValue",
            |m| m.append1(0i32),
        )
        .unwrap()
        .read1()
        .unwrap();
    assert_eq!(r, 0);

    let writes: Vec<(String, vedbus::Value)> = svc.lock().take_writes().collect();
    let expected: Vec<(String, vedbus::Value)> = vec![
        ("/Position".into(), vedbus::Value::Int(2)),
        ("/Position".into(), vedbus::Value::Int(1)),
        ("/Ac/PowerLimit".into(), vedbus::Value::Double(1500.0)),
        ("/Ac/PowerLimit".into(), vedbus::Value::Double(1200.5)),
        ("/Ac/PowerLimit".into(), vedbus::Value::Double(1200.5)),
        ("/CustomName".into(), vedbus::Value::from("Roof")),
        ("/Role".into(), vedbus::Value::from("pvinverter")),
        ("/Position".into(), vedbus::Value::Int(0)),
    ];
    assert_eq!(writes, expected);
}

/// A minimal XML reader for introspection data: (element name, attributes) in document order.
fn xml_elements(xml: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for tag in xml.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        if tag.starts_with('/') || tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let tag = tag.trim_end_matches('/');
        let mut parts = tag.splitn(2, char::is_whitespace);
        let name = parts.next().unwrap().to_string();
        let mut attrs = BTreeMap::new();
        let mut rest = parts.next().unwrap_or("").trim();
        while let Some((k, after)) = rest.split_once("=\"") {
            let (v, after) = after.split_once('"').unwrap();
            attrs.insert(k.trim().to_string(), v.to_string());
            rest = after.trim();
        }
        out.push((name, attrs));
    }
    out
}

struct Introspected {
    methods: BTreeMap<String, String>, // BusItem method -> "in sig -> out sig"
    signals: BTreeSet<String>,
    nodes: Vec<String>,
    interfaces: BTreeSet<String>,
}

fn introspect(c: &Client, path: &str) -> Introspected {
    let xml: String = c
        .call(
            NAME,
            path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            |m| m,
        )
        .unwrap()
        .read1()
        .unwrap();
    let mut r = Introspected {
        methods: BTreeMap::new(),
        signals: BTreeSet::new(),
        nodes: vec![],
        interfaces: BTreeSet::new(),
    };
    let (mut iface, mut method) = (String::new(), None::<String>);
    for (el, a) in xml_elements(&xml) {
        match el.as_str() {
            "interface" => {
                iface = a["name"].clone();
                r.interfaces.insert(iface.clone());
            }
            "method" if iface == "com.victronenergy.BusItem" => {
                method = Some(a["name"].clone());
                r.methods.insert(a["name"].clone(), String::new());
            }
            "signal" => {
                method = None;
                r.signals.insert(a["name"].clone());
            }
            "arg" => {
                if let Some(m) = &method {
                    let e = r.methods.get_mut(m).unwrap();
                    e.push_str(&format!(
                        "{}:{} ",
                        a.get("direction").map_or("out", String::as_str),
                        a["type"]
                    ));
                }
            }
            "node" if a.contains_key("name") => r.nodes.push(a["name"].clone()),
            _ => {}
        }
    }
    r
}

#[test]
fn introspection_lists_methods_and_children_on_every_object() {
    let bus = PrivateBus::start();
    let svc = started(&bus);
    let c = Client::connect(&bus.address);

    let root = introspect(&c, "/");
    assert!(
        root.interfaces
            .contains("org.freedesktop.DBus.Introspectable")
    );
    assert_eq!(root.methods["GetItems"], "out:a{sa{sv}} ");
    assert_eq!(root.methods["GetValue"], "out:v ");
    assert!(!root.methods.contains_key("SetValue"));
    assert_eq!(
        root.nodes,
        [
            "Ac",
            "AllowedRoles",
            "CustomName",
            "DeviceInstance",
            "Mgmt",
            "Position",
            "ProductId",
            "Role"
        ]
    );

    let leaf = introspect(&c, "/Ac/L1/Power");
    assert_eq!(leaf.methods["SetValue"], "in:v out:i ");
    // Only the signal the service sends is advertised: ItemsChanged on `/`, nothing on a leaf.
    assert!(root.signals.contains("ItemsChanged"), "{:?}", root.signals);
    assert!(leaf.signals.is_empty(), "{:?}", leaf.signals);
    assert_eq!(leaf.methods["GetText"], "out:s ");
    assert!(leaf.nodes.is_empty() && !leaf.methods.contains_key("GetItems"));

    // Walking the tree from `/` like the `dbus` CLI finds exactly the published leaves.
    let mut leaves = BTreeSet::new();
    let mut todo = vec!["/".to_string()];
    while let Some(p) = todo.pop() {
        let i = introspect(&c, &p);
        if i.methods.contains_key("SetValue") {
            leaves.insert(p.clone());
        }
        for n in i.nodes {
            todo.push(if p == "/" {
                format!("/{n}")
            } else {
                format!("{p}/{n}")
            });
        }
    }
    let published: BTreeSet<String> = svc.lock().paths().map(str::to_string).collect();
    assert_eq!(leaves, published);
    assert_eq!(leaves.len(), 12);
}

#[test]
fn registration_happens_after_the_paths_exist() {
    let bus = PrivateBus::start();
    let c = Client::connect(&bus.address);
    c.add_match(&format!(
        "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{NAME}'"
    ));
    let b = bus_address(&bus);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        let mut s = Service::connect(&b).unwrap();
        s.add_path(
            "/DeviceInstance",
            vedbus::Value::Int(40),
            Format::Plain,
            Writable::No,
        );
        s.add_path(
            "/ProductName",
            vedbus::Value::from("SDM230"),
            Format::Plain,
            Writable::No,
        );
        s.register(NAME).unwrap();
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            s.pump(Duration::from_millis(5)).unwrap();
        }
    });
    // The instant the name appears, a consumer scans it with GetItems.
    let sig = c
        .next_signal("NameOwnerChanged", TIMEOUT)
        .expect("name appears");
    let (name, old, new): (String, String, String) = sig.read3().unwrap();
    assert_eq!((name.as_str(), old.as_str()), (NAME, ""));
    assert!(new.starts_with(':'));
    let items = items_of(&c.busitem(NAME, "/", "GetItems").unwrap());
    assert_eq!(items["/DeviceInstance"].0, Value::Int(40));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    t.join().unwrap();
}

#[test]
fn a_taken_name_is_a_clear_error_and_unregistering_releases_it() {
    let bus = PrivateBus::start();
    let c = Client::connect(&bus.address);
    let mut first = meter(&bus);
    first.register(NAME).unwrap();
    let mut second = meter(&bus);
    match second.register(NAME) {
        Err(Error::NameTaken(n)) => assert_eq!(n, NAME),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert!(second.name().is_none());
    first.unregister();
    assert!(!c.name_has_owner(NAME));
    second.register(NAME).unwrap();
    assert!(c.name_has_owner(NAME));
    drop(second);
    assert!(!c.name_has_owner(NAME));
    assert!(matches!(
        first.register("not a name"),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn malformed_calls_get_answers_not_panics() {
    let bus = PrivateBus::start();
    let svc = started(&bus);
    let c = Client::connect(&bus.address);
    let bi = "com.victronenergy.BusItem";

    // SetValue without an argument, with two, with a dict, with a struct: refused with non-zero.
    let r = |m: Result<Message, dbus::Error>| m.unwrap().read1::<i32>().unwrap();
    assert_ne!(r(c.call(NAME, "/Position", bi, "SetValue", |m| m)), 0);
    assert_eq!(
        r(c.call(NAME, "/Position", bi, "SetValue", |m| m
            .append2(Variant(1i32), "x"))),
        0
    );
    assert_ne!(
        r(c.call(NAME, "/Position", bi, "SetValue", |m| m
            .append1(Variant(PropMap::new())))),
        0
    );
    assert_ne!(
        r(c.call(NAME, "/Position", bi, "SetValue", |m| m
            .append1(Variant((1i32, "a"))))),
        0
    );
    assert_ne!(
        r(c.call(NAME, "/CustomName", bi, "SetValue", |m| m
            .append1(Variant(vec![1u8, 2])))),
        0
    );
    // Methods that do not exist, on nodes, on unknown paths, on other interfaces: error replies.
    assert!(
        c.call(NAME, "/Ac", bi, "SetValue", |m| m.append1(Variant(1i32)))
            .is_err()
    );
    assert!(c.call(NAME, "/Ac/Power", bi, "Explode", |m| m).is_err());
    assert!(
        c.call(
            NAME,
            "/Nope",
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            |m| m
        )
        .is_err()
    );
    assert!(
        c.call(NAME, "/Ac/Power", "org.example.Other", "GetValue", |m| m)
            .is_err()
    );
    assert!(
        c.call(
            NAME,
            "/",
            "org.freedesktop.DBus.Properties",
            "GetAll",
            |m| m.append1("x")
        )
        .is_err()
    );
    // Extra arguments to getters are ignored.
    assert!(
        c.call(NAME, "/", bi, "GetItems", |m| m.append1(7i32))
            .is_ok()
    );
    let m = Message::new_method_call(
        NAME,
        "/DeviceInstance",
        "com.victronenergy.BusItem",
        "GetValue",
    )
    .unwrap();
    assert!(c.ch.send_with_reply_and_block(m, TIMEOUT).is_ok());
    assert!(
        c.call(NAME, "/", "org.freedesktop.DBus.Peer", "Ping", |m| m)
            .is_ok()
    );
    // A stray signal addressed to the service is ignored.
    let mut s = Message::new_signal("/", bi, "ItemsChanged")
        .unwrap()
        .append1(7i32);
    s.set_destination(Some(NAME.into()));
    c.ch.send(s).unwrap();
    // Still alive and unchanged.
    assert_eq!(
        value_of(&c.busitem(NAME, "/DeviceInstance", "GetValue").unwrap()),
        Value::Int(40)
    );
    assert!(!svc.obj.is_poisoned());
}

#[test]
fn a_bus_that_does_not_read_coalesces_changes_instead_of_queueing_them() {
    let bus = PrivateBus::start();
    let mut svc = meter(&bus);
    svc.register(NAME).unwrap();
    let c = Client::connect(&bus.address);
    let sender = svc.unique_name().unwrap().to_string();
    c.add_match(&format!(
        "type='signal',sender='{sender}',member='ItemsChanged'"
    ));

    // Far more signals than the socket buffers hold while the daemon is stopped.
    const FLUSHES: u32 = 20_000;
    bus.freeze(true);
    for n in 1..=FLUSHES {
        svc.set("/Ac/Power", vedbus::Value::Double(f64::from(n)));
        svc.flush();
    }
    bus.freeze(false);
    // Once the bus reads again, a later flush sends what is still pending.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut signals = Vec::new();
    let last_power = |s: &Vec<Message>| s.last().map(|m| items_of(m)["/Ac/Power"].0.clone());
    while last_power(&signals) != Some(Value::Double(f64::from(FLUSHES))) {
        assert!(
            std::time::Instant::now() < deadline,
            "the last value never arrived"
        );
        svc.pump(Duration::from_millis(10)).unwrap();
        svc.flush();
        signals.extend(c.signals_within("ItemsChanged", Duration::from_millis(10)));
    }
    assert!(
        (signals.len() as u32) < FLUSHES / 2,
        "{} signals were queued",
        signals.len()
    );
}
