//! The settings client and the device duties against the localsettings stand-in.

use dbus_modbus_client::vedbus::{
    DeviceConfig, DeviceService, Error, Format, SettingDef, Settings, Value, Writable,
    allocate_instance,
};
use std::time::Duration;
use testkit::{Client, FakeSettings, PrivateBus, SettingValue, TIMEOUT, value_of};

use crate::in_process::{Pumped, bus_address};

fn settings(bus: &PrivateBus) -> Settings {
    Settings::connect(&bus_address(bus), TIMEOUT).unwrap()
}

#[test]
fn instance_is_bumped_when_two_devices_ask_for_grid_40() {
    let bus = PrivateBus::start();
    let fake = FakeSettings::start(&bus.address);
    let mut s = settings(&bus);
    assert_eq!(
        allocate_instance(&mut s, "sdm_A", "grid", 40).unwrap(),
        ("grid".to_string(), 40)
    );
    assert_eq!(
        allocate_instance(&mut s, "sdm_B", "grid", 40).unwrap(),
        ("grid".to_string(), 41)
    );
    // Unique per class only; an existing record is left as it is.
    assert_eq!(
        allocate_instance(&mut s, "gw_C", "pvinverter", 40).unwrap(),
        ("pvinverter".to_string(), 40)
    );
    assert_eq!(
        allocate_instance(&mut s, "sdm_A", "grid", 40).unwrap(),
        ("grid".to_string(), 40)
    );
    assert_eq!(
        fake.get("/Settings/Devices/sdm_B/ClassAndVrmInstance"),
        Some(SettingValue::Str("grid:41".into()))
    );
    assert!(matches!(
        allocate_instance(&mut s, "_bad", "grid", 40),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn add_settings_sends_typed_defaults_and_uses_the_reported_values() {
    let bus = PrivateBus::start();
    let fake = FakeSettings::start(&bus.address);
    let mut s = settings(&bus);
    let defs = [
        SettingDef::new("/Settings/T/Int", 3).range(0, 10),
        SettingDef::new("/Settings/T/Double", 1.5),
        SettingDef::new("/Settings/T/Text", "abc"),
    ];
    let values = s.add_settings(&defs).unwrap();
    assert_eq!(
        values,
        [Value::Int(3), Value::Double(1.5), Value::from("abc")]
    );
    let int = fake.setting("/Settings/T/Int").unwrap();
    assert_eq!(
        (int.value, int.min, int.max),
        (
            SettingValue::Int(3),
            Some(SettingValue::Int(0)),
            Some(SettingValue::Int(10))
        )
    );
    assert_eq!(
        fake.get("/Settings/T/Double"),
        Some(SettingValue::Float(1.5))
    );

    // An existing value is never overwritten: the service's value comes back.
    let c = Client::connect(&bus.address);
    assert_eq!(
        c.set_value("com.victronenergy.settings", "/Settings/T/Int", 7),
        0
    );
    assert_eq!(s.add_settings(&defs[..1]).unwrap(), [Value::Int(7)]);

    // Refusals carry localsettings' code.
    let wrong_type = s.add_settings(&[SettingDef::new("/Settings/T/Int", "x")]);
    assert!(
        matches!(wrong_type, Err(Error::Setting { code: -5, .. })),
        "{wrong_type:?}"
    );
    let outside = s.add_settings(&[SettingDef::new("/Other/X", 1)]);
    assert!(
        matches!(outside, Err(Error::Setting { code: -9, .. })),
        "{outside:?}"
    );
    let bad_default = s.add_settings(&[SettingDef::new(
        "/Settings/T/L",
        Value::TextList(vec!["a".into()]),
    )]);
    assert!(matches!(bad_default, Err(Error::Invalid(_))));

    // Writes: accepted, or refused with the service's result.
    s.set_value("/Settings/T/Int", Value::Int(9)).unwrap();
    assert_eq!(fake.get("/Settings/T/Int"), Some(SettingValue::Int(9)));
    assert!(matches!(
        s.set_value("/Settings/T/Int", Value::Int(11)),
        Err(Error::Setting { code: -1, .. })
    ));
    assert_eq!(s.get_value("/Settings/T/Text").unwrap(), Value::from("abc"));
}

#[test]
fn changes_made_by_others_are_reported_once() {
    let bus = PrivateBus::start();
    let _fake = FakeSettings::start(&bus.address);
    let mut s = settings(&bus);
    s.add_settings(&[
        SettingDef::new("/Settings/T/A", 1),
        SettingDef::new("/Settings/T/B", "x"),
    ])
    .unwrap();
    let c = Client::connect(&bus.address);
    assert_eq!(
        c.set_value("com.victronenergy.settings", "/Settings/T/A", 2),
        0
    );
    assert_eq!(
        c.set_value("com.victronenergy.settings", "/Settings/T/B", "y"),
        0
    );
    let mut changes = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while changes.len() < 2 && std::time::Instant::now() < deadline {
        s.pump(Duration::from_millis(20)).unwrap();
        changes.extend(s.take_changes());
    }
    assert_eq!(
        changes,
        [
            ("/Settings/T/A".to_string(), Value::Int(2)),
            ("/Settings/T/B".to_string(), Value::from("y"))
        ]
    );
    assert_eq!(s.cached("/Settings/T/A"), Some(&Value::Int(2)));
}

#[test]
fn waiting_for_the_settings_service_is_bounded() {
    let bus = PrivateBus::start();
    assert!(matches!(
        Settings::connect(&bus_address(&bus), Duration::from_millis(300)),
        Err(Error::SettingsUnavailable)
    ));
    // A settings service that comes up while waiting is found.
    let address = bus.address.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        FakeSettings::start(&address)
    });
    let s = Settings::connect(&bus_address(&bus), TIMEOUT);
    let _fake = starter.join().unwrap();
    assert!(s.is_ok());
}

fn config() -> DeviceConfig {
    DeviceConfig {
        ident: "sdm230_123".into(),
        suffix: "sdm230_123".into(),
        role: "grid".into(),
        allowed_roles: vec!["grid".into(), "pvinverter".into()],
        generic_meter: true,
        preferred_instance: 40,
        product_name: "Eastron SDM230".into(),
        product_id: 0xFFFF,
        serial: "123".into(),
        firmware_version: Value::Invalid,
        process_name: "dbus-modbus-client".into(),
        process_version: "0.1".into(),
        connection: "Modbus RTU /dev/ttyUSB0 unit 1".into(),
        adopt_from: None,
    }
}

const GRID: &str = "com.victronenergy.grid.sdm230_123";
const PV: &str = "com.victronenergy.pvinverter.sdm230_123";
const SETTINGS: &str = "com.victronenergy.settings";

/// GetValue of `path` of `dest`, as a client reads it.
fn get(c: &Client, dest: &str, path: &str) -> testkit::Value {
    value_of(&c.busitem(dest, path, "GetValue").unwrap())
}

/// Pumps the settings client and hands its changes to the device until `done`.
fn settle(
    s: &mut Settings,
    dev: &Pumped<DeviceService>,
    mut done: impl FnMut(&mut DeviceService) -> bool,
) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        s.pump(Duration::from_millis(10)).unwrap();
        let changes: Vec<_> = s.take_changes().collect();
        let mut d = dev.lock();
        for (p, v) in changes {
            d.apply_setting(s, &p, &v).unwrap();
        }
        d.service().flush();
        if done(&mut d) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "timed out");
    }
}

