//! Register model and read planning.
//!
//! A device describes its registers as a static table ([`Register`]); a [`RegisterMap`] keeps the
//! raw words last read for each register and when they were read, decodes them, and plans the next
//! read: which due registers to fetch in one transaction, packed within [`PackLimits`].
//! Knows nothing of the serial port or D-Bus: reads are described as [`Read`] and results handed back
//! with [`RegisterMap::store`].

use std::time::{Duration, Instant};

/// Which Modbus table a register lives in (function 0x03 or 0x04).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Access {
    Holding,
    Input,
}

/// How the words of a register encode its value. Multi-word numbers are high word first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    U16,
    S16,
    U32,
    /// IEEE-754 single, big-endian word and byte order (the SDM230's encoding).
    F32,
    /// ASCII, two characters per register, high byte first; `words` registers long.
    Text {
        words: u16,
    },
}

impl Kind {
    pub(crate) const fn words(self) -> u16 {
        match self {
            Kind::U16 | Kind::S16 => 1,
            Kind::U32 | Kind::F32 => 2,
            Kind::Text { words } => words,
        }
    }
}

/// How often a register must be refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The limiter's inputs (meter power, inverter output): as often as the bus allows while the
    /// limiter needs them, otherwise at the period the scheduler sets
    /// ([`RegisterMap::set_fast_age`]).
    Fast,
    /// When the value is older than this.
    MaxAge(Duration),
    /// Read once (identification); never planned by [`RegisterMap::next_read`].
    Once,
}

/// A register's row in its model's table. Device files give each row a typed name (an enum
/// variant, see `devices::model::register_names!`) that converts to this, so the rest of the
/// daemon refers to registers by index, never by name string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RegId(u16);

impl RegId {
    pub(crate) const fn new(row: u16) -> Self {
        RegId(row)
    }

    /// The row in the table.
    pub(crate) const fn row(self) -> usize {
        self.0 as usize
    }
}

/// One register (or register pair / text run) as the datasheet lists it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Register {
    pub name: &'static str,
    pub access: Access,
    pub addr: u16,
    pub kind: Kind,
    /// Published value = raw × scale (e.g. 0.1 for "0.1 V" registers).
    pub scale: f64,
    pub refresh: Refresh,
}

impl Register {
    pub(crate) const fn new(
        name: &'static str,
        access: Access,
        addr: u16,
        kind: Kind,
        scale: f64,
        refresh: Refresh,
    ) -> Self {
        Register {
            name,
            access,
            addr,
            kind,
            scale,
            refresh,
        }
    }

    /// One past the last address this register occupies.
    pub(crate) fn end(&self) -> u32 {
        self.addr as u32 + self.kind.words() as u32
    }
}

/// Decodes a number from its words; `None` if the length is wrong or the value is not finite.
pub(crate) fn decode_number(kind: Kind, words: &[u16]) -> Option<f64> {
    decode_raw(kind, words).filter(|v| v.is_finite())
}

/// Decodes a number from its words, NaN and infinities included (a plausibility filter counts
/// them); `None` only if the length is wrong or the kind is text.
pub(crate) fn decode_raw(kind: Kind, words: &[u16]) -> Option<f64> {
    Some(match (kind, words) {
        (Kind::U16, [w]) => *w as f64,
        (Kind::S16, [w]) => *w as i16 as f64,
        (Kind::U32, [hi, lo]) => join_u32(*hi, *lo) as f64,
        (Kind::F32, [hi, lo]) => f32::from_bits(join_u32(*hi, *lo)) as f64,
        _ => return None,
    })
}

fn join_u32(hi: u16, lo: u16) -> u32 {
    ((hi as u32) << 16) | lo as u32
}

/// Decodes ASCII text (two characters per word, high byte first), dropping NULs, padding and
/// anything not printable so a device's garbage cannot reach D-Bus as control characters.
pub(crate) fn decode_text(words: &[u16]) -> String {
    let text: String = words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .filter(|b| b.is_ascii_graphic() || *b == b' ')
        .map(char::from)
        .collect();
    text.trim().to_string()
}

