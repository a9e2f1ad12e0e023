//! One serial port and the units on it: identification, scheduling of reads across units, and
//! reopening the port when it disappears. Modbus side of the main loop; no D-Bus here.

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::devices::lifecycle::{Lifecycle, Timing, Transition};
use crate::devices::plausibility::Guard;
use crate::devices::{
    self, AccessError, IdentifyContext, Identity, Recognition, RegisterReader, RegisterWriter,
};
use crate::modbus::{ErrorKind, ModbusError, ReadFunction, RtuMaster, SerialSettings};
use crate::registers::{Access, RegisterMap, Urgency, choose_next};

/// Timeout cap while probing a unit that is not online: a dead inverter costs the other units at
/// most this much, once per probe interval.
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// After failed reads in a row, an online unit waits this long before its next read, so a unit
/// that just died cannot take every other slot from the meter before it is declared lost.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(400);

/// The pause before the next read of a unit after `failures` failed reads in a row. None after a
/// single failure: one glitch on the meter (noise, a late reply) then costs one short timeout,
/// not 0.4 s of grid readings; a second failure in a row means the unit is dying.
fn retry_pause(failures: u8) -> Option<Duration> {
    (failures >= 2).then_some(RETRY_AFTER_FAILURE)
}
/// Units one port drives (an RS485 bus with more devices than this is not this product's case).
pub const MAX_UNITS_PER_PORT: usize = 8;
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

pub struct Unit {
    pub id: u8,
    pub lifecycle: Lifecycle,
    pub identity: Option<Identity>,
    pub map: Option<RegisterMap>,
    /// Earliest time of the next read after failures in a row.
    retry_at: Option<Instant>,
    /// Failed reads in a row.
    failures: u8,
    /// Why the unit is not driven, as last logged: each reason is logged once per
    /// identification episode, not per probe (empty: it answers as no supported model).
    refusal_logged: Option<String>,
    /// Plausibility of its readings; kept across lost/found (a new guard would accept any
    /// counter value as a first reading), replaced when another device answers at the address.
    guard: Option<Guard>,
}

impl Unit {
    fn new(id: u8, timing: Timing) -> Self {
        Unit {
            id,
            lifecycle: Lifecycle::new(timing),
            identity: None,
            map: None,
            retry_at: None,
            failures: 0,
            refusal_logged: None,
            guard: None,
        }
    }

    fn candidates(&self, now: Instant) -> [Option<Urgency>; 2] {
        let ready = self.lifecycle.is_online() && self.retry_at.is_none_or(|t| now >= t);
        match (&self.map, ready) {
            (Some(map), true) => [map.urgency(now, true), map.urgency(now, false)],
            _ => [None, None],
        }
    }
}

/// What one step on the port did.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Nothing was due.
    Idle,
    /// A unit was identified (or re-identified after being lost).
    Online(usize),
    /// A unit was lost (no good read for the lost timeout).
    Lost(usize),
    /// New values were stored for a unit; `fast` when the read was of its fast registers.
    Read { unit: usize, fast: bool },
    /// A transaction failed (already counted and logged at debug).
    Failed(usize),
    /// A write to a unit completed (`Ok`) or failed.
    Wrote {
        unit: usize,
        addr: u16,
        value: u16,
        ok: bool,
    },
    /// The port is closed (disappeared); reopening is being retried.
    PortDown,
}

#[derive(Debug, PartialEq)]
enum Slot {
    Probe(usize),
    Read(usize),
    Idle,
}

/// What the next bus slot is for. Probes go before reads: the meter always has a fast read due,
/// so a probe waiting for an idle bus would never run and a lost unit would never return. But
/// never right after a failed transaction while a read is due: a silent unit then costs the
/// others at most one short timeout in a row (a failed read followed at once by the probe of the
/// unit just lost would hold the meter for two, and its /Ac/Power for over 0.5 s).
fn choose_slot(last_failed: bool, probe: Option<usize>, read: Option<usize>) -> Slot {
    match (probe, read) {
        (Some(_), Some(r)) if last_failed => Slot::Read(r),
        (Some(p), _) => Slot::Probe(p),
        (None, Some(r)) => Slot::Read(r),
        (None, None) => Slot::Idle,
    }
}

