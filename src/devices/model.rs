//! What a supported device is, as data: [`Model`] and the types a device file fills in.
//!
//! A device file (`sdm230.rs`, `growatt.rs`) names its registers (`register_names!`), lists
//! them as a table, and ends in one `static MODEL: Model` holding everything about the
//! device: the paths it publishes, the plausibility of its readings, how it is identified, how it
//! wants the bus paced, its roles and what it offers the limiter. The registry (`devices/mod.rs`)
//! lists the models; no other code names one. docs/architecture.md walks through adding a model.
//!
//! Device code reads and writes registers only through [`RegisterReader`] / [`RegisterWriter`]:
//! it knows addresses and meanings, never the wire.

use std::fmt;
use std::time::{Duration, Instant};

use super::plausibility::Rule;
use crate::limiter::{PercentOfRated, Reading, Setting};
use crate::registers::{Access, PackLimits, RegId, Register, RegisterMap};

/// Declares a model's typed register names: an enum whose variants are, in order, the rows of
/// the model's register table, each convertible to the [`RegId`] the rest of the daemon uses.
/// The table names each row like its variant in snake case (`ImportEnergy` ↔ `"import_energy"`,
/// the name shown in logs and `--probe`); each device file's tests check that the two agree with
/// [`assert_names_match`].
macro_rules! register_names {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every register, in table order.
            $vis const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The register's row in the model's table.
            $vis const fn id(self) -> $crate::registers::RegId {
                $crate::registers::RegId::new(self as u16)
            }
        }

        impl From<$name> for $crate::registers::RegId {
            fn from(register: $name) -> Self {
                register.id()
            }
        }
    };
}
pub(crate) use register_names;

/// Checks that `all` (a model's typed names, in declaration order) and its register `table` agree
/// row by row: same count, and each row named like its variant.
#[cfg(test)]
pub(super) fn assert_names_match<R: fmt::Debug + Copy + Into<RegId>>(
    all: &[R],
    table: &[Register],
) {
    assert_eq!(
        all.len(),
        table.len(),
        "typed names and table rows differ in number"
    );
    for (row, &name) in all.iter().enumerate() {
        assert_eq!(name.into().row(), row, "{name:?}");
        assert_eq!(
            table[row].name,
            snake_case(&format!("{name:?}")),
            "row {row}"
        );
    }
}

#[cfg(test)]
fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A supported model: everything the daemon knows about the device, in one place.
pub(crate) struct Model {
    pub name: &'static str,
    /// Vendor part of the settings ident and the service suffix (`<vendor>_<serial>`).
    pub vendor: &'static str,
    pub roles: Roles,
    /// The registers read in normal operation, in the order of the model's typed names.
    pub registers: &'static [Register],
    /// How reads of this model may be packed (holes, length, undefined ranges).
    pub limits: PackLimits,
    pub paths: &'static [PathDef],
    /// Physical bounds of the readings (see `plausibility.rs`), keyed by register.
    pub plausibility: &'static [Rule],
    /// Recognises the model on a unit (or refuses a variant the daemon must not drive).
    pub identify: Identify,
    /// `--probe`: the registers that decide identification and set-up, with their meaning and
    /// what the daemon does with them.
    pub explain: Explain,
    pub bus: BusTiming,
    /// `/ProductId`: the id the Python original published for the model, so that VRM and the
    /// GUI see the same product after the upgrade (docs/reference/victron.md §4).
    pub product_id: u16,
    pub limiter: LimiterOffer,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl Model {
    /// The published `(path, value)` pairs of a unit of this model, in table order.
    pub(crate) fn published_values<'a>(
        &'static self,
        map: &'a RegisterMap,
    ) -> impl Iterator<Item = (&'static PathDef, Option<f64>)> + 'a {
        let values = Values::new(map);
        self.paths
            .iter()
            .map(move |p| (p, values.path_value(p.quantity)))
    }

    /// A register's name in this model's table, for logs.
    pub(crate) fn register_name(&self, id: RegId) -> &'static str {
        self.registers.get(id.row()).map_or("?", |r| r.name)
    }
}

/// The D-Bus roles (service classes) a model may take, and the one it starts in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Roles {
    pub default: &'static str,
    /// The roles a user may choose (`/AllowedRoles`); with one, `/Role` is read-only.
    pub allowed: &'static [&'static str],
    /// A generic energy meter, as Victron's own meters: it says so (`/IsGenericEnergyMeter`) in
    /// any role but grid (docs/reference/victron.md §5).
    pub generic_meter: bool,
}

/// Victron's energy-meter roles (dbus-modbus-client `EnergyMeter.role_names`), default first.
pub(crate) const ENERGY_METER_ROLES: Roles = Roles {
    default: "grid",
    allowed: &[
        "grid",
        "pvinverter",
        "genset",
        "acload",
        "evcharger",
        "heatpump",
    ],
    generic_meter: true,
};