/// Looks a raw code up in a datasheet's value table (status codes, derating modes...).
pub(crate) fn lookup<T: Copy>(map: &[(u16, T)], raw: u16) -> Option<T> {
    map.iter().find(|(code, _)| *code == raw).map(|(_, v)| *v)
}

/// Bounds on one read transaction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PackLimits {
    /// Unwanted registers allowed between two wanted ones before a new read is started.
    pub max_hole: u16,
    /// Registers per read; the protocol allows at most 125.
    pub max_count: u16,
    /// Addresses a read must not cross (undefined ranges a device answers with an exception).
    pub barriers: &'static [(Access, u16)],
    /// Reads start at an even address and span an even number of registers (a device of
    /// two-register values that refuses anything else, as Eastron's meters).
    pub even: bool,
}

pub(crate) const MODBUS_MAX_READ: u16 = 125;

impl PackLimits {
    /// `start..end` widened to even bounds when the device needs them.
    pub(crate) fn aligned(&self, start: u32, end: u32) -> (u32, u32) {
        if self.even {
            (start & !1, (end + 1) & !1)
        } else {
            (start, end)
        }
    }

    /// Caps `max_count` so that one read (request, response and the 3.5-character silences before
    /// and after) takes at most `max_time` on the wire: a long inverter read must not hold the bus
    /// while the meter's power waits.
    pub(crate) fn with_time_bound(mut self, char_time: Duration, max_time: Duration) -> Self {
        self.max_count = self.max_count.min(max_count_for_time(char_time, max_time));
        self
    }
}

/// Registers per read that fit in `max_time`: 8 request + 5 + 2N response bytes + 7 silent chars.
pub(crate) fn max_count_for_time(char_time: Duration, max_time: Duration) -> u16 {
    let chars = max_time.as_secs_f64() / char_time.as_secs_f64().max(1e-9);
    // The epsilon keeps exact fits from losing a register to nanosecond rounding of char_time.
    let n = ((chars - 8.0 - 5.0 - 7.0) / 2.0 + 1e-3).floor();
    n.clamp(1.0, MODBUS_MAX_READ as f64) as u16
}

/// Wire time of a read of `count` registers, silences included, at `char_time` per character.
#[cfg(test)]
fn read_wire_time(char_time: Duration, count: u16) -> Duration {
    char_time * (8 + 5 + 2 * count as u32 + 7)
}

/// One planned transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    pub access: Access,
    pub addr: u16,
    pub count: u16,
    /// True when it includes a `Fast` register.
    pub fast: bool,
}

/// The registers of one device, their latest raw words and read times, and the read planner.
///
/// Planning is earliest-due first: each register is due when its age reaches its refresh period
/// (a `Fast` register's period is set by the scheduler, [`RegisterMap::set_fast_age`]); the next
/// read starts at the register due earliest and takes in neighbours that are due or at least
/// half-way to due, within the pack limits, so that registers read together stay together.
pub(crate) struct RegisterMap {
    table: &'static [Register],
    /// Indices into `table`, sorted by (access, addr): packing walks neighbours.
    order: Vec<usize>,
    /// Start of each register's words in `words`.
    offset: Vec<usize>,
    words: Vec<u16>,
    read_at: Vec<Option<Instant>>,
    /// Each numeric register's scaled value as accepted by the store's filter (decoded once per
    /// read, not per publish); `None` = invalid.
    values: Vec<Option<f64>>,
    limits: PackLimits,
    /// The period of `Fast` registers: `None` = as often as the bus allows.
    fast_age: Option<Duration>,
    /// When the map was made: the due time reported for registers never read.
    created: Instant,
    /// Reads stored so far: a publisher that saw this count has nothing new to take.
    stores: u64,
    /// [`earliest_due`](Self::earliest_due), kept as reads and the fast age change: the
    /// loop asks for it several times a turn.
    next_due: Option<Instant>,
}

