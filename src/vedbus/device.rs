//! The device-level duties every driver shares (docs/reference/victron.md §2–§5):
//! instance allocation before registration, adopting the replaced driver's settings, the
//! mandatory paths, `/CustomName` and `/Position` mirrored both ways with their settings, and
//! roles as Victron's energy meters have them: a `/Role` change rebuilds the service under the
//! new class with the same suffix, with the paths of that role (`/Position`,
//! `/IsGenericEnergyMeter`).

use super::adopt::{self, Adopted};
use super::settings::{
    SettingDef, Settings, allocate_instance, class_instance_path, parse_class_instance,
};
use super::{BusAddress, Error, Format, Service, Value, Writable};
use dbus::Message;
use dbus::channel::Channel;
use std::collections::VecDeque;
use std::time::Duration;

/// What a device is, as published on D-Bus.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Settings identifier (`[A-Za-z0-9_]`, e.g. `growatt_AB123`): `/Settings/Devices/<ident>/…`.
    pub ident: String,
    /// Service name suffix, stable across restarts, no dots, no leading digit.
    pub suffix: String,
    /// Default class (`grid`, `pvinverter`); a stored ClassAndVrmInstance wins over it.
    pub role: String,
    /// Roles a user may choose: with more than one `/Role` is writable and `/AllowedRoles` lists
    /// them; otherwise `/Role` is read-only (dbus-modbus-client `init_dbus`).
    pub allowed_roles: Vec<String>,
    /// A generic energy meter: in any role but `grid` it publishes `/IsGenericEnergyMeter` = 1
    /// (dbus-modbus-client `EnergyMeter`; never on a limitable PV inverter).
    pub generic_meter: bool,
    pub preferred_instance: i32,
    pub product_name: String,
    pub product_id: i32,
    pub serial: String,
    pub firmware_version: Value,
    pub process_name: String,
    pub process_version: String,
    /// `/Mgmt/Connection`, e.g. `Modbus RTU /dev/ttyUSB0 unit 1`.
    pub connection: String,
    /// The settings ident the replaced driver used for this device (`cg_<serial>`): its entry is
    /// taken over on the first start (`adopt`).
    pub adopt_from: Option<String>,
}

/// Whether a role has `/Position` (AC input 1 / AC output / AC input 2), persisted in
/// `/Settings/Devices/<ident>/Position`: Victron's energy meters in these roles, and PV inverters
/// (docs/reference/victron.md §5).
pub(crate) fn role_has_position(class: &str) -> bool {
    matches!(class, "pvinverter" | "evcharger" | "heatpump" | "acload")
}

/// `/Position` texts, as gui-v2 names the choices (docs/reference/victron.md §5, §7).
const PV_POSITIONS: &[(i32, &str)] = &[(0, "AC input 1"), (1, "AC Output"), (2, "AC input 2")];
const AC_POSITIONS: &[(i32, &str)] = &[(0, "AC Input"), (1, "AC Output")];

fn position_format(class: &str) -> Format {
    Format::Texts(if class == "pvinverter" {
        PV_POSITIONS
    } else {
        AC_POSITIONS
    })
}

pub struct DeviceService {
    svc: Service,
    ident: String,
    suffix: String,
    class: String,
    instance: i32,
    generic_meter: bool,
    writes: VecDeque<(String, Value)>,
}

fn custom_name_path(ident: &str) -> String {
    format!("/Settings/Devices/{ident}/CustomName")
}
fn position_path(ident: &str) -> String {
    format!("/Settings/Devices/{ident}/Position")
}

/// Creates `/Settings/Devices/<ident>/Position` if needed; its value.
fn position_setting(settings: &mut Settings, ident: &str) -> Result<Value, Error> {
    let def = SettingDef::new(position_path(ident), 0).range(0, 2);
    let stored = settings.add_settings(&[def])?;
    Ok(stored.into_iter().next().unwrap_or(Value::Int(0)))
}

/// Writes `<class>:<instance>` and reads back what localsettings stored: it moves the instance
/// on until it is free within the class (docs/reference/victron.md §3).
fn store_class_instance(
    settings: &mut Settings,
    ident: &str,
    wanted: &str,
) -> Result<(String, i32), Error> {
    let path = class_instance_path(ident);
    settings.set_value(&path, Value::Text(wanted.to_string()))?;
    let stored = settings.get_value(&path)?;
    stored
        .as_str()
        .and_then(parse_class_instance)
        .map(|(c, i)| (c.to_string(), i))
        .ok_or_else(|| Error::BadReply(format!("{path} = {stored:?}, not class:instance")))
}

/// Writes an adopted value into the daemon's own setting; what the setting holds afterwards
/// (`None` and a warning when localsettings refuses it).
fn carry_over(settings: &mut Settings, path: &str, v: Value) -> Option<Value> {
    match settings.set_value(path, v.clone()) {
        Ok(()) => Some(v),
        Err(e) => {
            log::warn!("adopting {path}: {e}");
            None
        }
    }
}