/// What the command line tells identification (`--force-model`, `--rated-power`).
#[derive(Clone, Debug, Default)]
pub struct IdentifyOverrides {
    pub forced: Vec<(String, u16)>,
    pub rated_power_w: Option<f64>,
}

impl IdentifyOverrides {
    pub fn context(&self, unit: u8) -> IdentifyContext<'_> {
        IdentifyContext {
            unit,
            forced: &self.forced,
            rated_power_w: self.rated_power_w,
        }
    }
}

pub struct Port {
    pub path: String,
    /// Applied to every identification on this port.
    pub overrides: IdentifyOverrides,
    settings: SerialSettings,
    master: Option<RtuMaster>,
    pub units: Vec<Unit>,
    last_was_fast: bool,
    /// The last transaction failed (no reply, bad reply): the next slot goes to a read if any.
    last_failed: bool,
    /// The limiter's meter: its fast registers are read every other transaction, so a load
    /// step reaches the limiter within about two transactions.
    pub preferred: Option<usize>,
    /// The unit of the last read, if it was a fast read.
    last_fast_unit: Option<usize>,
    max_transaction: Duration,
    reopen_at: Instant,
    reopen_backoff: Duration,
    buf: [u16; 125],
}

fn function(access: Access) -> ReadFunction {
    match access {
        Access::Holding => ReadFunction::Holding,
        Access::Input => ReadFunction::Input,
    }
}

impl Port {
    pub fn new(
        path: &str,
        settings: SerialSettings,
        unit_ids: &[u8],
        timing: Timing,
        max_transaction: Duration,
    ) -> Self {
        Port {
            path: path.to_string(),
            overrides: IdentifyOverrides::default(),
            settings,
            master: None,
            units: unit_ids
                .iter()
                .take(MAX_UNITS_PER_PORT)
                .map(|&id| Unit::new(id, timing))
                .collect(),
            last_was_fast: false,
            preferred: None,
            last_fast_unit: None,
            last_failed: false,
            max_transaction,
            reopen_at: Instant::now(),
            reopen_backoff: Duration::from_millis(500),
            buf: [0; 125],
        }
    }

    pub fn is_open(&self) -> bool {
        self.master.is_some()
    }

    /// Opens the port if it is closed and the back-off allows. `Ok(true)`: open; `Ok(false)`:
    /// closed, waiting for the next attempt; `Err`: this attempt failed.
    pub fn ensure_open(&mut self, now: Instant) -> Result<bool, ModbusError> {
        if self.master.is_some() {
            return Ok(true);
        }
        if now < self.reopen_at {
            return Ok(false);
        }
        match RtuMaster::open(&self.path, self.settings) {
            Ok(m) => {
                info!("{}: opened at {} baud", self.path, self.settings.baud);
                self.master = Some(m);
                self.reopen_backoff = Duration::from_millis(500);
                Ok(true)
            }
            Err(e) => {
                self.reopen_at = now + self.reopen_backoff;
                self.reopen_backoff = (self.reopen_backoff * 2).min(REOPEN_BACKOFF_MAX);
                Err(e)
            }
        }
    }

    /// Does one thing on the port: a pending write, a due probe, or the most urgent read.
    pub fn step(&mut self, now: Instant, write: Option<(usize, u16, u16)>) -> Event {
        let event = self.step_once(now, write);
        match event {
            Event::Failed(_) => self.last_failed = true,
            Event::Read { .. } | Event::Online(_) | Event::Wrote { .. } => self.last_failed = false,
            Event::Idle | Event::Lost(_) | Event::PortDown => {}
        }
        event
    }