impl RegisterMap {
    pub(crate) fn new(table: &'static [Register], limits: PackLimits) -> Self {
        let mut order: Vec<usize> = (0..table.len()).collect();
        order.sort_by_key(|&i| (table[i].access, table[i].addr));
        let mut offset = Vec::with_capacity(table.len());
        let mut total = 0;
        for r in table {
            offset.push(total);
            total += r.kind.words() as usize;
        }
        let mut map = RegisterMap {
            table,
            order,
            offset,
            words: vec![0; total],
            read_at: vec![None; table.len()],
            values: vec![None; table.len()],
            limits,
            fast_age: None,
            created: Instant::now(),
            stores: 0,
            next_due: None,
        };
        map.next_due = map.earliest_due();
        map
    }

    /// How often `Fast` registers are read: `None` = as often as the bus allows (the limiter
    /// needs them), `Some(age)` = when they are this old.
    pub(crate) fn set_fast_age(&mut self, age: Option<Duration>) {
        if self.fast_age != age {
            self.fast_age = age;
            self.next_due = self.earliest_due();
        }
    }

    /// How often register `i` is read; `None` for a register read once.
    fn period(&self, i: usize) -> Option<Duration> {
        match self.table[i].refresh {
            Refresh::Once => None,
            Refresh::Fast => Some(self.fast_age.unwrap_or(Duration::ZERO)),
            Refresh::MaxAge(age) => Some(age),
        }
    }

    /// When register `i` is due: `None` for a register read once, `Some(None)` for one never
    /// read (due before anything else).
    fn due_at(&self, i: usize) -> Option<Option<Instant>> {
        let period = self.period(i)?;
        Some(self.read_at[i].map(|t| t + period))
    }

