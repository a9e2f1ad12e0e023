//! The supported devices. Each model is one file holding everything about it as data (registers
//! with typed names, published paths, plausibility rules, identification, bus timing, roles, what
//! it offers the limiter), built from the types in `model`; `MODELS` lists them. Also here:
//! what is common to all units on the bus (`lifecycle`, `plausibility`).
//!
//! Knows nothing of wire details or D-Bus plumbing: registers are read through
//! `RegisterReader`, values come from a `RegisterMap` and leave as `(path, Option<f64>)` pairs.
//! docs/architecture.md shows how to add a model.
//!
//! Private modules; all of it is for the app (`pub(crate)`), except what the benchmarks take:
//! [`SDM230_BUS`] and [`growatt_limit_encoding`].

mod growatt;
mod lifecycle;
mod model;
mod plausibility;
mod sdm230;

// What the benchmarks use: the Growatt's limit encoding and the SDM230's bus timing (and its
// type). Not the
// `PowerLimiter` trait: its read-back takes a `RegisterMap`, and exporting it would make the
// register store public too, out of reach of rustc's dead-code analysis.
pub use model::BusTiming;
pub use sdm230::BUS as SDM230_BUS;

use std::time::{Duration, Instant};

use crate::registers::{Access, Read, RegisterMap};

pub(crate) use model::PowerLimiter;

pub(crate) use lifecycle::{Lifecycle, Timing, Transition};
pub(crate) use model::{
    AccessError, Explained, GridMeter, IdentifyContext, Identity, LimitedInverter, Model, PathDef,
    Quantity, Rating, Recognition, RegisterReader, RegisterWrite, RegisterWriter, SetUpTarget,
    Unit,
};
pub(crate) use plausibility::Guard;

/// How the Growatt's limiter strategy encodes a limit (whole percent of rated power): the
/// benchmarks drive the limiter's `Controller` with it, as the daemon does.
pub fn growatt_limit_encoding() -> crate::limiter::PercentOfRated {
    growatt::LIMITER.encoding()
}

/// A model's reads as the daemon plans them, for studying the bus schedule offline
/// (`benches/plant_loop`): the planner and register store the port uses, behind four calls, so
/// the benchmark's schedule cannot drift from the daemon's.
pub struct ReadPlanner {
    map: RegisterMap,
    bus: BusTiming,
}

/// One read the planner chose: input or holding registers `addr..addr + count`.
#[derive(Clone, Copy, Debug)]
pub struct PlannedRead {
    read: Read,
}

impl PlannedRead {
    pub fn input_registers(&self) -> bool {
        self.read.access == Access::Input
    }
    pub fn addr(&self) -> u16 {
        self.read.addr
    }
    pub fn count(&self) -> u16 {
        self.read.count
    }
    /// It includes a register the limiter reads fast (power).
    pub fn fast(&self) -> bool {
        self.read.fast
    }
}

impl ReadPlanner {
    /// The planner of the model of `vendor` ("eastron", "growatt"), its reads bounded as the
    /// port bounds them at `char_time` per character and `max_transaction`.
    pub fn for_vendor(
        vendor: &str,
        char_time: Duration,
        max_transaction: Duration,
    ) -> Option<Self> {
        let model = MODELS.iter().find(|m| m.vendor == vendor)?;
        Some(ReadPlanner {
            map: RegisterMap::new(
                model.registers,
                model.limits.with_time_bound(char_time, max_transaction),
            ),
            bus: model.bus,
        })
    }

    pub fn bus(&self) -> BusTiming {
        self.bus
    }

    /// How often the fast registers are read: `None` as often as the bus allows (the limiter
    /// needs them), `Some(age)` when they are this old (reads by need).
    pub fn set_fast_age(&mut self, age: Option<Duration>) {
        self.map.set_fast_age(age);
    }

    /// When the next register falls due (a never-read register: the planner's creation).
    pub fn next_due(&self) -> Option<Instant> {
        self.map.next_due()
    }

    pub fn next_read(&self, now: Instant) -> Option<PlannedRead> {
        self.map.next_read(now).map(|read| PlannedRead { read })
    }

    /// The reply's words: the read registers are fresh as of `at`.
    pub fn store(&mut self, read: &PlannedRead, words: &[u16], at: Instant) {
        self.map.store(&read.read, words, at);
    }
}

/// The supported models, in the order identification tries them.
pub(crate) static MODELS: [&Model; 2] = [&sdm230::MODEL, &growatt::MODEL];

/// Identifies the unit behind `regs`: the first model of [`MODELS`] that recognises it (as one
/// to drive, or as a variant it refuses). `Recognition::Other`: the unit answers, but as no
/// supported model.
pub(crate) fn identify(
    regs: &mut dyn RegisterReader,
    ctx: &IdentifyContext,
) -> Result<Recognition, AccessError> {
    for model in MODELS {
        match (model.identify)(regs, ctx)? {
            Recognition::Other => {}
            recognised => return Ok(recognised),
        }
    }
    Ok(Recognition::Other)
}

/// The vendors `--force-model` may name.
pub(crate) fn vendors() -> impl Iterator<Item = &'static str> {
    MODELS.iter().map(|m| m.vendor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_and_rule_names_a_register_of_its_model() {
        for model in MODELS {
            for p in model.paths {
                if let Quantity::Reg(id) = p.quantity {
                    assert!(id.row() < model.registers.len(), "{}", p.path);
                }
            }
            let rules = model.plausibility;
            assert!(!rules.is_empty(), "{}", model.name);
            for (i, rule) in rules.iter().enumerate() {
                let name = model.register_name(rule.reg);
                assert!(rule.reg.row() < model.registers.len(), "{}", model.name);
                assert!(
                    rules.iter().skip(i + 1).all(|r| r.reg != rule.reg),
                    "{}: {name} twice",
                    model.name
                );
            }
        }
    }

    #[test]
    fn every_model_offers_the_limiter_registers_of_its_own() {
        for model in MODELS {
            let offer = model.limiter;
            let ids = offer
                .grid_meter
                .iter()
                .flat_map(|m| [m.power, m.import_energy, m.export_energy])
                .chain(
                    offer
                        .inverter
                        .iter()
                        .flat_map(|i| std::iter::once(i.ac_power).chain(i.rated_power)),
                );
            for id in ids {
                assert!(id.row() < model.registers.len(), "{}", model.name);
            }
        }
    }

    #[test]
    fn model_names_and_vendors_are_distinct() {
        for (i, a) in MODELS.iter().enumerate() {
            for b in &MODELS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }
}
