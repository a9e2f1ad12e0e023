//! A unit published on D-Bus: its service, built from the model's path table, and the rate at
//! which new readings reach the bus.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::cli::Options;
use crate::devices::{BusTiming, Identity, Model, PathDef, Unit};
use crate::registers::RegisterMap;
use crate::vedbus::{
    self, BusAddress, DeviceConfig, DeviceService, Format, Pump, Service, Settings, Value, Writable,
};

/// How often a service whose bus name another process holds asks for it again.
const NAME_RETRY: Duration = Duration::from_secs(5);

/// `/StatusCode` texts as dbus-fronius gives them (`Inverter::setStatusCode`;
/// docs/reference/victron.md §7); other codes show as their number.
const STATUS_TEXTS: &[(i32, &str)] = &[
    (0, "Startup 0/6"),
    (1, "Startup 1/6"),
    (2, "Startup 2/6"),
    (3, "Startup 3/6"),
    (4, "Startup 4/6"),
    (5, "Startup 5/6"),
    (6, "Startup 6/6"),
    (7, "Running"),
    (8, "Standby"),
    (9, "Boot loading"),
    (10, "Error"),
    (11, "Running (MPPT)"),
    (12, "Running (Throttled)"),
];

fn format(p: &PathDef) -> Format {
    match p.unit {
        Unit::Code if p.path == "/StatusCode" => Format::Texts(STATUS_TEXTS),
        Unit::Code => Format::Plain,
        u => Format::unit(u.suffix(), u.decimals() as u8),
    }
}

/// Text identity fields (firmware, hardware version): shown as is by the GUI; invalid when the
/// device gave none (docs/reference/victron.md §10).
fn text_or_invalid(s: &str) -> Value {
    if s.is_empty() {
        Value::Invalid
    } else {
        Value::Text(s.to_string())
    }
}

fn value(p: &PathDef, v: Option<f64>) -> Value {
    match (v, p.unit) {
        (None, _) => Value::Invalid,
        (Some(v), Unit::Code) => Value::Int(v as i32),
        (Some(v), _) => Value::Double(v),
    }
}

pub(super) struct Published {
    dev: DeviceService,
    identity: Identity,
    last_publish: Option<Instant>,
    /// The map's store count at the last [`write_values`](Self::write_values): the values on
    /// the bus are the map's as of then (None: write them all again).
    written_stores: Option<u64>,
    /// Set while the bus name is held by another process: when to ask again.
    name_retry_at: Option<Instant>,
}

impl Published {
    /// Allocates the instance through settings and builds the service; not yet on the bus.
    pub(super) fn new(
        bus: &BusAddress,
        settings: &mut Settings,
        identity: Identity,
        connection: String,
        opts: &Options,
    ) -> Result<Published, vedbus::Error> {
        let model = identity.model;
        let ident = identity.ident();
        let cfg = DeviceConfig {
            suffix: ident.clone(),
            ident,
            role: model.roles.default.to_string(),
            allowed_roles: model.roles.allowed.iter().map(|r| r.to_string()).collect(),
            generic_meter: model.roles.generic_meter,
            // dbus-modbus-client allocates meters at 40, dbus-fronius PV inverters at 20.
            preferred_instance: if model.roles.default == "pvinverter" {
                20
            } else {
                40
            },
            product_name: model.name.to_string(),
            product_id: i32::from(model.product_id),
            serial: identity.serial.clone(),
            firmware_version: text_or_invalid(&identity.firmware),
            process_name: "dbus-modbus-client".to_string(),
            process_version: env!("CARGO_PKG_VERSION").to_string(),
            connection,
            adopt_from: identity.original_ident.clone(),
        };
        let mut dev = DeviceService::new(bus, settings, &cfg)?;
        let svc = dev.service();
        svc.add_path(
            "/HardwareVersion",
            text_or_invalid(&identity.hardware),
            Format::Plain,
            Writable::No,
        );
        svc.add_path("/NrOfPhases", Value::Int(1), Format::Plain, Writable::No);
        // How often /Ac/Power reaches the bus (hub4control paces its loop on it): at every
        // publish, unless the unit cannot be asked that often (docs/reference/victron.md §8).
        svc.add_path(
            "/RefreshTime",
            Value::Int(refresh_time_ms(opts.publish_interval, model.bus)),
            Format::unit("ms", 0),
            Writable::No,
        );
        for p in model.paths {
            for path in p.paths() {
                svc.add_path(path, Value::Invalid, format(p), Writable::No);
            }
        }
        Ok(Published {
            dev,
            identity,
            last_publish: None,
            written_stores: None,
            name_retry_at: None,
        })
    }

    pub(super) fn serial(&self) -> &str {
        &self.identity.serial
    }

    /// Publishes the current readings (all invalid for a unit just identified: nothing from a
    /// previous session is ever shown as live), then takes the bus name. A name held by another
    /// process (a second instance, a stale driver) is not fatal: it is asked for again every
    /// [`NAME_RETRY`] by [`Published::retry_name`], with one log line per episode.
    pub(super) fn go_online(&mut self, map: &RegisterMap) -> Result<(), vedbus::Error> {
        self.written_stores = None;
        self.write_values(map);
        self.last_publish = Some(Instant::now());
        self.take_name(Instant::now())
    }