    /// Due, or at least half-way there: worth taking into a read that is made anyway.
    fn worth_reading(&self, i: usize, now: Instant) -> bool {
        match (self.period(i), self.read_at[i]) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(period), Some(t)) => now >= t + period / 2,
        }
    }

    /// When the next read of this device is due (it may be in the past); `None` if nothing is
    /// ever read again.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    fn earliest_due(&self) -> Option<Instant> {
        (0..self.table.len())
            .filter_map(|i| self.due_at(i))
            .min()
            .map(|due| due.unwrap_or(self.created))
    }

    /// Plans the next read, if one is due at `now`: the register due earliest, extended over
    /// neighbouring registers worth reading within the pack limits.
    pub(crate) fn next_read(&self, now: Instant) -> Option<Read> {
        // Registers never read go first, in the table's order (a device file lists what
        // matters most first).
        let (seed, _) = (0..self.order.len())
            .filter_map(|pos| self.due_at(self.order[pos]).map(|due| (pos, due)))
            .filter(|(_, due)| due.is_none_or(|t| t <= now))
            .min_by_key(|&(pos, due)| (due, self.order[pos]))?;
        let wanted = |pos: usize| self.worth_reading(self.order[pos], now);
        let seed_reg = &self.table[self.order[seed]];
        let access = seed_reg.access;
        let mut start = seed_reg.addr as u32;
        let mut end = seed_reg.end();
        // Grow upwards, then downwards, over wanted registers while the hole (unwanted registers
        // and undefined addresses) stays within the limit and the read stays valid.
        for pos in seed + 1..self.order.len() {
            let r = &self.table[self.order[pos]];
            if r.access != access
                || (r.addr as u32).saturating_sub(end) > self.limits.max_hole as u32
            {
                break;
            }
            if !wanted(pos) {
                continue;
            }
            let new_end = end.max(r.end());
            if !self.fits(access, start, new_end) {
                break;
            }
            end = new_end;
        }
        for pos in (0..seed).rev() {
            let r = &self.table[self.order[pos]];
            if r.access != access || start.saturating_sub(r.end()) > self.limits.max_hole as u32 {
                break;
            }
            if !wanted(pos) {
                continue;
            }
            let new_start = start.min(r.addr as u32);
            if !self.fits(access, new_start, end) {
                break;
            }
            start = new_start;
        }
        let (start, end) = match self.limits.aligned(start, end) {
            (s, e) if self.fits(access, s, e) => (s, e),
            // The seed alone, as the table gives it, when its aligned span cannot be read.
            _ => (start, end),
        };
        let fast = self.order.iter().any(|&i| {
            let r = &self.table[i];
            r.refresh == Refresh::Fast
                && r.access == access
                && r.addr as u32 >= start
                && r.end() <= end
        });
        Some(Read {
            access,
            addr: start as u16,
            count: (end - start) as u16,
            fast,
        })
    }

    /// Whether `start..end` (aligned as the device needs) is one valid read: not too long and
    /// not across a barrier.
    fn fits(&self, access: Access, start: u32, end: u32) -> bool {
        let (start, end) = self.limits.aligned(start, end);
        end - start <= self.limits.max_count as u32
            && !self
                .limits
                .barriers
                .iter()
                .any(|&(a, b)| a == access && start < b as u32 && (b as u32) < end)
    }

    /// Stores the words of a completed read: every register wholly inside it is refreshed.
    pub(crate) fn store(&mut self, read: &Read, words: &[u16], now: Instant) {
        self.store_filtered(read, words, now, |_, v, _| v.is_finite().then_some(v));
    }

    /// Like [`store`](Self::store), passing each decoded number, NaN and infinities included,
    /// through `accept` (register, scaled value, read time) → the value to keep (e.g. a
    /// plausibility guard's verdict, which counts and logs what it rejects). Keeping a
    /// non-finite value is refused here whatever the filter says.
    pub(crate) fn store_filtered(
        &mut self,
        read: &Read,
        words: &[u16],
        now: Instant,
        mut accept: impl FnMut(RegId, f64, Instant) -> Option<f64>,
    ) {
        let start = read.addr as u32;
        let end = start + words.len() as u32;
        self.stores = self.stores.wrapping_add(1);
        for (i, r) in self.table.iter().enumerate() {
            if r.access != read.access || (r.addr as u32) < start || r.end() > end {
                continue;
            }
            let from = (r.addr as u32 - start) as usize;
            let n = r.kind.words() as usize;
            let (Some(src), Some(dst)) = (
                words.get(from..from + n),
                self.words.get_mut(self.offset[i]..self.offset[i] + n),
            ) else {
                continue;
            };
            dst.copy_from_slice(src);
            self.read_at[i] = Some(now);
            let id = RegId(i as u16);
            self.values[i] = decode_raw(r.kind, src)
                .and_then(|v| accept(id, v * r.scale, now))
                .filter(|v| v.is_finite());
        }
        self.next_due = self.earliest_due();
    }

    /// How many reads have been stored: unchanged, so are the map's values.
    pub(crate) fn stores(&self) -> u64 {
        self.stores
    }

    /// When register `id` was last read.
    pub(crate) fn read_at(&self, id: RegId) -> Option<Instant> {
        self.read_at.get(id.row()).copied().flatten()
    }

    /// The raw words of register `id`, if it has been read.
    pub(crate) fn raw(&self, id: RegId) -> Option<&[u16]> {
        self.read_at(id)?;
        let i = id.row();
        let r = self.table.get(i)?;
        self.words
            .get(self.offset[i]..self.offset[i] + r.kind.words() as usize)
    }

    /// The scaled value of numeric register `id`, if read and finite.
    pub(crate) fn number(&self, id: RegId) -> Option<f64> {
        self.values.get(id.row()).copied().flatten()
    }

    /// The scaled value of `id` with its read time, if read and finite.
    pub(crate) fn reading(&self, id: RegId) -> Option<(f64, Instant)> {
        Some((self.number(id)?, self.read_at(id)?))
    }
}

