//! The daemon: wiring of ports, devices, D-Bus services, settings and the limiter, and the one
//! loop that interleaves Modbus transactions with D-Bus.
//!
//! Each turn of the loop advances every port (completing the transaction in flight, starting
//! the next one the schedule allows), lets the limiter decide on fresh readings, publishes,
//! handles what D-Bus brought, and then sleeps in one `ppoll` over the serial lines in use, every
//! D-Bus connection and the earliest deadline (a reply's, a unit becoming ready, a read falling
//! due). A transaction costs about two wake-ups: one when its request may go, one when its
//! reply arrives; D-Bus is served in the same wake-ups.

mod generation;
mod port;
mod probe;
mod publish;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use log::{error, info, warn};

use crate::cli::Options;
use crate::devices::Timing;
use crate::devices::{GridMeter, LimitedInverter, Rating, RegisterWriter};
use crate::limiter;
use crate::vedbus::{self, BusAddress, Poller, Pump, Settings, Watcher};
use generation::Generation;
use port::{Event, FastPace, IdentifyOverrides, Meanwhile, Port, serial_settings};
use publish::Published;

pub use probe::{list_models, probe};

/// How long start-up waits for com.victronenergy.settings before giving up (runit restarts us).
const SETTINGS_WAIT: Duration = Duration::from_secs(60);
/// Polls of one port per turn of the loop at most (each finishes or starts a transaction).
const POLLS_PER_TURN: usize = 8;
/// A service publishes what changed at most once per publish interval, less this share of it:
/// readings taken at the publish rate arrive a few milliseconds early or late, and each must
/// be published, not every other one.
fn publish_throttle(interval: Duration) -> Duration {
    interval - interval / 10
}

/// Groups the configured units by port, in command-line order.
fn build_ports(opts: &Options) -> Vec<Port> {
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
                serial_settings(opts.even_parity, baud),
                &units,
                Timing::default(),
                opts.max_transaction,
                &|unit| opts.command_interval(unit),
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
    /// The one wait of the loop: D-Bus sockets, serial lines, deadline.
    poller: Poller,
    /// A `/Role` write or a device setting arrived: a unit may have changed its role.
    roles_touched: bool,
}

/// The D-Bus connections, for the poller.
fn connections<'a>(
    settings: &'a mut Settings,
    watcher: Option<&'a mut Watcher>,
    devices: &'a mut BTreeMap<(usize, usize), Published>,
) -> Vec<&'a mut dyn Pump> {
    let mut conns: Vec<&mut dyn Pump> = Vec::with_capacity(devices.len() + 2);
    conns.push(settings);
    if let Some(w) = watcher {
        conns.push(w);
    }
    for dev in devices.values_mut() {
        conns.push(dev.pump_handle());
    }
    conns
}

/// What the loop does while a port's session (identification, the inverter's set-up) waits on
/// the bus: publish what the port's other units read meanwhile and serve D-Bus, in the same
/// single wait. The limiter catches up when the session ends.
struct Serving<'a> {
    port: usize,
    devices: &'a mut BTreeMap<(usize, usize), Published>,
    settings: &'a mut Settings,
    /// None while the limiter (which owns the watcher) is busy with the session.
    watcher: Option<&'a mut Watcher>,
    poller: &'a mut Poller,
    publish_interval: Duration,
    error: Option<vedbus::Error>,
}

impl<'a> Serving<'a> {
    fn new(
        port: usize,
        devices: &'a mut BTreeMap<(usize, usize), Published>,
        settings: &'a mut Settings,
        poller: &'a mut Poller,
        publish_interval: Duration,
    ) -> Self {
        Serving {
            port,
            devices,
            settings,
            watcher: None,
            poller,
            publish_interval,
            error: None,
        }
    }
}

