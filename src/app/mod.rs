//! The daemon: wiring of ports, devices, D-Bus services, settings and the limiter, and the one
//! loop that interleaves Modbus transactions with D-Bus pumping.

mod generation;
pub mod port;
pub mod probe;
mod publish;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use log::{error, info, warn};

use crate::cli::Options;
use crate::devices::lifecycle::Timing;
use crate::devices::{GridMeter, LimitedInverter, Rating};
use crate::modbus::{Parity, SerialSettings};
use crate::vedbus::{BusAddress, Pump, Settings, pump_all};
use generation::Generation;
use port::{Event, IdentifyOverrides, Port};
use publish::Published;

/// How long start-up waits for com.victronenergy.settings before giving up (runit restarts us).
const SETTINGS_WAIT: Duration = Duration::from_secs(60);
/// D-Bus pumping between two transactions when the bus has work: answers what is pending.
const BUSY_PUMP: Duration = Duration::from_millis(0);
/// D-Bus pumping when no Modbus transaction is due: also the loop's idle sleep.
const IDLE_PUMP: Duration = Duration::from_millis(10);

pub fn serial_settings(opts: &Options, baud: u32) -> SerialSettings {
    SerialSettings {
        baud,
        parity: if opts.even_parity {
            Parity::Even
        } else {
            Parity::None
        },
    }
}

/// Groups the configured units by port, in command-line order.
pub fn build_ports(opts: &Options) -> Vec<Port> {
    let mut by_path: BTreeMap<&str, (u32, Vec<u8>, usize)> = BTreeMap::new();
    for (order, u) in opts.units.iter().enumerate() {
        let entry = by_path
            .entry(u.port.path.as_str())
            .or_insert((u.port.baud, Vec::new(), order));
        if !entry.1.contains(&u.unit) {
            entry.1.push(u.unit);
        }
    }
    let mut ports: Vec<(usize, Port)> = by_path
        .into_iter()
        .map(|(path, (baud, units, order))| {
            let mut port = Port::new(
                path,
                serial_settings(opts, baud),
                &units,
                Timing::default(),
                opts.max_transaction,
            );
            port.overrides = IdentifyOverrides {
                forced: opts.forced_models.clone(),
                rated_power_w: opts.rated_power_w,
            };
            (order, port)
        })
        .collect();
    ports.sort_by_key(|(order, _)| *order);
    ports.into_iter().map(|(_, p)| p).collect()
}

/// A unit the limiter uses, at (port index, unit index), and what its model offers.
#[derive(Clone, Copy)]
struct LimiterUnit<T> {
    at: (usize, usize),
    offer: T,
}

pub struct App {
    opts: Options,
    bus: BusAddress,
    settings: Settings,
    ports: Vec<Port>,
    /// Published services, by (port index, unit index).
    devices: BTreeMap<(usize, usize), Published>,
    port_down_logged: Vec<bool>,
    generation: Generation,
    /// The limiter's meter and inverter: the first units whose models offer them.
    meter: Option<LimiterUnit<GridMeter>>,
    inverter: Option<LimiterUnit<LimitedInverter>>,
    /// A fresh meter reading arrived in this iteration.
    fresh_meter: bool,
    /// Scratch buffer for accepted SetValue writes, reused every iteration.
    writes: Vec<(String, crate::vedbus::Value)>,
    /// A `/Role` write or a device setting arrived: a unit may have changed its role.
    roles_touched: bool,
}

impl App {
    pub fn start(opts: Options) -> anyhow::Result<App> {
        let bus = BusAddress::from_arg(opts.dbus.as_deref());
        let mut settings =
            Settings::connect(&bus, SETTINGS_WAIT).context("connecting to the settings service")?;
        let generation = Generation::new(&bus, &mut settings, &opts).context("limiter settings")?;
        let ports = build_ports(&opts);
        let n = ports.len();
        Ok(App {
            opts,
            bus,
            settings,
            ports,
            devices: BTreeMap::new(),
            port_down_logged: vec![false; n],
            writes: Vec::new(),
            roles_touched: false,
            generation,
            meter: None,
            inverter: None,
            fresh_meter: false,
        })
    }