    fn step_once(&mut self, now: Instant, write: Option<(usize, u16, u16)>) -> Event {
        // Lost units first, even with the port closed: their service must go as soon as the
        // timeout passes, so nothing stale is shown as live.
        for i in 0..self.units.len() {
            if self.units[i].lifecycle.check(now) == Some(Transition::Lost) {
                return self.lose(i);
            }
        }
        if self.master.is_none() {
            return Event::PortDown;
        }
        if let Some((unit, addr, value)) = write {
            return self.write(unit, addr, value);
        }
        let probe = self.units.iter().position(|u| u.lifecycle.probe_due(now));
        // Two candidates per unit (fast, slow), on the stack: no allocation per step.
        let mut candidates = [None; 2 * MAX_UNITS_PER_PORT];
        for (slot, unit) in candidates.chunks_mut(2).zip(&self.units) {
            slot.copy_from_slice(&unit.candidates(now));
        }
        let preferred_due = self.preferred.filter(|&m| {
            self.last_fast_unit != Some(m) && candidates.get(2 * m).is_some_and(Option::is_some)
        });
        let read = match preferred_due {
            Some(m) => Some(2 * m),
            None => choose_next(self.last_was_fast, &candidates[..2 * self.units.len()]),
        };
        match choose_slot(self.last_failed, probe, read) {
            Slot::Probe(i) => self.probe(i, now),
            Slot::Read(c) => self.read(c / 2, c % 2 == 0, now),
            Slot::Idle => Event::Idle,
        }
    }

    fn lose(&mut self, i: usize) -> Event {
        let unit = &mut self.units[i];
        unit.map = None;
        if let Some(master) = &mut self.master {
            master.set_timeout_cap(unit.id, Some(PROBE_TIMEOUT));
        }
        let name = unit.identity.as_ref().map_or("unit", |id| id.model.name);
        warn!(
            "{}: {} at unit {} lost (no valid reply for 5 s); probing",
            self.path, name, unit.id
        );
        Event::Lost(i)
    }

    fn on_error(&mut self, e: &ModbusError) -> bool {
        if let ModbusError::Io(err) = e {
            warn!(
                "{}: serial port failed: {err}; closing and reopening",
                self.path
            );
            self.master = None;
            return true;
        }
        false
    }

    fn write(&mut self, i: usize, addr: u16, value: u16) -> Event {
        let Some(master) = &mut self.master else {
            return Event::PortDown;
        };
        let id = self.units[i].id;
        let result = master.write_register(id, addr, value);
        let ok = result.is_ok();
        if let Err(e) = result {
            warn!(
                "{}: write of {value} to unit {id} register {addr} failed: {e}",
                self.path
            );
            if self.on_error(&e) {
                return Event::PortDown;
            }
        }
        Event::Wrote {
            unit: i,
            addr,
            value,
            ok,
        }
    }

    fn read(&mut self, i: usize, fast: bool, now: Instant) -> Event {
        let Some(master) = &mut self.master else {
            return Event::PortDown;
        };
        let unit = &mut self.units[i];
        let Some(map) = &mut unit.map else {
            return Event::Idle;
        };
        let Some(read) = map.next_read(now, fast) else {
            return Event::Idle;
        };
        let words = &mut self.buf[..read.count as usize];
        self.last_was_fast = read.fast;
        self.last_fast_unit = read.fast.then_some(i);
        match master.read_registers(unit.id, function(read.access), read.addr, words) {
            Ok(()) => {
                let done = Instant::now();
                match &mut unit.guard {
                    Some(guard) => {
                        map.store_filtered(&read, words, done, |reg, v, t| guard.check(reg, v, t))
                    }
                    None => map.store(&read, words, done),
                }
                unit.lifecycle.read_ok(done);
                if unit.failures > 0 {
                    unit.failures = 0;
                    unit.retry_at = None;
                    master.set_timeout_cap(unit.id, None);
                }
                Event::Read {
                    unit: i,
                    fast: read.fast,
                }
            }
            Err(e) => {
                debug!(
                    "{}: unit {} read {:?} {}+{} failed: {e}",
                    self.path, unit.id, read.access, read.addr, read.count
                );
                // Keep a dying unit from stalling the bus: short timeout, and a pause once it
                // fails again.
                unit.failures = unit.failures.saturating_add(1);
                unit.retry_at = retry_pause(unit.failures).map(|d| Instant::now() + d);
                master.set_timeout_cap(unit.id, Some(PROBE_TIMEOUT));
                if self.on_error(&e) {
                    return Event::PortDown;
                }
                Event::Failed(i)
            }
        }
    }