/// How a unit wants the bus paced beyond the Modbus RTU framing every unit gets (3.5 characters of
/// silence around each frame). Zero means nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusTiming {
    /// Silence the unit needs on the bus before a request to it.
    pub silence_before_request: Duration,
    /// Shortest time between two commands (reads or writes) to the unit, counted from the end of
    /// the previous exchange with it (its reply or timeout).
    pub min_command_interval: Duration,
}

impl BusTiming {
    /// The Modbus RTU framing only.
    pub const FRAMING_ONLY: BusTiming = BusTiming {
        silence_before_request: Duration::ZERO,
        min_command_interval: Duration::ZERO,
    };
}

/// What a model offers the limiter; a model may offer nothing.
#[derive(Clone, Copy)]
pub(crate) struct LimiterOffer {
    pub grid_meter: Option<GridMeter>,
    pub inverter: Option<LimitedInverter>,
}

/// A grid meter's readings for the limiter: where the site's power and energy are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GridMeter {
    /// Total active power, W, + import.
    pub power: RegId,
    pub import_energy: RegId,
    pub export_energy: RegId,
}

impl GridMeter {
    pub(crate) fn power(&self, map: &RegisterMap) -> Option<Reading> {
        reading(map, self.power)
    }

    /// Import − export energy (kWh), dated by the import counter's read.
    pub(crate) fn consumption(&self, map: &RegisterMap) -> Option<Reading> {
        let (import, at) = map.reading(self.import_energy)?;
        let export = map.number(self.export_energy)?;
        Some(Reading::new(import - export, at))
    }
}

/// A PV inverter the limiter can drive: its output and rating, and the strategy that limits it.
#[derive(Clone, Copy)]
pub(crate) struct LimitedInverter {
    /// AC output power, W.
    pub ac_power: RegId,
    /// Rated power, W, if the inverter tells it.
    pub rated_power: Option<RegId>,
    pub limiter: &'static dyn PowerLimiter,
}

impl LimitedInverter {
    pub(crate) fn ac_power(&self, map: &RegisterMap) -> Option<Reading> {
        reading(map, self.ac_power)
    }

    /// The rated power read from the inverter, when it gives a positive one.
    pub(crate) fn rated_power_w(&self, map: &RegisterMap) -> Option<f64> {
        map.number(self.rated_power?).filter(|w| *w > 0.0)
    }
}

fn reading(map: &RegisterMap, id: RegId) -> Option<Reading> {
    map.reading(id).map(|(value, at)| Reading::new(value, at))
}

/// How a vendor's inverter takes a power limit: the register knowledge behind the vendor-neutral
/// `limiter::Controller`. The controller decides in [`Setting`]s through
/// [`encoding`](Self::encoding); the daemon applies them with [`write`](Self::write), runs
/// [`set_up`](Self::set_up) whenever the inverter is (re)initialised, and compares every
/// read-back ([`held`](Self::held), [`drift`](Self::drift)) with what it believes.
pub(crate) trait PowerLimiter: Sync {
    /// How a limit in watts becomes this inverter's setting.
    fn encoding(&self) -> PercentOfRated;

    /// The register write that applies `setting`.
    fn write(&self, setting: Setting) -> RegisterWrite;

    /// The set-up on every (re)initialisation of the inverter, by read-compare-write (only
    /// registers that differ are written), read back and logged: for a Growatt the memory state
    /// of limit writes and the G100 export limit. Writes nothing without a rated power.
    /// `Err` when the inverter did not answer the reads it needs (the daemon then treats it as
    /// lost); nothing was written then.
    fn set_up(
        &self,
        regs: &mut dyn RegisterWriter,
        target: SetUpTarget,
    ) -> Result<SetUpReport, AccessError>;

    /// The setting the inverter holds by its latest periodic read-back, and when it was read.
    fn held(&self, map: &RegisterMap) -> Option<(Setting, Instant)>;

    /// A register of the set-up read after `since` that no longer holds what the set-up wants
    /// (a reset, another master, a changed export limit), described for the log.
    fn drift(&self, map: &RegisterMap, since: Instant, target: SetUpTarget) -> Option<String>;
}

/// What the set-up is for: the export limit to keep, in watts of a rated power.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SetUpTarget {
    pub export_limit_w: f64,
    /// `None`: the rated power is unknown, so nothing may be written.
    pub rated_w: Option<f64>,
}

/// What the set-up found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SetUpReport {
    /// The limit setting the inverter holds, as read back; `None` when it reads a value outside
    /// the documented range.
    pub held: Option<Setting>,
    /// Writes of the limit setting reach the inverter's non-volatile memory (it could not be
    /// told otherwise): they must be rare.
    pub writes_persist: bool,
}