    /// Runs until `stop` is set (SIGTERM/SIGINT) or a fatal error under `--exit`.
    pub fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            self.fresh_meter = false;
            let busy = self.step_ports()?;
            let inverter_online = self.inverter.is_some_and(|i| {
                let (p, u) = i.at;
                self.ports[p].units[u].lifecycle.is_online()
            });
            self.generation
                .decide(Instant::now(), self.fresh_meter, inverter_online);
            self.publish_due();
            self.pump(if busy { BUSY_PUMP } else { IDLE_PUMP })?;
            self.handle_writes();
            self.handle_setting_changes();
            self.follow_roles();
        }
        info!("stopping");
        self.shutdown();
        Ok(())
    }

    /// One Modbus step on every port; true when any port did a transaction.
    fn step_ports(&mut self) -> anyhow::Result<bool> {
        let mut busy = false;
        for p in 0..self.ports.len() {
            let now = Instant::now();
            match self.ports[p].ensure_open(now) {
                Ok(true) => self.port_down_logged[p] = false,
                Ok(false) => {}
                Err(e) => {
                    if self.opts.exit_on_fatal {
                        bail!("serial port {} unavailable: {e}", self.ports[p].path);
                    }
                    if !self.port_down_logged[p] {
                        error!(
                            "serial port {} unavailable: {e}; retrying with back-off",
                            self.ports[p].path
                        );
                        self.port_down_logged[p] = true;
                    }
                }
            }
            let write = match (self.inverter, self.generation.pending_write()) {
                (Some(LimiterUnit { at: (ip, iu), .. }), Some(w)) if ip == p => {
                    Some((iu, w.addr, w.value))
                }
                _ => None,
            };
            let event = self.ports[p].step(now, write);
            busy |= !matches!(event, Event::Idle | Event::PortDown);
            self.handle_event(p, event)?;
        }
        Ok(busy)
    }

    fn handle_event(&mut self, p: usize, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Online(u) => self.device_online(p, u),
            Event::Lost(u) => {
                if let Some(dev) = self.devices.get_mut(&(p, u)) {
                    dev.go_offline();
                }
                if self.meter.is_some_and(|m| m.at == (p, u)) {
                    self.generation.meter_lost();
                }
                if self.inverter.is_some_and(|i| i.at == (p, u)) {
                    self.generation.inverter_lost();
                }
            }
            Event::Read { unit, .. } => {
                let Some(map) = &self.ports[p].units[unit].map else {
                    return Ok(());
                };
                if let Some(meter) = self.meter.filter(|m| m.at == (p, unit)) {
                    self.generation.on_meter(&meter.offer, map);
                    self.fresh_meter = true;
                } else if let Some(inverter) = self.inverter.filter(|i| i.at == (p, unit))
                    && self
                        .generation
                        .on_inverter(&inverter.offer, map, Instant::now())
                {
                    self.set_up_inverter(p, unit);
                }
            }
            // The only writes the schedule makes are the limiter's.
            Event::Wrote { unit, ok, .. } if self.inverter.is_some_and(|i| i.at == (p, unit)) => {
                self.generation.written(ok, Instant::now());
            }
            Event::PortDown if self.opts.exit_on_fatal => {
                bail!("serial port {} failed", self.ports[p].path)
            }
            Event::Failed(_) | Event::Wrote { .. } | Event::Idle | Event::PortDown => {}
        }
        Ok(())
    }

    fn device_online(&mut self, p: usize, u: usize) {
        let unit = &self.ports[p].units[u];
        let Some(identity) = unit.identity.clone() else {
            return;
        };
        let rating = identity.rating.clone().unwrap_or_else(|| Rating {
            watts: None,
            source: format!("{} gives no rated power", identity.model.name),
        });
        let connection = format!("Modbus RTU {} unit {}", self.ports[p].path, unit.id);
        let same = self
            .devices
            .get(&(p, u))
            .is_some_and(|d| d.serial() == identity.serial);
        if !same {
            self.devices.remove(&(p, u));
            match Published::new(
                &self.bus,
                &mut self.settings,
                identity,
                connection,
                &self.opts,
            ) {
                Ok(mut dev) => {
                    if dev.model().limiter.inverter.is_some() {
                        self.generation.add_paths(dev.service());
                    }
                    self.devices.insert((p, u), dev);
                }
                Err(e) => {
                    error!("cannot publish unit {}: {e}", unit.id);
                    return;
                }
            }
        }
        // The limiter takes the first meter and the first inverter found, by what their models
        // offer; a unit is only ever replaced by itself (found again).
        let offer = self.devices.get(&(p, u)).map(|d| d.model().limiter);
        if let Some(inverter) = offer.and_then(|o| o.inverter)
            && self.inverter.is_none_or(|i| i.at == (p, u))
        {
            self.inverter = Some(LimiterUnit {
                at: (p, u),
                offer: inverter,
            });
            self.generation.attach_inverter(&inverter, rating);
            self.set_up_inverter(p, u);
        }
        self.follow_meter_role((p, u));
        let Some(map) = &self.ports[p].units[u].map else {
            return;
        };
        if let Some(dev) = self.devices.get_mut(&(p, u)) {
            // The limiter's paths as the set-up left them, from the first moment on the bus.
            if self.inverter.is_some_and(|i| i.at == (p, u)) {
                self.generation.publish(dev.service());
            }
            if let Err(e) = dev.go_online(map) {
                error!("{e}");
            }
        }
    }

    /// The limiter's set-up of the inverter at (`p`, `u`), now, outside the schedule.
    fn set_up_inverter(&mut self, p: usize, u: usize) {
        let generation = &mut self.generation;
        if self.ports[p]
            .with_unit(u, |regs| generation.set_up_inverter(regs, Instant::now()))
            .is_none()
        {
            generation.inverter_lost();
        }
    }

    /// The limiter's grid meter is the first unit offering one while it publishes as `grid`: a
    /// meter switched to another role (pvinverter, acload…) measures something else, so the
    /// limiter lets it go (and fails safe), and takes it back when it is grid again.
    fn follow_meter_role(&mut self, at: (usize, usize)) {
        let Some(dev) = self.devices.get(&at) else {
            return;
        };
        let is_grid = dev.class() == "grid";
        let ours = self.meter.is_some_and(|m| m.at == at);
        match dev.model().limiter.grid_meter {
            Some(offer) if is_grid && (ours || self.meter.is_none()) => {
                if !ours {
                    info!("limiter: grid meter {}", dev.service_name());
                }
                self.meter = Some(LimiterUnit { at, offer });
                self.ports[at.0].preferred = Some(at.1);
            }
            _ if ours && !is_grid => {
                warn!(
                    "limiter: {} is no longer the grid meter; no grid readings",
                    dev.service_name()
                );
                self.meter = None;
                self.ports[at.0].preferred = None;
                self.generation.meter_lost();
            }
            _ => {}
        }
    }

    fn publish_due(&mut self) {
        let now = Instant::now();
        for (&(p, u), dev) in self.devices.iter_mut() {
            if let Some(map) = &self.ports[p].units[u].map {
                if let Err(e) = dev.retry_name(now) {
                    error!("{e}");
                }
                let generation = self
                    .inverter
                    .is_some_and(|i| i.at == (p, u))
                    .then_some(&self.generation);
                dev.publish(map, now, self.opts.publish_interval, |svc| {
                    if let Some(g) = generation {
                        g.publish(svc);
                    }
                });
            }
        }
    }

    fn pump(&mut self, budget: Duration) -> anyhow::Result<()> {
        let mut conns: Vec<&mut dyn Pump> = Vec::with_capacity(self.devices.len() + 1);
        conns.push(&mut self.settings);
        conns.push(self.generation.watcher());
        for dev in self.devices.values_mut() {
            conns.push(dev.pump_handle());
        }
        pump_all(&mut conns, budget).context("D-Bus")
    }

    fn handle_writes(&mut self) {
        let now = Instant::now();
        for (key, dev) in self.devices.iter_mut() {
            self.writes.clear();
            if let Err(e) = dev.take_writes(&mut self.settings, &mut self.writes) {
                warn!("{e}");
            }
            self.roles_touched |= self.writes.iter().any(|(path, _)| path == "/Role");
            if self.inverter.is_some_and(|i| i.at == *key) {
                for (path, value) in &self.writes {
                    if path == "/Ac/PowerLimit" {
                        self.generation.power_limit_write(value, now);
                    }
                }
            }
        }
    }

    fn handle_setting_changes(&mut self) {
        let changes: Vec<_> = self.settings.take_changes().collect();
        for (path, value) in changes {
            if self.generation.apply_setting(&path, &value) {
                continue;
            }
            for dev in self.devices.values_mut() {
                match dev.apply_setting(&mut self.settings, &path, &value) {
                    Ok(true) => {
                        self.roles_touched = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => warn!("{e}"),
                }
            }
        }
    }

    /// After writes and setting changes: a unit whose role changed may gain or lose its place
    /// as the limiter's grid meter.
    fn follow_roles(&mut self) {
        if !std::mem::take(&mut self.roles_touched) {
            return;
        }
        let online: Vec<(usize, usize)> = self
            .devices
            .keys()
            .copied()
            .filter(|&(p, u)| self.ports[p].units[u].lifecycle.is_online())
            .collect();
        for at in online {
            self.follow_meter_role(at);
        }
    }

    fn shutdown(&mut self) {
        // Full power back (G100 stays enforced by the inverter) before the services go.
        if let Some(LimiterUnit { at: (p, u), .. }) = self.inverter
            && self.ports[p].units[u].lifecycle.is_online()
        {
            let generation = &mut self.generation;
            self.ports[p].with_unit(u, |regs| generation.shutdown(regs, Instant::now()));
        }
        for dev in self.devices.values_mut() {
            dev.go_offline();
        }
    }
}
