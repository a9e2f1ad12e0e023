//! `com.victronenergy.system` as systemcalc publishes its choice of battery service
//! (dbus-systemcalc-py v2.256 `_determinebatteryservice`; docs/reference/victron.md §9), for the
//! rig's services: `/ActiveBatteryService` is `<class>/<DeviceInstance>` of the chosen service
//! (the class being the first three elements of its name), `/Dc/Battery/BatteryService` its
//! bus name; both invalid when the system uses no battery service.

use crate::{ServiceSpec, Value};

pub const SYSTEM_SERVICE: &str = "com.victronenergy.system";

/// How systemcalc names a service in `/ActiveBatteryService` and the `BatteryService` setting:
/// `com.victronenergy.battery/512` for `com.victronenergy.battery.ttyO1` at DeviceInstance 512.
pub fn class_and_instance(name: &str, device_instance: i32) -> String {
    let class: Vec<&str> = name.split('.').take(3).collect();
    format!("{}/{device_instance}", class.join("."))
}

/// The system service with `chosen` (bus name, DeviceInstance) as its battery service, or none.
pub fn system_choosing(chosen: Option<(&str, i32)>) -> ServiceSpec {
    let (active, bus_name) = match chosen {
        Some((name, instance)) => (
            Value::Text(class_and_instance(name, instance)),
            Value::from(name),
        ),
        None => (Value::Invalid, Value::Invalid),
    };
    (
        SYSTEM_SERVICE.to_string(),
        vec![
            ("/ActiveBatteryService", active),
            ("/Dc/Battery/BatteryService", bus_name),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_by_class_and_instance() {
        assert_eq!(
            class_and_instance("com.victronenergy.battery.socketcan_can0_vi0_uc12345", 512),
            "com.victronenergy.battery/512"
        );
        let (name, paths) = system_choosing(None);
        assert_eq!(name, SYSTEM_SERVICE);
        assert!(paths.iter().all(|(_, v)| *v == Value::Invalid));
    }
}