    /// Identifies unit `i`: an SDM230 answers its identification block; a Growatt answers that
    /// with an exception and its own block. A silent unit costs one short timeout.
    fn probe(&mut self, i: usize, now: Instant) -> Event {
        let Some(master) = &mut self.master else {
            return Event::PortDown;
        };
        let id = self.units[i].id;
        master.set_timeout_cap(id, Some(PROBE_TIMEOUT));
        let result = identify(master, id, &self.overrides);
        let char_time = self.settings.wire_time(1);
        let max_transaction = self.max_transaction;
        let unit = &mut self.units[i];
        match result {
            Ok(Recognition::Found(identity)) => {
                master.set_timeout_cap(id, None);
                unit.refusal_logged = None;
                if let Some(old) = &unit.identity
                    && old.serial != identity.serial
                {
                    info!(
                        "{}: unit {id} is now {} serial {} (was {})",
                        self.path, identity.model.name, identity.serial, old.serial
                    );
                }
                let model = identity.model;
                if unit
                    .identity
                    .as_ref()
                    .is_none_or(|old| old.serial != identity.serial)
                    || unit.guard.is_none()
                {
                    let guard = Guard::new(model.plausibility, model.registers)
                        .with_rated_power(identity.rated_power_w())
                        .with_label(identity.ident());
                    unit.guard = Some(guard);
                }
                let limits = model.limits.with_time_bound(char_time, max_transaction);
                unit.map = Some(RegisterMap::new(model.registers, limits));
                unit.identity = Some(identity);
                unit.retry_at = None;
                unit.failures = 0;
                unit.lifecycle.identified(now);
                Event::Online(i)
            }
            Ok(Recognition::Other) => {
                if unit.refusal_logged.as_deref() != Some("") {
                    warn!(
                        "{}: unit {id} answers but is not a supported model (see --models)",
                        self.path
                    );
                    unit.refusal_logged = Some(String::new());
                }
                unit.lifecycle.probe_failed(now);
                Event::Failed(i)
            }
            // Nothing is published and nothing written: the unit is probed like one that does
            // not answer, the reason logged once per episode.
            Ok(Recognition::Unsupported { why, .. }) => {
                if unit.refusal_logged.as_ref() != Some(&why) {
                    warn!("{}: unit {id}: {why}", self.path);
                    unit.refusal_logged = Some(why);
                }
                unit.lifecycle.probe_failed(now);
                Event::Failed(i)
            }
            Err(e) => {
                debug!("{}: probe of unit {id} failed: {e}", self.path);
                unit.lifecycle.probe_failed(now);
                if self.on_error(&e) {
                    return Event::PortDown;
                }
                Event::Failed(i)
            }
        }
    }

    pub fn master(&self) -> Option<&RtuMaster> {
        self.master.as_ref()
    }

    /// Runs `f` on the registers of unit `unit` now, outside the schedule (the limiter's set-up
    /// and its last write on a clean stop). `None` when the port is closed or there is no such
    /// unit. A serial I/O error closes the port, as in the schedule.
    pub fn with_unit<R>(
        &mut self,
        unit: usize,
        f: impl FnOnce(&mut dyn RegisterWriter) -> R,
    ) -> Option<R> {
        let id = self.units.get(unit)?.id;
        let mut regs = UnitRegisters::new(self.master.as_mut()?, id);
        let result = f(&mut regs);
        if let Some(e) = regs.error.take() {
            self.on_error(&e);
        }
        Some(result)
    }
}

/// One unit's registers through the master, as device code reads and writes them. Keeps the error
/// behind the last failure (a serial I/O error, once seen, sticks) so that the caller can react
/// to what device code only sees as an [`AccessError`]; device code logs failures in context.
pub struct UnitRegisters<'a> {
    master: &'a mut RtuMaster,
    unit: u8,
    error: Option<ModbusError>,
}

impl<'a> UnitRegisters<'a> {
    pub fn new(master: &'a mut RtuMaster, unit: u8) -> Self {
        UnitRegisters {
            master,
            unit,
            error: None,
        }
    }