impl Meanwhile for Serving<'_> {
    fn wait(&mut self, port: &Port, until: Option<Instant>, fd: Option<std::os::fd::RawFd>) {
        let now = Instant::now();
        for (&(p, u), dev) in self.devices.iter_mut() {
            if p != self.port {
                continue;
            }
            if let Some(map) = port.units.get(u).and_then(|unit| unit.map.as_ref()) {
                dev.publish(map, now, publish_throttle(self.publish_interval), |_| {});
            }
        }
        let mut conns = connections(self.settings, self.watcher.as_deref_mut(), self.devices);
        let extra: &[std::os::fd::RawFd] = match &fd {
            Some(fd) => std::slice::from_ref(fd),
            None => &[],
        };
        let result = self
            .poller
            .dispatch(&mut conns)
            .and_then(|_| self.poller.wait(&conns, extra, until))
            .and_then(|_| self.poller.dispatch(&mut conns));
        if let Err(e) = result {
            self.error.get_or_insert(e);
        }
    }
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
            poller: Poller::new(),
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
            self.set_read_paces();
            self.step_ports()?;
            let inverter_online = self.inverter.is_some_and(|i| {
                let (p, u) = i.at;
                self.ports[p].units[u].lifecycle.is_online()
            });
            // The write in flight is the one the limiter asked for: its outcome is booked
            // against it before anything new is decided.
            let writing = self
                .inverter
                .is_some_and(|i| self.ports[i.at.0].writing() == Some(i.at.1));
            if !writing {
                self.generation
                    .decide(Instant::now(), self.fresh_meter, inverter_online);
            }
            self.publish_due();
            self.dispatch()?;
            self.handle_writes();
            self.handle_setting_changes();
            self.follow_roles();
            self.wait()?;
        }
        info!("stopping");
        self.shutdown();
        Ok(())
    }

    /// The write the limiter wants made on port `p`, if its inverter is there.
    fn write_for(&self, p: usize) -> Option<port::Write> {
        match (self.inverter, self.generation.pending_write()) {
            (Some(LimiterUnit { at: (ip, iu), .. }), Some(w)) if ip == p => {
                Some((iu, w.addr, w.value))
            }
            _ => None,
        }
    }

    /// How often each unit's fast registers (the limiter's inputs) are read: as fast as the bus
    /// allows while the limiter uses them, at the publish rate (a meter) or every few seconds
    /// (an inverter) otherwise.
    fn set_read_paces(&mut self) {
        let needs = self.generation.needs(Instant::now());
        let publish = self.opts.publish_interval;
        for (p, port) in self.ports.iter_mut().enumerate() {
            for u in 0..port.units.len() {
                let is_meter = self.meter.is_some_and(|m| m.at == (p, u));
                let is_inverter = self.inverter.is_some_and(|i| i.at == (p, u))
                    || port.units[u]
                        .identity
                        .as_ref()
                        .is_some_and(|id| id.model.limiter.inverter.is_some());
                let pace = match (is_meter, is_inverter) {
                    (true, _) if needs.grid => FastPace::AsAllowed,
                    // Every other slot: the limiter's output estimate carries the PV power
                    // between readings (issue 14), and a free slot lets a limit write go out
                    // without waiting for the inverter's interval.
                    (_, true) if needs.pv => port.pacing(u).map_or(FastPace::AsAllowed, |p| {
                        FastPace::Every(limiter::pv_read_interval(needs.pv_settled, p.interval))
                    }),
                    (_, true) => FastPace::EveryFewSeconds,
                    _ => FastPace::Every(publish),
                };
                port.set_fast_pace(u, pace);
                // /RefreshTime follows: how often /Ac/Power can change on the bus now.
                if let (Some(dev), Some(period)) =
                    (self.devices.get_mut(&(p, u)), port.fast_period(u))
                {
                    let ms = period.max(publish).as_millis();
                    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
                    dev.service()
                        .set("/RefreshTime", crate::vedbus::Value::Int(ms));
                }
            }
        }
    }

    /// Advances every port: completes what is in flight and starts what the schedule allows.
    fn step_ports(&mut self) -> anyhow::Result<()> {
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
            for _ in 0..POLLS_PER_TURN {
                let write = self.write_for(p);
                let mut serving = Serving::new(
                    p,
                    &mut self.devices,
                    &mut self.settings,
                    &mut self.poller,
                    self.opts.publish_interval,
                );
                serving.watcher = Some(self.generation.watcher());
                let event = self.ports[p].poll(Instant::now(), write, &mut serving);
                if let Some(e) = serving.error {
                    return Err(e).context("D-Bus");
                }
                let again = !matches!(event, Event::Idle | Event::Busy | Event::PortDown);
                self.handle_event(p, event)?;
                if !again {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Handles what D-Bus brought: the connections found ready by the last wait read their
    /// sockets, every connection its queued messages.
    fn dispatch(&mut self) -> anyhow::Result<()> {
        let mut conns = connections(
            &mut self.settings,
            Some(self.generation.watcher()),
            &mut self.devices,
        );
        self.poller.dispatch(&mut conns).context("D-Bus")?;
        Ok(())
    }

    /// Sleeps until a reply arrives, D-Bus brings something, or the earliest deadline.
    fn wait(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut deadline = self.generation.decide_by().unwrap_or(now);
        let mut fds = [0; port::MAX_UNITS_PER_PORT];
        let mut n_fds = 0;
        for (p, port) in self.ports.iter().enumerate() {
            if let Some(t) = port.next_wake(now, self.write_for(p)) {
                deadline = deadline.min(t);
            }
            if let (Some(fd), Some(slot)) = (port.fd(), fds.get_mut(n_fds)) {
                *slot = fd;
                n_fds += 1;
            }
        }
        let conns = connections(
            &mut self.settings,
            Some(self.generation.watcher()),
            &mut self.devices,
        );
        self.poller
            .wait(&conns, &fds[..n_fds], Some(deadline))
            .context("D-Bus")?;
        Ok(())
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
            Event::Failed(_)
            | Event::Wrote { .. }
            | Event::Idle
            | Event::Busy
            | Event::PortDown => {}
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
                self.generation.publish(dev.service(), Instant::now());
            }
            if let Err(e) = dev.go_online(map) {
                error!("{e}");
            }
        }
    }

    /// The limiter's set-up of the inverter at (`p`, `u`), now, at its pace: the port reads the
    /// other units meanwhile and the loop serves D-Bus.
    fn set_up_inverter(&mut self, p: usize, u: usize) {
        let done = self.inverter_session(p, u, "set-up", |generation, regs| {
            generation.set_up_inverter(regs, Instant::now())
        });
        if done.is_none() {
            self.generation.inverter_lost();
        }
        // The meter was read meanwhile: the limiter starts from its latest reading.
        self.feed_limiter_from_maps();
    }

    /// Runs `f` with the limiter and the registers of the inverter at (`p`, `u`) in a session of
    /// its own, at its pace: the port reads the other units meanwhile and the loop serves D-Bus.
    /// `None` when the unit could not be reached.
    fn inverter_session<R>(
        &mut self,
        p: usize,
        u: usize,
        what: &str,
        f: impl FnOnce(&mut Generation, &mut dyn RegisterWriter) -> R,
    ) -> Option<R> {
        let generation = &mut self.generation;
        let mut serving = Serving::new(
            p,
            &mut self.devices,
            &mut self.settings,
            &mut self.poller,
            self.opts.publish_interval,
        );
        let result = self.ports[p].with_unit(u, &mut serving, |regs| f(generation, regs));
        if let Some(e) = serving.error {
            error!("D-Bus during the inverter's {what}: {e}");
        }
        result
    }

    /// The meter's reading as its map holds it now (read during the inverter's session; the
    /// inverter's own registers are read again after its set-up, by the schedule).
    fn feed_limiter_from_maps(&mut self) {
        if let Some(meter) = self.meter {
            let (p, u) = meter.at;
            if let Some(map) = &self.ports[p].units[u].map {
                self.generation.on_meter(&meter.offer, map);
                self.fresh_meter = true;
            }
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
            }
            _ if ours && !is_grid => {
                warn!(
                    "limiter: {} is no longer the grid meter; no grid readings",
                    dev.service_name()
                );
                self.meter = None;
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
                    .then_some(&mut self.generation);
                let throttle = publish_throttle(self.opts.publish_interval);
                dev.publish(map, now, throttle, |svc| {
                    if let Some(g) = generation {
                        g.publish(svc, now);
                    }
                });
            }
        }
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
            self.inverter_session(p, u, "shutdown", |generation, regs| {
                generation.shutdown(regs, Instant::now())
            });
        }
        for dev in self.devices.values_mut() {
            dev.go_offline();
        }
    }
}
