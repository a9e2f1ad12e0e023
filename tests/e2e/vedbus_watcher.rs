//! Watching other services: discovery, initial scan, change signals, disappearance.

use dbus::Message;
use dbus::arg::{PropMap, RefArg, Variant};
use dbus::channel::Channel;
use dbus::message::MessageType;
use dbus_modbus_client::vedbus::{Value, Watcher};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use testkit::{Client, FakeService, FakeSettings, PrivateBus, TIMEOUT, request_name, value_of};

use crate::in_process::bus_address;

const BATTERY: &str = "com.victronenergy.battery";
const VEBUS: &str = "com.victronenergy.vebus";

/// Pumps the watcher until `cond` holds (panics after the generous timeout).
fn pump_until(w: &mut Watcher, mut cond: impl FnMut(&Watcher) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond(w) {
        assert!(Instant::now() < deadline, "condition not reached");
        w.pump(Duration::from_millis(10)).unwrap();
    }
}

fn value(w: &Watcher, prefix: &str, path: &str) -> Option<Value> {
    w.get(prefix, path).map(|(v, _)| v)
}

#[test]
fn discovers_follows_and_forgets_services() {
    let bus = PrivateBus::start();
    let battery = FakeService::start(
        &bus.address,
        "com.victronenergy.battery.ttyO1",
        &[
            ("/Soc", testkit::Value::Double(50.0)),
            ("/Dc/0/Power", testkit::Value::Double(-100.0)),
            ("/Other", testkit::Value::Int(1)),
        ],
    );
    let _decoy = FakeService::start(
        &bus.address,
        "com.victronenergy.batteryx.a",
        &[("/Soc", testkit::Value::Double(1.0))],
    );
    let mut w = Watcher::connect(
        &bus_address(&bus),
        &[BATTERY, VEBUS],
        &["/Soc", "/Dc/0/Power", "/Ac/ActiveIn/L1/P"],
    )
    .unwrap();

    // Present at start: read with GetItems; only the requested paths are kept.
    pump_until(&mut w, |w| value(w, BATTERY, "/Soc").is_some());
    assert_eq!(value(&w, BATTERY, "/Soc"), Some(Value::Double(50.0)));
    assert_eq!(
        value(&w, BATTERY, "/Dc/0/Power"),
        Some(Value::Double(-100.0))
    );
    assert_eq!(value(&w, BATTERY, "/Other"), None);
    assert_eq!(
        w.services(BATTERY).collect::<Vec<_>>(),
        ["com.victronenergy.battery.ttyO1"]
    );
    assert_eq!(w.services("com.victronenergy.batteryx").count(), 0);

    // Changes arrive through ItemsChanged, with the time they were received.
    let (_, first_seen) = w.get(BATTERY, "/Soc").unwrap();
    battery.set("/Soc", testkit::Value::Double(51.5));
    pump_until(&mut w, |w| {
        value(w, BATTERY, "/Soc") == Some(Value::Double(51.5))
    });
    assert!(w.get(BATTERY, "/Soc").unwrap().1 >= first_seen);
    battery.set("/Soc", testkit::Value::Double(f64::NAN));
    pump_until(&mut w, |w| {
        value(w, BATTERY, "/Soc") == Some(Value::Invalid)
    });

    // A service that appears later is discovered through NameOwnerChanged.
    let vebus = FakeService::start(
        &bus.address,
        "com.victronenergy.vebus.ttyS4",
        &[("/Ac/ActiveIn/L1/P", testkit::Value::Double(-300.0))],
    );
    pump_until(&mut w, |w| value(w, VEBUS, "/Ac/ActiveIn/L1/P").is_some());
    assert_eq!(
        value(&w, VEBUS, "/Ac/ActiveIn/L1/P"),
        Some(Value::Double(-300.0))
    );

    // A service that goes away is forgotten.
    drop(battery);
    pump_until(&mut w, |w| w.get(BATTERY, "/Soc").is_none());
    assert_eq!(w.services(BATTERY).count(), 0);
    assert!(w.get(VEBUS, "/Ac/ActiveIn/L1/P").is_some());
    drop(vebus);
    pump_until(&mut w, |w| w.get(VEBUS, "/Ac/ActiveIn/L1/P").is_none());
}