impl DeviceService {
    /// Takes over the replaced driver's entry (if any), allocates the instance and the settings,
    /// connects, and adds the mandatory paths. The service is not visible yet: add the device's
    /// own paths through [`DeviceService::service`], then call [`DeviceService::register`].
    pub fn new(
        bus: &BusAddress,
        settings: &mut Settings,
        cfg: &DeviceConfig,
    ) -> Result<Self, Error> {
        let adopted = match &cfg.adopt_from {
            Some(old) => adopt::take_over(settings, old, &cfg.ident)?,
            None => None,
        };
        let adopted = adopted.unwrap_or_default();
        // The daemon's own defaults first, the adopted values written over them: a later start
        // (AddSettings with the same defaults) then changes nothing at all.
        let (mut class, mut instance) =
            allocate_instance(settings, &cfg.ident, &cfg.role, cfg.preferred_instance)?;
        if let Some(ci) = &adopted.class_instance {
            match store_class_instance(settings, &cfg.ident, ci) {
                Ok(stored) => (class, instance) = stored,
                Err(e) => log::warn!("adopting {ci}: {e}"),
            }
        }
        let name_path = custom_name_path(&cfg.ident);
        let stored = settings.add_settings(&[SettingDef::new(name_path.clone(), "")])?;
        let mut custom_name = stored
            .into_iter()
            .next()
            .unwrap_or(Value::Text(String::new()));
        if let Some(name) = &adopted.custom_name {
            custom_name =
                carry_over(settings, &name_path, Value::from(name.as_str())).unwrap_or(custom_name);
        }
        if let Some(p) = adopted.position {
            // Carried over even in a role without /Position: it is there if the role changes.
            position_setting(settings, &cfg.ident)?;
            carry_over(settings, &position_path(&cfg.ident), Value::Int(p));
        }
        log_adoption(&adopted, &cfg.ident, &class, instance);

        let mut svc = Service::connect(bus)?;
        let text = |s: &str| Value::Text(s.to_string());
        svc.add_path(
            "/Mgmt/ProcessName",
            text(&cfg.process_name),
            Format::Plain,
            Writable::No,
        );
        svc.add_path(
            "/Mgmt/ProcessVersion",
            text(&cfg.process_version),
            Format::Plain,
            Writable::No,
        );
        svc.add_path(
            "/Mgmt/Connection",
            text(&cfg.connection),
            Format::Plain,
            Writable::No,
        );
        svc.add_path(
            "/DeviceInstance",
            Value::Int(instance),
            Format::Plain,
            Writable::No,
        );
        svc.add_path(
            "/ProductId",
            Value::Int(cfg.product_id),
            Format::Hex,
            Writable::No,
        );
        svc.add_path(
            "/ProductName",
            text(&cfg.product_name),
            Format::Plain,
            Writable::No,
        );
        svc.add_path("/CustomName", custom_name, Format::Plain, Writable::Text);
        svc.add_path("/Serial", text(&cfg.serial), Format::Plain, Writable::No);
        svc.add_path(
            "/FirmwareVersion",
            cfg.firmware_version.clone(),
            Format::Plain,
            Writable::No,
        );
        svc.add_path("/Connected", Value::Int(1), Format::Plain, Writable::No);
        if cfg.allowed_roles.len() > 1 {
            svc.add_path(
                "/Role",
                text(&class),
                Format::Plain,
                Writable::OneOf(cfg.allowed_roles.clone()),
            );
            svc.add_path(
                "/AllowedRoles",
                Value::TextList(cfg.allowed_roles.clone()),
                Format::Plain,
                Writable::No,
            );
        } else {
            svc.add_path("/Role", text(&class), Format::Plain, Writable::No);
        }
        let mut dev = DeviceService {
            svc,
            ident: cfg.ident.clone(),
            suffix: cfg.suffix.clone(),
            class,
            instance,
            generic_meter: cfg.generic_meter,
            writes: VecDeque::new(),
        };
        dev.role_paths(settings)?;
        Ok(dev)
    }

    /// The paths that depend on the role: `/Position` (with its setting) and
    /// `/IsGenericEnergyMeter`, added or removed for the current class. Only while unregistered:
    /// consumers see them with the service's name.
    fn role_paths(&mut self, settings: &mut Settings) -> Result<(), Error> {
        if role_has_position(&self.class) {
            let position = position_setting(settings, &self.ident)?;
            self.svc.add_path(
                "/Position",
                position,
                position_format(&self.class),
                Writable::Int { min: 0, max: 2 },
            );
        } else {
            self.svc.remove_path("/Position");
        }
        if self.generic_meter && self.class != "grid" {
            self.svc.add_path(
                "/IsGenericEnergyMeter",
                Value::Int(1),
                Format::Plain,
                Writable::No,
            );
        } else {
            self.svc.remove_path("/IsGenericEnergyMeter");
        }
        Ok(())
    }

