//! The device-level duties every driver shares (spec §3, §6): instance allocation before
//! registration, the mandatory paths, `/CustomName` and `/Position` mirrored both ways with their
//! settings, and `/Role` changes re-registering under the new class with the same suffix.

use super::bus::Pump;
use super::settings::{
    SettingDef, Settings, allocate_instance, class_instance_path, parse_class_instance,
};
use super::{BusAddress, Error, Format, Service, Value, Writable};
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
    /// Roles offered through `/Role`; empty = no `/Role` or `/AllowedRoles` paths.
    pub allowed_roles: Vec<String>,
    pub preferred_instance: i32,
    pub product_name: String,
    pub product_id: i32,
    pub serial: String,
    pub firmware_version: Value,
    pub process_name: String,
    pub process_version: String,
    /// `/Mgmt/Connection`, e.g. `Modbus RTU /dev/ttyUSB0 unit 1`.
    pub connection: String,
    /// Publish `/Position` (PV inverter) mirrored with its setting.
    pub has_position: bool,
}

pub struct DeviceService {
    svc: Service,
    ident: String,
    suffix: String,
    class: String,
    instance: i32,
    writes: VecDeque<(String, Value)>,
}

fn custom_name_path(ident: &str) -> String {
    format!("/Settings/Devices/{ident}/CustomName")
}
fn position_path(ident: &str) -> String {
    format!("/Settings/Devices/{ident}/Position")
}

impl DeviceService {
    /// Allocates the instance and the settings, connects, and adds the mandatory paths. The service
    /// is not visible yet: add the device's own paths through [`DeviceService::service`], then call
    /// [`DeviceService::register`].
    pub fn new(
        bus: &BusAddress,
        settings: &mut Settings,
        cfg: &DeviceConfig,
    ) -> Result<Self, Error> {
        let (class, instance) =
            allocate_instance(settings, &cfg.ident, &cfg.role, cfg.preferred_instance)?;
        let mut defs = vec![SettingDef::new(custom_name_path(&cfg.ident), "")];
        if cfg.has_position {
            defs.push(SettingDef::new(position_path(&cfg.ident), 0).range(0, 2));
        }
        let stored = settings.add_settings(&defs)?;
        let custom_name = stored
            .first()
            .cloned()
            .unwrap_or(Value::Text(String::new()));

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
        if !cfg.allowed_roles.is_empty() {
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
        }
        if cfg.has_position {
            let pos = stored.get(1).cloned().unwrap_or(Value::Int(0));
            svc.add_path(
                "/Position",
                pos,
                Format::Plain,
                Writable::Int { min: 0, max: 2 },
            );
        }
        Ok(DeviceService {
            svc,
            ident: cfg.ident.clone(),
            suffix: cfg.suffix.clone(),
            class,
            instance,
            writes: VecDeque::new(),
        })
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
    /// a role change re-registers the service) and returns every write, those included, so the
    /// device can react (e.g. to `/Role`) and see its own paths' writes (`/Ac/PowerLimit`).
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
    /// whether the setting belongs to this device. A new class or instance re-registers the
    /// service, so that consumers that cache the instance from their scan see it.
    pub fn apply_setting(&mut self, path: &str, v: &Value) -> Result<bool, Error> {
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
                self.reregister(class, instance)?;
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
        let path = class_instance_path(&self.ident);
        settings.set_value(&path, Value::Text(format!("{role}:{}", self.instance)))?;
        // localsettings may have bumped the instance to keep it unique within the new class.
        let stored = settings.get_value(&path)?;
        let (class, instance) = stored
            .as_str()
            .and_then(parse_class_instance)
            .map(|(c, i)| (c.to_string(), i))
            .unwrap_or((role.to_string(), self.instance));
        self.reregister(class, instance)
    }

    fn reregister(&mut self, class: String, instance: i32) -> Result<(), Error> {
        let was_registered = self.svc.name().is_some();
        self.svc.unregister();
        log::info!("vedbus: {} becomes {class}:{instance}", self.service_name());
        self.class = class;
        self.instance = instance;
        self.svc.set("/DeviceInstance", Value::Int(instance));
        self.svc.set("/Role", Value::Text(self.class.clone()));
        if was_registered {
            self.register()
        } else {
            Ok(())
        }
    }

    pub fn pump(&mut self, budget: Duration) -> Result<(), Error> {
        self.svc.pump(budget)
    }
}

impl Pump for DeviceService {
    fn pump_once(&mut self) -> Result<usize, Error> {
        self.svc.pump_once()
    }
    fn dispatch_queued(&mut self) -> Result<usize, Error> {
        self.svc.dispatch_queued()
    }
    fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        self.svc.wait(timeout)
    }
    fn watch(&self) -> super::Watch {
        self.svc.watch()
    }
}
