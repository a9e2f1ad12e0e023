//! Debian's own D-Bus clients (dbus-send, gdbus), which no one here wrote, against a published
//! service.

use dbus_modbus_client::vedbus::{Format, Service, Value, Writable};
use std::process::Command;
use testkit::PrivateBus;

use crate::in_process::{Pumped, bus_address};

const NAME: &str = "com.victronenergy.pvinverter.cli_1";

fn published(bus: &PrivateBus) -> Pumped<Service> {
    let mut s = Service::connect(&bus_address(bus)).unwrap();
    s.add_path(
        "/DeviceInstance",
        Value::Int(20),
        Format::Plain,
        Writable::No,
    );
    s.add_path(
        "/ProductName",
        Value::from("Growatt MIN 3000TL-X"),
        Format::Plain,
        Writable::No,
    );
    s.add_path(
        "/Ac/Power",
        Value::Double(1234.5),
        Format::unit("W", 0),
        Writable::No,
    );
    s.add_path(
        "/Ac/L1/Power",
        Value::Double(1234.5),
        Format::unit("W", 0),
        Writable::No,
    );
    s.add_path(
        "/Ac/Energy/Forward",
        Value::Invalid,
        Format::unit("kWh", 2),
        Writable::No,
    );
    s.add_path(
        "/Ac/PowerLimit",
        Value::Double(3000.0),
        Format::unit("W", 0),
        Writable::Double {
            min: 0.0,
            max: 3000.0,
        },
    );
    s.register(NAME).unwrap();
    Pumped::start(s)
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn dbus_send(bus: &PrivateBus, path: &str, method: &str, extra: &[&str]) -> String {
    let bus_arg = format!("--bus={}", bus.address);
    let dest = format!("--dest={NAME}");
    let method = format!("com.victronenergy.BusItem.{method}");
    let mut args = vec![
        bus_arg.as_str(),
        "--print-reply",
        dest.as_str(),
        path,
        method.as_str(),
    ];
    args.extend_from_slice(extra);
    run("dbus-send", &args)
}

#[test]
fn dbus_send_reads_and_writes() {
    let bus = PrivateBus::start();
    let svc = published(&bus);
    let out = dbus_send(&bus, "/Ac/Power", "GetValue", &[]);
    assert!(out.contains("variant       double 1234.5"), "{out}");
    let out = dbus_send(&bus, "/Ac/Power", "GetText", &[]);
    assert!(out.contains("string \"1234 W\""), "{out}");
    let out = dbus_send(&bus, "/DeviceInstance", "GetValue", &[]);
    assert!(out.contains("variant       int32 20"), "{out}");
    // Invalid: an empty int32 array inside the variant.
    let out = dbus_send(&bus, "/Ac/Energy/Forward", "GetValue", &[]);
    assert!(out.contains("variant       array ["), "{out}");
    assert!(!out.contains("int32"), "{out}");
    // GetItems: absolute keys.
    let out = dbus_send(&bus, "/", "GetItems", &[]);
    assert!(
        out.contains("string \"/DeviceInstance\"") && out.contains("string \"/Ac/L1/Power\""),
        "{out}"
    );
    // SetValue with a string variant (like the `dbus` CLI without `%`): accepted, result 0.
    let out = dbus_send(&bus, "/Ac/PowerLimit", "SetValue", &["variant:string:1500"]);
    assert!(out.contains("int32 0"), "{out}");
    let out = dbus_send(&bus, "/Ac/Power", "SetValue", &["variant:double:1"]);
    assert!(out.contains("int32 1"), "{out}");
    assert_eq!(
        svc.lock().get("/Ac/PowerLimit"),
        Some(&Value::Double(1500.0))
    );
}

#[test]
fn gdbus_introspects_the_whole_tree_and_calls_methods() {
    let bus = PrivateBus::start();
    let _svc = published(&bus);
    let out = run(
        "gdbus",
        &[
            "introspect",
            "--address",
            &bus.address,
            "--dest",
            NAME,
            "--object-path",
            "/",
            "--recurse",
        ],
    );
    for node in [
        "node /Ac {",
        "node /Ac/L1 {",
        "node /Ac/L1/Power {",
        "node /DeviceInstance {",
    ] {
        assert!(out.contains(node), "{node} missing in\n{out}");
    }
    assert!(
        out.contains("interface com.victronenergy.BusItem {"),
        "{out}"
    );
    assert!(out.contains("GetItems(out a{sa{sv}} items);"), "{out}");
    assert!(out.contains("SetValue(in  v value,"), "{out}");

    let out = run(
        "gdbus",
        &[
            "call",
            "--address",
            &bus.address,
            "--dest",
            NAME,
            "--object-path",
            "/Ac",
            "--method",
            "com.victronenergy.BusItem.GetValue",
        ],
    );
    assert!(
        out.contains("'Power': <1234.5>") && out.contains("'L1/Power': <1234.5>"),
        "{out}"
    );
    let out = run(
        "gdbus",
        &[
            "call",
            "--address",
            &bus.address,
            "--dest",
            NAME,
            "--object-path",
            "/Ac/PowerLimit",
            "--method",
            "com.victronenergy.BusItem.SetValue",
            "<2000>",
        ],
    );
    assert_eq!(out.trim(), "(0,)");
}