/// Plans and completes (with zeros) reads at `now` until every register read periodically has
/// been read once: what one pass of the scheduler over a fresh map would read.
#[cfg(test)]
pub(crate) fn plan_all_due(map: &mut RegisterMap, now: Instant) -> Vec<Read> {
    let mut reads = Vec::new();
    let pending = |map: &RegisterMap| {
        (0..map.table.len()).any(|i| map.period(i).is_some() && map.read_at[i] != Some(now))
    };
    while pending(map) {
        let Some(read) = map.next_read(now) else {
            break;
        };
        map.store(&read, &vec![0; read.count as usize], now);
        reads.push(read);
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::{Holding, Input};

    const SEC: Duration = Duration::from_secs(1);
    const fn age(s: u64) -> Refresh {
        Refresh::MaxAge(Duration::from_secs(s))
    }
    const fn reg(
        name: &'static str,
        access: Access,
        addr: u16,
        kind: Kind,
        r: Refresh,
    ) -> Register {
        Register::new(name, access, addr, kind, 1.0, r)
    }
    const NO_BARRIERS: PackLimits = PackLimits {
        max_hole: 4,
        max_count: MODBUS_MAX_READ,
        barriers: &[],
        even: false,
    };

    #[test]
    fn decodes_every_kind_high_word_first() {
        assert_eq!(decode_number(Kind::U16, &[0xFFFE]), Some(65534.0));
        assert_eq!(decode_number(Kind::S16, &[0xFFFE]), Some(-2.0));
        assert_eq!(decode_number(Kind::U32, &[0x0001, 0x0002]), Some(65538.0));
        let bits = 230.5f32.to_bits();
        let f = [(bits >> 16) as u16, bits as u16];
        assert_eq!(decode_number(Kind::F32, &f), Some(230.5));
    }

    #[test]
    fn rejects_wrong_lengths_and_non_finite_floats() {
        assert_eq!(decode_number(Kind::U32, &[1]), None);
        assert_eq!(decode_number(Kind::U16, &[1, 2]), None);
        let nan = f32::NAN.to_bits();
        assert_eq!(
            decode_number(Kind::F32, &[(nan >> 16) as u16, nan as u16]),
            None
        );
        let inf = f32::INFINITY.to_bits();
        assert_eq!(
            decode_number(Kind::F32, &[(inf >> 16) as u16, inf as u16]),
            None
        );
        assert_eq!(decode_number(Kind::Text { words: 1 }, &[0x4142]), None);
    }

    #[test]
    fn decodes_text_without_padding_or_control_characters() {
        // "AB", "C\0", "  ", 0x07 bell
        assert_eq!(decode_text(&[0x4142, 0x4300, 0x2020, 0x0744]), "ABC  D");
        assert_eq!(decode_text(&[0x0000, 0x0000]), "");
    }

    #[test]
    fn looks_up_value_maps() {
        const MAP: &[(u16, &str)] = &[(0, "waiting"), (1, "normal")];
        assert_eq!(lookup(MAP, 1), Some("normal"));
        assert_eq!(lookup(MAP, 7), None);
    }

    #[test]
    fn time_bound_caps_the_register_count() {
        let char_9600 = Duration::from_secs_f64(10.0 / 9600.0);
        // 125 registers: 8 + 255 + 7 chars = 270 chars ≈ 281 ms.
        assert_eq!(max_count_for_time(char_9600, Duration::from_secs(1)), 125);
        let n = max_count_for_time(char_9600, Duration::from_millis(100));
        assert_eq!(n, 38);
        // Within a microsecond: char_time itself is rounded to whole nanoseconds.
        let bound = Duration::from_millis(100) + Duration::from_micros(1);
        assert!(read_wire_time(char_9600, n) <= bound);
        assert!(read_wire_time(char_9600, n + 1) > bound);
        let limits = NO_BARRIERS.with_time_bound(char_9600, Duration::from_millis(100));
        assert_eq!(limits.max_count, 38);
    }

    static HOLES: [Register; 4] = [
        reg("a", Input, 0, Kind::F32, age(5)),
        reg("b", Input, 6, Kind::F32, age(5)), // hole of 4 after a
        reg("c", Input, 20, Kind::F32, age(5)), // hole of 12 after b
        reg("h", Holding, 0, Kind::U16, age(5)),
    ];

    #[test]
    fn packs_across_small_holes_only_and_never_mixes_tables() {
        let mut map = RegisterMap::new(&HOLES, NO_BARRIERS);
        // All never read (equally overdue): the planner starts from one and takes neighbours.
        let mut reads = plan_all_due(&mut map, Instant::now());
        reads.sort_by_key(|r| (r.access, r.addr));
        let spans: Vec<_> = reads.iter().map(|r| (r.access, r.addr, r.count)).collect();
        assert_eq!(spans, vec![(Holding, 0, 1), (Input, 0, 8), (Input, 20, 2)]);
    }

    static BARRED: [Register; 3] = [
        reg("v", Input, 0x00, Kind::F32, age(5)),
        reg("p", Input, 0x0C, Kind::F32, age(5)),
        reg("va", Input, 0x12, Kind::F32, age(5)),
    ];

    #[test]
    fn never_reads_across_a_barrier() {
        let limits = PackLimits {
            max_hole: 20,
            barriers: &[(Input, 0x12)],
            ..NO_BARRIERS
        };
        let map = RegisterMap::new(&BARRED, limits);
        let r = map.next_read(Instant::now()).unwrap();
        assert!(r.addr + r.count <= 0x12 || r.addr >= 0x12, "{r:?}");
        // Without the barrier the same table is one read.
        let map = RegisterMap::new(
            &BARRED,
            PackLimits {
                barriers: &[],
                ..limits
            },
        );
        let r = map.next_read(Instant::now()).unwrap();
        assert_eq!((r.addr, r.count), (0, 0x14));
    }

    static LONG: [Register; 3] = [
        reg("first", Input, 0, Kind::U16, age(5)),
        reg("mid", Input, 60, Kind::U32, age(5)),
        reg("last", Input, 124, Kind::U32, age(5)),
    ];

    #[test]
    fn never_exceeds_125_registers_or_the_time_bound() {
        let limits = PackLimits {
            max_hole: 100,
            ..NO_BARRIERS
        };
        let now = Instant::now();
        let reads = plan_all_due(&mut RegisterMap::new(&LONG, limits), now);
        // 0..126 would be 126 registers: two reads.
        assert_eq!(reads.len(), 2);
        assert!(reads.iter().all(|r| r.count <= 125));

        let char_9600 = Duration::from_secs_f64(10.0 / 9600.0);
        let bounded = limits.with_time_bound(char_9600, Duration::from_millis(100));
        let reads = plan_all_due(&mut RegisterMap::new(&LONG, bounded), now);
        let bound = Duration::from_millis(100) + Duration::from_micros(1);
        assert!(
            reads
                .iter()
                .all(|r| read_wire_time(char_9600, r.count) <= bound)
        );
        assert_eq!(reads.len(), 3);
    }

    static AGES: [Register; 4] = [
        reg("power", Input, 0x0C, Kind::F32, Refresh::Fast),
        reg("freq", Input, 0x46, Kind::F32, age(5)),
        reg("energy", Input, 0x48, Kind::F32, age(15)),
        reg("serial", Holding, 0xFC00, Kind::U32, Refresh::Once),
    ];

    fn input(addr: u16, count: u16) -> Read {
        Read {
            access: Input,
            addr,
            count,
            fast: false,
        }
    }

    #[test]
    fn reads_a_register_neither_too_early_nor_too_late() {
        let mut map = RegisterMap::new(&AGES, NO_BARRIERS);
        map.store(&input(0x0C, 2), &[0; 2], Instant::now());
        let t0 = Instant::now();
        // Registers never read are due at once.
        let r = map.next_read(t0).unwrap();
        assert_eq!((r.addr, r.count, r.fast), (0x46, 4, false));
        map.store(&r, &[0; 4], t0);
        map.set_fast_age(Some(60 * SEC));
        // Neither is due before its own age...
        assert_eq!(map.next_due(), Some(t0 + 5 * SEC));
        assert_eq!(map.next_read(t0 + 5 * SEC - Duration::from_millis(1)), None);
        // ...and at 5 s only the frequency is due: the energy, a third of its age, waits.
        let r = map.next_read(t0 + 5 * SEC).unwrap();
        assert_eq!((r.addr, r.count), (0x46, 2));
        map.store(&r, &[0; 2], t0 + 5 * SEC);
        // At 10 s the frequency is due and the energy, two thirds of its age, goes with it.
        let r = map.next_read(t0 + 10 * SEC).unwrap();
        assert_eq!((r.addr, r.count), (0x46, 4));
        // The once-only serial never.
        assert_eq!(map.read_at(RegId::new(3)), None);
    }

    #[test]
    fn the_kept_due_time_and_store_count_follow_every_change() {
        let mut map = RegisterMap::new(&AGES, NO_BARRIERS);
        let t0 = Instant::now();
        assert_eq!(map.stores(), 0);
        assert_eq!(map.next_due(), map.earliest_due());
        let ages = [None, Some(Duration::from_millis(200)), Some(60 * SEC), None];
        for (k, age) in ages.into_iter().enumerate() {
            map.set_fast_age(age);
            assert_eq!(map.next_due(), map.earliest_due(), "after age {age:?}");
            let now = t0 + SEC * k as u32;
            // Everything due now, once (a fast register at no age would be due forever).
            for _ in 0..8 {
                let Some(r) = map.next_read(now) else { break };
                let before = map.stores();
                map.store(&r, &[0; 8][..usize::from(r.count)], now);
                assert_eq!(map.stores(), before + 1);
                assert_eq!(map.next_due(), map.earliest_due());
            }
        }
    }

    #[test]
    fn fast_registers_follow_the_age_the_scheduler_sets() {
        let mut map = RegisterMap::new(&AGES, NO_BARRIERS);
        let t0 = Instant::now();
        plan_all_due(&mut map, t0);
        // As fast as the bus allows: due as soon as read.
        assert_eq!(map.next_due(), Some(t0));
        let r = map.next_read(t0).unwrap();
        assert_eq!((r.addr, r.count, r.fast), (0x0C, 2, true));
        // At the publish rate: due when 200 ms old.
        map.set_fast_age(Some(Duration::from_millis(200)));
        assert_eq!(map.next_due(), Some(t0 + Duration::from_millis(200)));
        assert_eq!(map.next_read(t0 + Duration::from_millis(199)), None);
        assert!(map.next_read(t0 + Duration::from_millis(200)).is_some());
    }

    #[test]
    fn the_register_due_earliest_goes_first() {
        let mut map = RegisterMap::new(
            &AGES,
            PackLimits {
                max_hole: 0,
                ..NO_BARRIERS
            },
        );
        map.set_fast_age(Some(60 * SEC));
        let t0 = Instant::now();
        map.store(&input(0x0C, 2), &[0; 2], t0);
        map.store(&input(0x46, 4), &[0; 4], t0);
        // At 16 s: the frequency has been due since 5 s, the energy since 15 s.
        let r = map.next_read(t0 + 16 * SEC).unwrap();
        assert_eq!(
            (r.addr, r.count),
            (0x46, 4),
            "the energy is worth taking along"
        );
        map.store(&input(0x46, 2), &[0; 2], t0 + 16 * SEC);
        let r = map.next_read(t0 + 16 * SEC).unwrap();
        assert_eq!((r.addr, r.count), (0x48, 2));
    }

    static ODD: [Register; 3] = [
        reg("a", Input, 0x01, Kind::U16, age(5)),
        reg("b", Input, 0x04, Kind::U16, age(5)),
        reg("c", Input, 0x10, Kind::U32, age(5)),
    ];

    #[test]
    fn a_device_that_needs_even_reads_gets_even_starts_and_counts() {
        let even = PackLimits {
            max_hole: 4,
            max_count: 6,
            even: true,
            ..NO_BARRIERS
        };
        let now = Instant::now();
        let reads = plan_all_due(&mut RegisterMap::new(&ODD, even), now);
        let spans: Vec<_> = reads.iter().map(|r| (r.addr, r.count)).collect();
        assert_eq!(spans, vec![(0x00, 6), (0x10, 2)]);
        // The same table without the rule: as the registers lie.
        let reads = plan_all_due(&mut RegisterMap::new(&ODD, NO_BARRIERS), now);
        let spans: Vec<_> = reads.iter().map(|r| (r.addr, r.count)).collect();
        assert_eq!(spans, vec![(0x01, 4), (0x10, 2)]);
        // Alignment counts against the length limit: 0x01..0x05 fits in 4, not once aligned.
        let short = PackLimits {
            max_count: 4,
            ..even
        };
        let reads = plan_all_due(&mut RegisterMap::new(&ODD, short), now);
        assert!(
            reads
                .iter()
                .all(|r| r.addr % 2 == 0 && r.count % 2 == 0 && r.count <= 4)
        );
        assert_eq!(reads.len(), 3);
    }

    #[test]
    fn store_refreshes_only_registers_wholly_inside_the_read() {
        let mut map = RegisterMap::new(&HOLES, NO_BARRIERS);
        let now = Instant::now();
        let bits = 49.95f32.to_bits();
        let read = Read {
            access: Input,
            addr: 0,
            count: 7,
            fast: false,
        };
        let mut words = [0u16; 7];
        words[0] = (bits >> 16) as u16;
        words[1] = bits as u16;
        map.store(&read, &words, now);
        let (a, b) = (RegId::new(0), RegId::new(1));
        assert!((map.number(a).unwrap() - 49.95).abs() < 1e-4);
        assert_eq!(map.number(b), None, "b spans 6..8, only 6 was read");
    }

    #[test]
    fn store_filtered_keeps_what_the_filter_accepts() {
        let mut map = RegisterMap::new(&HOLES, NO_BARRIERS);
        let now = Instant::now();
        let bits = 250.0f32.to_bits();
        let read = Read {
            access: Input,
            addr: 0,
            count: 2,
            fast: false,
        };
        let words = [(bits >> 16) as u16, bits as u16];
        map.store_filtered(&read, &words, now, |id, v, _| {
            (id == RegId::new(0) && v < 200.0).then_some(v)
        });
        let a = RegId::new(0);
        assert_eq!(map.number(a), None, "rejected: published invalid");
        assert_eq!(map.read_at(a), Some(now), "but it was read");
        map.store_filtered(&read, &words, now, |_, _, _| Some(199.0));
        assert_eq!(
            map.number(a),
            Some(199.0),
            "e.g. a counter's last accepted value"
        );
    }

    #[test]
    fn non_finite_readings_reach_the_filter_but_are_never_kept() {
        let mut map = RegisterMap::new(&HOLES, NO_BARRIERS);
        let now = Instant::now();
        let nan = f32::NAN.to_bits();
        let read = Read {
            access: Input,
            addr: 0,
            count: 2,
            fast: false,
        };
        let words = [(nan >> 16) as u16, nan as u16];
        let mut seen = Vec::new();
        map.store_filtered(&read, &words, now, |_, v, _| {
            seen.push(v);
            Some(v)
        });
        assert!(seen.len() == 1 && seen[0].is_nan(), "the filter counts it");
        assert_eq!(map.number(RegId::new(0)), None);
        map.store(&read, &words, now);
        assert_eq!(map.number(RegId::new(0)), None);
    }
}