    /// Asks for the bus name again when it was taken and the retry is due.
    pub(super) fn retry_name(&mut self, now: Instant) -> Result<(), vedbus::Error> {
        match self.name_retry_at {
            Some(at) if now >= at => self.take_name(now),
            _ => Ok(()),
        }
    }

    fn take_name(&mut self, now: Instant) -> Result<(), vedbus::Error> {
        match self.dev.register() {
            Ok(()) => {
                if self.name_retry_at.take().is_some() {
                    info!(
                        "{} registered: its bus name is free again",
                        self.dev.service_name()
                    );
                }
                Ok(())
            }
            Err(vedbus::Error::NameTaken(name)) => {
                if self.name_retry_at.is_none() {
                    warn!(
                        "D-Bus name {name} is already taken by another process (a second instance?); \
                         not published, asking again every {} s",
                        NAME_RETRY.as_secs()
                    );
                }
                self.name_retry_at = Some(now + NAME_RETRY);
                Ok(())
            }
            Err(e) => {
                // Keep retrying at the same pace, not on every loop iteration.
                if self.name_retry_at.is_some() {
                    self.name_retry_at = Some(now + NAME_RETRY);
                }
                Err(e)
            }
        }
    }

    /// Releases the bus name: the service disappears, as official drivers do for a lost device.
    pub(super) fn go_offline(&mut self) {
        self.name_retry_at = None;
        self.dev.unregister();
    }

    /// Sets every path from the map, unless nothing was read since the last time (each publish
    /// would otherwise decode and look up every path of the device for nothing).
    fn write_values(&mut self, map: &RegisterMap) {
        if self.written_stores == Some(map.stores()) {
            return;
        }
        self.written_stores = Some(map.stores());
        let svc = self.dev.service();
        for (p, v) in self.identity.model.published_values(map) {
            for path in p.paths() {
                svc.set(path, value(p, v));
            }
        }
    }

    /// Sends what changed, at most once per `interval` (the limiter reads the registers directly
    /// and is not held back by this).
    pub(super) fn publish(
        &mut self,
        map: &RegisterMap,
        now: Instant,
        interval: Duration,
        extra: impl FnOnce(&mut Service),
    ) {
        if self
            .last_publish
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return;
        }
        self.last_publish = Some(now);
        self.write_values(map);
        extra(self.dev.service());
        self.dev.service().flush();
    }

    pub(super) fn service(&mut self) -> &mut Service {
        self.dev.service()
    }

    pub(super) fn model(&self) -> &'static Model {
        self.identity.model
    }

    pub(super) fn pump_handle(&mut self) -> &mut dyn Pump {
        &mut self.dev
    }

    /// Persists /CustomName, /Position and /Role writes; returns the other accepted writes.
    pub(super) fn take_writes(
        &mut self,
        settings: &mut Settings,
        out: &mut Vec<(String, Value)>,
    ) -> Result<(), vedbus::Error> {
        out.extend(self.dev.take_writes(settings)?);
        Ok(())
    }

    pub(super) fn apply_setting(
        &mut self,
        settings: &mut Settings,
        path: &str,
        v: &Value,
    ) -> Result<bool, vedbus::Error> {
        self.dev.apply_setting(settings, path, v)
    }

    pub(super) fn service_name(&self) -> String {
        self.dev.service_name()
    }

    /// The service's class (role) now: `grid`, `pvinverter`…
    pub(super) fn class(&self) -> &str {
        self.dev.class()
    }
}

/// `/RefreshTime` in ms: the publish interval, which paces every value on the bus, or the
/// unit's shortest interval between commands if that is longer (its power cannot be read more
/// often).
fn refresh_time_ms(publish_interval: Duration, bus: BusTiming) -> i32 {
    let interval = publish_interval.max(bus.min_command_interval);
    i32::try_from(interval.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_read_like_dbus_fronius() {
        let status = PathDef::derived("/StatusCode", Unit::Code, |_| None);
        let text = |v: i32| vedbus::format_text(&Value::Int(v), format(&status));
        assert_eq!(text(7), "Running");
        assert_eq!(text(3), "Startup 3/6");
        assert_eq!(text(12), "Running (Throttled)");
        assert_eq!(text(42), "42");
        let error = PathDef::derived("/ErrorCode", Unit::Code, |_| None);
        assert_eq!(vedbus::format_text(&Value::Int(7), format(&error)), "7");
    }

    #[test]
    fn refresh_time_is_the_publish_interval_unless_the_unit_is_slower() {
        let publish = Duration::from_millis(200);
        assert_eq!(refresh_time_ms(publish, BusTiming::FRAMING_ONLY), 200);
        let paced = BusTiming {
            min_command_interval: Duration::from_millis(400),
            ..BusTiming::FRAMING_ONLY
        };
        assert_eq!(refresh_time_ms(publish, paced), 400);
    }
}