#[test]
fn device_service_mirrors_settings_and_changes_role() {
    let bus = PrivateBus::start();
    let fake = FakeSettings::start(&bus.address);
    // Another device holds grid:40 already.
    let mut s = settings(&bus);
    allocate_instance(&mut s, "other", "grid", 40).unwrap();
    let c = Client::connect(&bus.address);

    let mut dev = DeviceService::new(&bus_address(&bus), &mut s, &config()).unwrap();
    assert_eq!((dev.class(), dev.instance()), ("grid", 41));
    dev.service().add_path(
        "/Ac/Power",
        Value::Double(5.0),
        Format::unit("W", 0),
        Writable::No,
    );
    assert!(
        !c.name_has_owner(GRID),
        "nothing is visible before register"
    );
    dev.register().unwrap();
    let dev = Pumped::start(dev);
    assert_eq!(get(&c, GRID, "/DeviceInstance"), testkit::Value::Int(41));
    assert_eq!(get(&c, GRID, "/Role"), testkit::Value::from("grid"));
    assert_eq!(
        get(&c, GRID, "/AllowedRoles"),
        testkit::Value::TextList(vec!["grid".into(), "pvinverter".into()])
    );
    assert_eq!(
        get(&c, GRID, "/Mgmt/Connection"),
        testkit::Value::from("Modbus RTU /dev/ttyUSB0 unit 1")
    );

    // A grid meter has neither /Position nor /IsGenericEnergyMeter.
    for path in ["/Position", "/IsGenericEnergyMeter"] {
        assert!(c.busitem(GRID, path, "GetValue").is_err(), "{path}");
    }
    assert_eq!(fake.get("/Settings/Devices/sdm230_123/Position"), None);

    // /CustomName written on the service lands in the settings...
    assert_eq!(c.set_value(GRID, "/CustomName", "Meter"), 0);
    let writes: Vec<_> = dev.lock().take_writes(&mut s).unwrap().collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        fake.get("/Settings/Devices/sdm230_123/CustomName"),
        Some(SettingValue::Str("Meter".into()))
    );

    // ...and changes of the settings by others land on the service.
    assert_eq!(
        c.set_value(SETTINGS, "/Settings/Devices/sdm230_123/CustomName", "Shed"),
        0
    );
    settle(&mut s, &dev, |d| {
        d.service().get("/CustomName") == Some(&Value::from("Shed"))
    });
    assert_eq!(get(&c, GRID, "/CustomName"), testkit::Value::from("Shed"));

    // /Role: rebuilt under the new class, same suffix, instance from the settings, with the
    // paths of the role: /Position (a new setting) and /IsGenericEnergyMeter.
    c.add_match("type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'");
    assert_eq!(c.set_value(GRID, "/Role", "pvinverter"), 0);
    let writes: Vec<_> = dev.lock().take_writes(&mut s).unwrap().collect();
    assert_eq!(writes, [("/Role".to_string(), Value::from("pvinverter"))]);
    assert!(!c.name_has_owner(GRID));
    assert!(c.name_has_owner(PV));
    assert_eq!(
        fake.get("/Settings/Devices/sdm230_123/ClassAndVrmInstance"),
        Some(SettingValue::Str("pvinverter:41".into()))
    );
    assert_eq!(get(&c, PV, "/Role"), testkit::Value::from("pvinverter"));
    assert_eq!(get(&c, PV, "/DeviceInstance"), testkit::Value::Int(41));
    assert_eq!(get(&c, PV, "/Ac/Power"), testkit::Value::Double(5.0));
    assert_eq!(get(&c, PV, "/Position"), testkit::Value::Int(0));
    assert_eq!(get(&c, PV, "/IsGenericEnergyMeter"), testkit::Value::Int(1));

    // /Position written on the service lands in the settings, and back.
    assert_eq!(c.set_value(PV, "/Position", 2), 0);
    let writes: Vec<_> = dev.lock().take_writes(&mut s).unwrap().collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        fake.get("/Settings/Devices/sdm230_123/Position"),
        Some(SettingValue::Int(2))
    );
    assert_eq!(
        c.set_value(SETTINGS, "/Settings/Devices/sdm230_123/Position", 1),
        0
    );
    settle(&mut s, &dev, |d| {
        d.service().get("/Position") == Some(&Value::Int(1))
    });
    let text: String = c
        .busitem(PV, "/Position", "GetText")
        .unwrap()
        .read1()
        .unwrap();
    assert_eq!(text, "AC Output");

    // An instance change made in the settings (GUI VRM instance page) re-registers too.
    assert_eq!(
        c.set_value(
            SETTINGS,
            "/Settings/Devices/sdm230_123/ClassAndVrmInstance",
            "pvinverter:45"
        ),
        0
    );
    settle(&mut s, &dev, |d| d.instance() == 45);
    assert_eq!(get(&c, PV, "/DeviceInstance"), testkit::Value::Int(45));
    let gone_and_back: Vec<(String, String, String)> = c
        .signals_within("NameOwnerChanged", Duration::from_millis(100))
        .iter()
        .map(|m| m.read3().unwrap())
        .filter(|(n, _, _)| n == PV)
        .collect();
    assert!(
        gone_and_back.iter().any(|(_, _, new)| new.is_empty()),
        "{gone_and_back:?}"
    );
    assert!(
        gone_and_back
            .last()
            .is_some_and(|(_, _, new)| !new.is_empty())
    );
}

#[test]
fn no_device_service_without_the_settings_service() {
    let bus = PrivateBus::start();
    let fake = FakeSettings::start(&bus.address);
    let mut s = settings(&bus);
    drop(fake);
    let c = Client::connect(&bus.address);
    assert!(DeviceService::new(&bus_address(&bus), &mut s, &config()).is_err());
    assert!(!c.name_has_owner(GRID));
}