/// One holding-register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegisterWrite {
    pub addr: u16,
    pub value: u16,
}

/// Why a register access gave nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessError {
    /// The unit answered that it will not (a Modbus exception: no such registers, a value it
    /// refuses). During identification: not this model, or an optional block it lacks.
    Refused,
    /// No valid answer (no reply, a corrupted one, the port failed).
    NoAnswer,
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessError::Refused => "refused by the unit",
            AccessError::NoAnswer => "no valid reply",
        })
    }
}

/// One unit's registers, as device code reads them (identification, set-up read-back).
pub(crate) trait RegisterReader {
    /// Reads `words.len()` registers from `addr` of the `access` table.
    fn read(&mut self, access: Access, addr: u16, words: &mut [u16]) -> Result<(), AccessError>;
}

/// Reads a block the unit may lack: `Ok(false)` when the unit refuses it (during identification:
/// not this model, or an optional block), `Err` when there is no valid answer.
pub(super) fn read_if_present(
    regs: &mut dyn RegisterReader,
    access: Access,
    addr: u16,
    words: &mut [u16],
) -> Result<bool, AccessError> {
    match regs.read(access, addr, words) {
        Ok(()) => Ok(true),
        Err(AccessError::Refused) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One unit's holding registers, as device code writes them (the limiter's set-up).
pub(crate) trait RegisterWriter: RegisterReader {
    fn write(&mut self, addr: u16, value: u16) -> Result<(), AccessError>;
}

/// A model's identification: what the unit is ([`Recognition`]), `Err` no valid answer (the
/// probe failed).
pub(super) type Identify =
    fn(&mut dyn RegisterReader, &IdentifyContext) -> Result<Recognition, AccessError>;

/// A model's register explanation for `--probe`.
pub(super) type Explain = fn(&mut dyn RegisterReader, &IdentifyContext, f64) -> Vec<Explained>;

/// What identification knows besides the registers: the unit address and the command line's
/// overrides.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdentifyContext<'a> {
    pub unit: u8,
    /// `--force-model VENDOR:CODE`: drive a unit reporting this code as this vendor's model,
    /// whatever the model's code table says.
    pub forced: &'a [(String, u16)],
    /// `--rated-power`: the inverter's rating when it does not tell it.
    pub rated_power_w: Option<f64>,
}

impl IdentifyContext<'_> {
    /// Whether the command line forces `vendor`'s model for `code`.
    pub(crate) fn forces(&self, vendor: &str, code: u16) -> bool {
        self.forced.iter().any(|(v, c)| v == vendor && *c == code)
    }
}

/// What identification found on a unit.
#[derive(Clone, Debug)]
pub(crate) enum Recognition {
    /// It is this model, to be driven.
    Found(Identity),
    /// The unit answers, but not as this model.
    Other,
    /// It is this model's vendor, but a variant the daemon must not drive (a three-phase meter,
    /// a storage inverter): why, naming the code, for the log.
    Unsupported { model: &'static Model, why: String },
}

/// One register as `--probe` explains it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Explained {
    /// Table and address, e.g. "HR3" or "IR101-103".
    pub register: &'static str,
    pub value: String,
    pub meaning: &'static str,
    /// What the daemon does with it.
    pub action: String,
}

/// How a value is rendered in GetText.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    Watt,
    VoltAmpere,
    Volt,
    Ampere,
    Hertz,
    KiloWattHour,
    Celsius,
    Percent,
    Seconds,
    /// A plain number (power factor).
    Plain,
    /// An integer code (status, error, mode): published as int32.
    Code,
}

impl Unit {
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Unit::Watt => "W",
            Unit::VoltAmpere => "VA",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Hertz => "Hz",
            Unit::KiloWattHour => "kWh",
            Unit::Celsius => "°C",
            Unit::Percent => "%",
            Unit::Seconds => "s",
            Unit::Plain | Unit::Code => "",
        }
    }

    pub(crate) fn decimals(self) -> usize {
        match self {
            Unit::Watt | Unit::VoltAmpere | Unit::Seconds | Unit::Code => 0,
            Unit::Volt | Unit::Celsius | Unit::Percent => 1,
            Unit::Ampere | Unit::Hertz | Unit::KiloWattHour | Unit::Plain => 2,
        }
    }
}

/// Where a published value comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Quantity {
    /// A register's scaled value.
    Reg(RegId),
    /// Computed from several registers by a function of the device file.
    Derived(fn(&Values) -> Option<f64>),
}

