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
mod service;
mod settings;
mod tree;
mod value;
mod watcher;

// What the tests, benchmarks, fuzz targets and the app use (`Watch`: what `Pump` names).
pub use bus::{BusAddress, Pump, Watch, pump_all};
pub use device::{DeviceConfig, DeviceService};
pub use service::Service;
pub use settings::{SettingDef, Settings, allocate_instance};
pub use value::{Format, Refusal, Value, Writable};
pub use watcher::Watcher;

pub(crate) use bus::Poller;
pub(crate) use service::MAX_QUEUED_WRITES;
#[cfg(test)]
pub(crate) use value::format_text;

use std::fmt;

/// What can go wrong on D-Bus. Malformed input from peers is never an error here: it is
/// answered (error reply or non-zero SetValue) and logged at debug level.
#[derive(Debug)]
pub enum Error {
    /// Could not connect to the bus.
    Connect(String),
    /// The bus connection was lost.
    Disconnected,
    /// Waiting on the connections' sockets failed.
    Poll(String),
    /// The well-known name is owned by another process.
    NameTaken(String),
    /// A bad name, path or argument given by the caller.
    Invalid(String),
    /// A method call to a peer failed (error reply, timeout, peer gone).
    Call { method: String, detail: String },
    /// A peer's reply did not have the documented shape.
    BadReply(String),
    /// `com.victronenergy.settings` did not appear in time.
    SettingsUnavailable,
    /// localsettings refused a setting (AddSettings error code or SetValue result).
    Setting { path: String, code: i32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect to D-Bus: {e}"),
            Error::Disconnected => write!(f, "D-Bus connection lost"),
            Error::Poll(e) => write!(f, "waiting on the D-Bus connections failed: {e}"),
            Error::NameTaken(n) => write!(f, "D-Bus name {n} is already taken by another process"),
            Error::Invalid(e) => write!(f, "invalid D-Bus argument: {e}"),
            Error::Call { method, detail } => write!(f, "D-Bus call {method} failed: {detail}"),
            Error::BadReply(e) => write!(f, "unexpected D-Bus reply: {e}"),
            Error::SettingsUnavailable => write!(f, "com.victronenergy.settings is not running"),
            Error::Setting { path, code } => write!(f, "setting {path} refused with code {code}"),
        }
    }
}

impl std::error::Error for Error {}