    /// `com.victronenergy.<class>.<suffix>`.
    pub fn service_name(&self) -> String {
        format!("com.victronenergy.{}.{}", self.class, self.suffix)
    }

    /// Requests the service name; every path must exist by now.
    pub fn register(&mut self) -> Result<(), Error> {
        let name = self.service_name();
        self.svc.register(&name)
    }

    /// Releases the name (device lost); the paths are kept for a later `register`.
    pub fn unregister(&mut self) {
        self.svc.unregister();
    }

    pub fn service(&mut self) -> &mut Service {
        &mut self.svc
    }

    pub fn class(&self) -> &str {
        &self.class
    }

    pub fn instance(&self) -> i32 {
        self.instance
    }

    /// Handles the accepted writes to `/CustomName`, `/Position` and `/Role` (persisting them;
    /// a role change rebuilds the service) and returns every write, those included, so the
    /// device can react and see its own paths' writes (`/Ac/PowerLimit`).
    pub fn take_writes(
        &mut self,
        settings: &mut Settings,
    ) -> Result<impl Iterator<Item = (String, Value)> + '_, Error> {
        let writes: Vec<(String, Value)> = self.svc.take_writes().collect();
        let mut result = Ok(());
        for (path, v) in writes {
            let r = match path.as_str() {
                "/CustomName" => settings.set_value(&custom_name_path(&self.ident), v.clone()),
                "/Position" => settings.set_value(&position_path(&self.ident), v.clone()),
                "/Role" => match v.as_str() {
                    Some(role) => self.change_role(settings, role),
                    None => Ok(()),
                },
                _ => Ok(()),
            };
            if let Err(e) = r {
                log::warn!("vedbus: {} {path}: {e}", self.service_name());
                result = result.and(Err(e));
            }
            if self.writes.len() >= super::MAX_QUEUED_WRITES {
                self.writes.pop_front();
            }
            self.writes.push_back((path, v));
        }
        result.map(|()| self.writes.drain(..))
    }

    /// Mirrors a settings change (from [`Settings::take_changes`]) onto the service. Returns
    /// whether the setting belongs to this device. A new class rebuilds the service for that
    /// role; a new instance re-registers it, so that consumers that cache the instance from
    /// their scan see it.
    pub fn apply_setting(
        &mut self,
        settings: &mut Settings,
        path: &str,
        v: &Value,
    ) -> Result<bool, Error> {
        if path == custom_name_path(&self.ident) {
            self.svc.set("/CustomName", v.clone());
        } else if path == position_path(&self.ident) {
            self.svc.set("/Position", v.clone());
        } else if path == class_instance_path(&self.ident) {
            let Some((class, instance)) = v.as_str().and_then(parse_class_instance) else {
                return Ok(true);
            };
            if class != self.class || instance != self.instance {
                let class = class.to_string();
                self.reregister(settings, class, instance)?;
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn change_role(&mut self, settings: &mut Settings, role: &str) -> Result<(), Error> {
        if role == self.class {
            return Ok(());
        }
        let (class, instance) =
            store_class_instance(settings, &self.ident, &format!("{role}:{}", self.instance))?;
        self.reregister(settings, class, instance)
    }

    /// Leaves the bus, takes the new class and instance (a new class: the paths of its role),
    /// and comes back under the new name if it was registered.
    fn reregister(
        &mut self,
        settings: &mut Settings,
        class: String,
        instance: i32,
    ) -> Result<(), Error> {
        let was_registered = self.svc.name().is_some();
        self.svc.unregister();
        log::info!("vedbus: {} becomes {class}:{instance}", self.service_name());
        let new_role = class != self.class;
        self.class = class;
        self.instance = instance;
        self.svc.set("/DeviceInstance", Value::Int(instance));
        self.svc.set("/Role", Value::Text(self.class.clone()));
        let rebuilt = if new_role {
            self.role_paths(settings)
        } else {
            Ok(())
        };
        let registered = if was_registered {
            self.register()
        } else {
            Ok(())
        };
        rebuilt.and(registered)
    }

    pub fn pump(&mut self, budget: Duration) -> Result<(), Error> {
        self.svc.pump(budget)
    }
}

/// One log line for an adoption: where the device ended up.
fn log_adoption(adopted: &Adopted, ident: &str, class: &str, instance: i32) {
    if !adopted.from.is_empty() {
        log::info!(
            "/Settings/Devices/{ident} takes over from {}: now {class}:{instance}",
            adopted.from
        );
    }
}

impl super::bus::Connection for DeviceService {
    fn channel(&self) -> &Channel {
        super::bus::Connection::channel(&self.svc)
    }

    fn handle(&mut self, msg: &Message) {
        super::bus::Connection::handle(&mut self.svc, msg)
    }
}