/// One published value: its path and, for a single-phase device's totals, the per-phase path
/// that carries the same value (`/Ac/Power` and `/Ac/L1/Power`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathDef {
    pub path: &'static str,
    pub also: Option<&'static str>,
    pub unit: Unit,
    pub quantity: Quantity,
}

impl PathDef {
    /// A path showing one register.
    pub(crate) const fn reg(path: &'static str, unit: Unit, reg: RegId) -> Self {
        PathDef {
            path,
            also: None,
            unit,
            quantity: Quantity::Reg(reg),
        }
    }

    /// A path computed from several registers.
    pub(crate) const fn derived(
        path: &'static str,
        unit: Unit,
        compute: fn(&Values) -> Option<f64>,
    ) -> Self {
        PathDef {
            path,
            also: None,
            unit,
            quantity: Quantity::Derived(compute),
        }
    }

    /// The same value published at `path` too.
    pub(crate) const fn also(self, path: &'static str) -> Self {
        PathDef {
            also: Some(path),
            ..self
        }
    }

    /// Every path the value is published at.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &'static str> + use<> {
        std::iter::once(self.path).chain(self.also)
    }
}

/// A unit's current values, by register.
pub(crate) struct Values<'a> {
    map: &'a RegisterMap,
}

impl<'a> Values<'a> {
    pub(crate) fn new(map: &'a RegisterMap) -> Self {
        Values { map }
    }

    /// The scaled value of `reg`; `None` = invalid (not read yet, or rejected).
    pub(crate) fn get(&self, reg: impl Into<RegId>) -> Option<f64> {
        self.map.number(reg.into())
    }

    /// The value of one published path; `None` = invalid.
    pub(crate) fn path_value(&self, q: Quantity) -> Option<f64> {
        match q {
            Quantity::Reg(id) => self.get(id),
            Quantity::Derived(compute) => compute(self),
        }
    }
}

/// What identification found on a unit.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub model: &'static Model,
    pub serial: String,
    pub firmware: String,
    pub hardware: String,
    /// The model code read from the device.
    pub code: u16,
    /// An inverter's rated power and where it comes from; `None` for a meter.
    pub rating: Option<Rating>,
    /// What else identification saw, for the log line (e.g. the meter code and firmware).
    pub details: String,
    /// The settings ident the Python original used for this unit (`cg_<serial>`,
    /// `pv_<text>`), from the registers exactly as it read them; its settings are adopted on the
    /// first start (docs/reference/victron.md §4). `None` when it could have stored none.
    pub original_ident: Option<String>,
}

/// An inverter's rated power as identification settled it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rating {
    /// `None`: unknown, so no limit may be written.
    pub watts: Option<f64>,
    /// Where the watts come from, or why there are none (for the log and the status).
    pub source: String,
}

impl Identity {
    /// The rated power, when known.
    pub(crate) fn rated_power_w(&self) -> Option<f64> {
        self.rating.as_ref().and_then(|r| r.watts)
    }

    /// Settings ident and service suffix: `<vendor>_<serial>` reduced to `[A-Za-z0-9_]`.
    pub(crate) fn ident(&self) -> String {
        ident_for(self.model.vendor, &self.serial)
    }
}

/// `<vendor>_<serial>` with every character outside `[A-Za-z0-9_]` replaced, so it is a valid
/// settings ident and bus-name element (the vendor prefix keeps it from starting with a digit).
pub(crate) fn ident_for(vendor: &str, serial: &str) -> String {
    let serial: String = serial
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{vendor}_{serial}")
}

/// `<prefix>_<serial>` as the Python original formed its settings ident, if it is one
/// localsettings takes (`[A-Za-z0-9_]`): with anything else the original could not have stored
/// settings under it.
pub(crate) fn original_ident(prefix: &str, serial: &str) -> Option<String> {
    let valid = serial
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then(|| format!("{prefix}_{serial}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_are_safe_bus_name_elements() {
        assert_eq!(ident_for("growatt", "AB-12.3 x"), "growatt_AB_12_3_x");
    }

    #[test]
    fn original_idents_are_kept_only_where_settings_could_exist() {
        assert_eq!(
            original_ident("cg", "21034567").as_deref(),
            Some("cg_21034567")
        );
        // A blank serial gave `pv_`, still a valid ident.
        assert_eq!(original_ident("pv", "").as_deref(), Some("pv_"));
        assert_eq!(original_ident("pv", "AB 12"), None);
        assert_eq!(original_ident("pv", "AB\0\0CD"), None);
    }

    #[test]
    fn snake_case_follows_the_register_naming() {
        assert_eq!(snake_case("Pv1EnergyToday"), "pv1_energy_today");
        assert_eq!(snake_case("AcL1Power"), "ac_l1_power");
        assert_eq!(snake_case("Power"), "power");
    }
}