    fn failed(&mut self, e: ModbusError) -> AccessError {
        let kind = if e.kind() == ErrorKind::Exception {
            AccessError::Refused
        } else {
            AccessError::NoAnswer
        };
        if self
            .error
            .as_ref()
            .is_none_or(|previous| previous.kind() != ErrorKind::Io)
        {
            self.error = Some(e);
        }
        kind
    }
}

impl RegisterReader for UnitRegisters<'_> {
    fn read(&mut self, access: Access, addr: u16, words: &mut [u16]) -> Result<(), AccessError> {
        self.master
            .read_registers(self.unit, function(access), addr, words)
            .map_err(|e| {
                debug!(
                    "unit {} read {access:?} {addr}+{} failed: {e}",
                    self.unit,
                    words.len()
                );
                self.failed(e)
            })
    }
}

impl RegisterWriter for UnitRegisters<'_> {
    fn write(&mut self, addr: u16, value: u16) -> Result<(), AccessError> {
        self.master
            .write_register(self.unit, addr, value)
            .map_err(|e| {
                debug!(
                    "unit {} write of {value} to register {addr} failed: {e}",
                    self.unit
                );
                self.failed(e)
            })
    }
}

/// Identifies `unit`: the first supported model that recognises it, logged when found.
pub fn identify(
    master: &mut RtuMaster,
    unit: u8,
    overrides: &IdentifyOverrides,
) -> Result<Recognition, ModbusError> {
    let mut regs = UnitRegisters::new(master, unit);
    match devices::identify(&mut regs, &overrides.context(unit)) {
        Ok(found) => {
            if let Recognition::Found(id) = &found {
                info!(
                    "unit {unit}: {} serial {} ({})",
                    id.model.name, id.serial, id.details
                );
            }
            Ok(found)
        }
        // The adapter kept the error behind every failure it reported.
        Err(_) => Err(regs.error.take().unwrap_or(ModbusError::Timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modbus_sim::{FaultKind, SimConfig, Simulator};

    /// Steps the port until `want` happens or `timeout` passes.
    fn step_until(port: &mut Port, want: &Event, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if port.step(Instant::now(), None) == *want {
                return true;
            }
        }
        false
    }

    #[test]
    fn a_silent_unit_is_probed_although_the_meter_always_has_a_read_due() {
        let sim = Simulator::start(SimConfig::default()).unwrap();
        sim.fault(1, FaultKind::Offline, true);
        let timing = Timing {
            lost_after: Duration::from_secs(5),
            probe_interval: Duration::from_millis(200),
        };
        let mut port = Port::new(
            sim.tty_path(),
            SerialSettings::default(),
            &[1, 2],
            timing,
            Duration::from_millis(100),
        );
        port.ensure_open(Instant::now()).unwrap();
        assert!(step_until(
            &mut port,
            &Event::Online(1),
            Duration::from_secs(5)
        ));
        assert!(!port.units[0].lifecycle.is_online());
        // The inverter wakes: a later probe finds it while the meter is read continuously.
        sim.clear_fault(1);
        assert!(step_until(
            &mut port,
            &Event::Online(0),
            Duration::from_secs(5)
        ));
        assert!(port.units[1].lifecycle.is_online());
    }

    #[test]
    fn one_failed_read_is_retried_at_once_two_in_a_row_pause_the_unit() {
        assert_eq!(retry_pause(1), None);
        assert_eq!(retry_pause(2), Some(RETRY_AFTER_FAILURE));
        assert_eq!(retry_pause(u8::MAX), Some(RETRY_AFTER_FAILURE));
    }

    #[test]
    fn probes_go_first_but_never_right_after_a_failure_while_a_read_is_due() {
        assert_eq!(choose_slot(false, Some(0), Some(3)), Slot::Probe(0));
        assert_eq!(choose_slot(true, Some(0), Some(3)), Slot::Read(3));
        assert_eq!(choose_slot(true, Some(0), None), Slot::Probe(0));
        assert_eq!(choose_slot(true, None, Some(2)), Slot::Read(2));
        assert_eq!(choose_slot(false, None, None), Slot::Idle);
    }
}
