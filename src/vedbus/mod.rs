//! Victron D-Bus layer: publishing `com.victronenergy.*` services (BusItem tree, batched
//! ItemsChanged, SetValue validation), the localsettings client, watching other services, and
//! the pump the main loop calls. See `shared/spec/victron-dbus.md`.
//!
//! Everything runs on the caller's thread: each [`Service`] (or [`DeviceService`]), the
//! [`Settings`] client and each [`Watcher`] own a private libdbus connection that is only
//! serviced inside [`pump_all`] (or their own `pump`). No threads, no async.
//!
//! Start-up (a device):
//!
//! ```text
//! let bus = BusAddress::from_arg(args.dbus.as_deref());
//! let mut settings = Settings::connect(&bus, Duration::from_secs(10))?;   // waits, bounded
//! let mut dev = DeviceService::new(&bus, &mut settings, &config)?;        // instance allocated
//! dev.service().add_path("/Ac/L1/Power", Value::Invalid, Format::unit("W", 0), Writable::No);
//! dev.register()?;                                                        // name last
//! let mut watcher = Watcher::connect(&bus, &["com.victronenergy.battery"], &["/Soc"])?;
//! ```
//!
//! Each loop iteration:
//!
//! ```text
//! dev.service().set("/Ac/L1/Power", Value::from(p));   // changed only if different
//! dev.service().flush();                               // one ItemsChanged for what changed
//! pump_all(&mut [&mut dev, &mut settings, &mut watcher], budget)?;
//! for (path, v) in dev.take_writes(&mut settings)? { ... }   // every accepted SetValue
//! for (path, v) in settings.take_changes() { dev.apply_setting(&mut settings, &path, &v)?; }
//! watcher.get("com.victronenergy.battery", "/Soc")           // Some((value, received_at))
//! ```
//!
//! Wire rules kept here: invalid = empty `ai` (GetText `---`, as velib); NaN/inf and empty lists
//! publish as invalid; GetItems/ItemsChanged keys absolute, node GetValue/GetText keys relative;
//! SetValue answers 0 or 1, never a D-Bus error, and coerces int/double/numeric strings; the name
//! is requested (DO_NOT_QUEUE) only after the paths exist; ItemsChanged only, no per-item
//! PropertiesChanged (and introspection advertises only what is sent).
//! `flush` must be called every iteration: while the bus has not taken the previous signal,
//! changes coalesce into the next one (libdbus' outgoing queue is unbounded otherwise).
//! [`Error::Disconnected`] from a pump means the bus is gone: exit and let the supervisor restart.

mod adopt;
mod bus;
mod device;
mod error;
mod service;
mod settings;
mod tree;
mod value;
mod watcher;

// What the tests, benchmarks, fuzz targets and the app use (`Watch`: what `Pump` names).
pub use bus::{BusAddress, Pump, Watch, pump_all};
pub use device::{DeviceConfig, DeviceService};
pub use error::Error;
pub use service::Service;
pub use settings::{SettingDef, Settings, allocate_instance};
pub use value::{Format, Refusal, Value, Writable};
pub use watcher::Watcher;

pub(crate) use bus::Poller;
pub(crate) use service::MAX_QUEUED_WRITES;
#[cfg(test)]
pub(crate) use value::format_text;