/// An old-style service without GetItems that signals with PropertiesChanged only.
fn legacy_service(address: &str, name: &str, cmd: mpsc::Receiver<f64>, ready: mpsc::Sender<()>) {
    let mut ch = Channel::open_private(address).unwrap();
    ch.register().unwrap();
    assert!(request_name(&ch, name));
    ready.send(()).unwrap();
    loop {
        match cmd.try_recv() {
            Ok(p) => {
                let mut d = PropMap::new();
                d.insert("Value".into(), Variant(Box::new(p) as Box<dyn RefArg>));
                d.insert("Text".into(), Variant(Box::new(format!("{p} W"))));
                let sig = Message::new_signal(
                    "/Ac/ActiveIn/L1/P",
                    "com.victronenergy.BusItem",
                    "PropertiesChanged",
                )
                .unwrap()
                .append1(d);
                ch.send(sig).unwrap();
            }
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        ch.read_write(Some(Duration::from_millis(5))).unwrap();
        while let Some(msg) = ch.pop_message() {
            if msg.msg_type() != MessageType::MethodCall {
                continue;
            }
            let reply = match (
                msg.path().unwrap().to_string().as_str(),
                msg.member().unwrap().to_string().as_str(),
            ) {
                ("/", "GetValue") => {
                    let mut d = PropMap::new();
                    d.insert("Ac/ActiveIn/L1/P".into(), Variant(Box::new(120.0f64)));
                    d.insert("State".into(), Variant(Box::new(9i32)));
                    msg.method_return().append1(Variant(d))
                }
                _ => msg.error(&"org.freedesktop.DBus.Error.UnknownMethod".into(), c"no"),
            };
            ch.send(reply).unwrap();
        }
    }
}

#[test]
fn falls_back_to_get_value_on_root_and_follows_properties_changed() {
    let bus = PrivateBus::start();
    let mut w = Watcher::connect(&bus_address(&bus), &[VEBUS], &[]).unwrap();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let address = bus.address.clone();
    let t = std::thread::spawn(move || {
        legacy_service(&address, "com.victronenergy.vebus.legacy", rx, ready_tx)
    });
    ready_rx.recv_timeout(TIMEOUT).unwrap();

    // GetItems fails, GetValue on `/` answers with relative keys: stored under absolute paths.
    pump_until(&mut w, |w| value(w, VEBUS, "/State").is_some());
    assert_eq!(value(&w, VEBUS, "/State"), Some(Value::Int(9)));
    assert_eq!(
        value(&w, VEBUS, "/Ac/ActiveIn/L1/P"),
        Some(Value::Double(120.0))
    );

    tx.send(-250.0).unwrap();
    pump_until(&mut w, |w| {
        value(w, VEBUS, "/Ac/ActiveIn/L1/P") == Some(Value::Double(-250.0))
    });
    drop(tx);
    t.join().unwrap();
    pump_until(&mut w, |w| w.get(VEBUS, "/State").is_none());
}

#[test]
fn one_pump_serves_every_connection_of_the_loop() {
    use dbus_modbus_client::vedbus::{Format, Service, Settings, Writable, pump_all};
    let bus = PrivateBus::start();
    let _fake = FakeSettings::start(&bus.address);
    let battery = FakeService::start(
        &bus.address,
        "com.victronenergy.battery.x",
        &[("/Soc", testkit::Value::Double(80.0))],
    );
    // The daemon's side of the loop: two services, the settings client and a watcher.
    let mut grid = Service::connect(&bus_address(&bus)).unwrap();
    grid.add_path(
        "/DeviceInstance",
        Value::Int(40),
        Format::Plain,
        Writable::No,
    );
    grid.register("com.victronenergy.grid.loop").unwrap();
    let mut pv = Service::connect(&bus_address(&bus)).unwrap();
    pv.add_path(
        "/DeviceInstance",
        Value::Int(20),
        Format::Plain,
        Writable::No,
    );
    pv.add_path(
        "/Ac/PowerLimit",
        Value::Double(3000.0),
        Format::Plain,
        Writable::Double {
            min: 0.0,
            max: 3000.0,
        },
    );
    pv.register("com.victronenergy.pvinverter.loop").unwrap();
    let mut settings = Settings::connect(&bus_address(&bus), TIMEOUT).unwrap();
    let mut watcher = Watcher::connect(&bus_address(&bus), &[BATTERY], &["/Soc"]).unwrap();

    // A separate client makes blocking calls to both services while the loop pumps.
    let address = bus.address.clone();
    let client = std::thread::spawn(move || {
        let c = Client::connect(&address);
        let mut results = Vec::new();
        for _ in 0..3 {
            let v = c
                .busitem("com.victronenergy.grid.loop", "/DeviceInstance", "GetValue")
                .unwrap();
            results.push(value_of(&v));
            results.push(testkit::Value::Int(c.set_value(
                "com.victronenergy.pvinverter.loop",
                "/Ac/PowerLimit",
                1000.0,
            )));
        }
        results
    });
    let mut writes = 0;
    let deadline = Instant::now() + TIMEOUT;
    while !client.is_finished() || value(&watcher, BATTERY, "/Soc").is_none() {
        assert!(Instant::now() < deadline, "the loop did not serve everyone");
        pump_all(
            &mut [&mut grid, &mut pv, &mut settings, &mut watcher],
            Duration::from_millis(20),
        )
        .unwrap();
        writes += pv.take_writes().count();
    }
    assert_eq!(
        client.join().unwrap(),
        [40, 0, 40, 0, 40, 0].map(testkit::Value::Int)
    );
    assert_eq!(writes, 3);
    assert_eq!(value(&watcher, BATTERY, "/Soc"), Some(Value::Double(80.0)));
    drop(battery);
}
