//! The reply assembler: a pure state machine fed the bytes read from the line and the instants
//! they were read at. It frames one reply (exact length from the request, 5 bytes for an
//! exception), skips complete frames that cannot be this reply (late replies to earlier
//! requests, another unit's), ends a frame at an inter-byte gap, and keeps the deadlines.
//! No I/O and no clock of its own, so every timing rule is tested with explicit instants.

use std::time::{Duration, Instant};

use super::ModbusError;
use super::frame::{
    EXCEPTION_FLAG, EXCEPTION_FRAME_LEN, Expected, MAX_FRAME, Response, foreign_reply_len,
    parse_reply, reply_frame_len,
};

/// Longest gap allowed between bytes of one reply: USB adapters deliver in chunks every few ms
/// (FTDI latency timer 16 ms), so this is far above 1.5 characters but still quick.
pub(crate) const MAX_INTER_BYTE_GAP: Duration = Duration::from_millis(50);

/// Where the assembly stands after the latest bytes or the latest look at the clock.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Incomplete. If no byte comes before `until`, ask again then: that decides.
    Pending { until: Instant },
    /// Finished: the reply, or why there is none. Asking again gives the same answer.
    Complete(Result<Received, ModbusError>),
}

/// A valid reply, at the start of the assembler's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Register data bytes (reads), 0 for a write's echo.
    pub(crate) data_len: usize,
    /// From the end of the request to the first byte of the reply proper.
    pub(crate) turnaround: Duration,
}

pub(crate) struct Assembler {
    expected: Expected,
    sent_at: Instant,
    /// The reply must have begun by then.
    deadline: Instant,
    /// Nothing is waited for after this, however the line keeps delivering (skipped frames,
    /// noise): the deadline, one gap and the longest frame's wire time.
    overrun_at: Instant,
    buf: [u8; MAX_FRAME],
    len: usize,
    /// The first byte of the reply proper (after skipped frames).
    reply_began: Option<Instant>,
    last_byte: Option<Instant>,
    bytes_in: usize,
    skipped: usize,
    /// A skipped frame came from this other unit: reported as WrongUnit if nothing of ours
    /// follows.
    other_unit: Option<u8>,
}

impl Assembler {
    /// Expects the reply to a request whose last byte left at `sent_at`; it must begin within
    /// `timeout`. `max_frame_time` is the wire time of the longest frame.
    pub(crate) fn new(
        expected: Expected,
        sent_at: Instant,
        timeout: Duration,
        max_frame_time: Duration,
    ) -> Self {
        let deadline = sent_at + timeout;
        Self {
            expected,
            sent_at,
            deadline,
            overrun_at: deadline + MAX_INTER_BYTE_GAP + max_frame_time,
            buf: [0; MAX_FRAME],
            len: 0,
            reply_began: None,
            last_byte: None,
            bytes_in: 0,
            skipped: 0,
            other_unit: None,
        }
    }

    /// Where the next bytes read from the line go: never past the end of the frame being
    /// assembled, so the bytes of whatever follows stay on the line. Empty once complete.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        let want = self.want();
        self.buf.get_mut(self.len..want).unwrap_or(&mut [])
    }

    /// `n` bytes were read into [`Assembler::space`] at `now` (0: none, just a look at the clock).
    pub(crate) fn received(&mut self, n: usize, now: Instant) -> Progress {
        let n = n.min(self.want().saturating_sub(self.len));
        if n > 0 {
            if self.len == 0 {
                self.reply_began = Some(now);
            }
            self.len += n;
            self.bytes_in += n;
            self.last_byte = Some(now);
        }
        self.progress(now)
    }

    /// Copies `bytes` in as far as they belong to this reply and returns how many were taken.
    #[cfg(test)]
    pub(crate) fn feed(&mut self, bytes: &[u8], now: Instant) -> (usize, Progress) {
        let mut taken = 0;
        loop {
            let rest = bytes.get(taken..).unwrap_or(&[]);
            let space = self.space();
            let n = space.len().min(rest.len());
            space[..n].copy_from_slice(&rest[..n]);
            taken += n;
            let progress = self.received(n, now);
            if n == 0 || taken == bytes.len() || matches!(progress, Progress::Complete(_)) {
                return (taken, progress);
            }
        }
    }

    /// The unit the reply is expected from.
    pub(crate) fn unit(&self) -> u8 {
        self.expected.unit
    }

    /// Every byte read for this reply, skipped frames included.
    pub(crate) fn bytes_in(&self) -> usize {
        self.bytes_in
    }

    /// Bytes of complete frames skipped as late replies to earlier requests.
    pub(crate) fn skipped(&self) -> usize {
        self.skipped
    }

    /// The register data of a complete, valid read reply (empty otherwise).
    pub(crate) fn register_data(&self) -> &[u8] {
        match parse_reply(&self.expected, self.head()) {
            Ok(Response::Registers(data)) => data,
            _ => &[],
        }
    }

    fn head(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Bytes this reply needs: the request's reply length, or 5 once it shows it is our
    /// exception.
    fn need(&self) -> usize {
        if self.head().get(1) == Some(&(self.expected.function | EXCEPTION_FLAG)) {
            EXCEPTION_FRAME_LEN
        } else {
            self.expected.reply_len()
        }
    }

    /// Bytes to read before judging: what this reply needs, or the whole of a longer frame its
    /// header announces (a late reply to a bigger read), so that it can be skipped whole.
    fn want(&self) -> usize {
        let need = self.need();
        reply_frame_len(self.head())
            .unwrap_or(need)
            .max(need)
            .min(MAX_FRAME)
    }

    fn progress(&mut self, now: Instant) -> Progress {
        while let Some(stale_len) = foreign_reply_len(&self.expected, self.head()) {
            if let Some(&unit) = self.buf.first()
                && unit != self.expected.unit
            {
                self.other_unit = Some(unit);
            }
            self.buf.copy_within(stale_len..self.len, 0);
            self.len -= stale_len;
            self.skipped += stale_len;
            // The reply proper starts now (or with the next byte).
            self.reply_began = (self.len > 0).then_some(now);
        }
        let need = self.need();
        if let Some(frame) = self.buf.get(..need)
            && self.len >= need
        {
            match parse_reply(&self.expected, frame) {
                Ok(response) => {
                    let data_len = match response {
                        Response::Registers(data) => data.len(),
                        Response::WriteAck => 0,
                    };
                    let began = self.reply_began.unwrap_or(self.sent_at);
                    return Progress::Complete(Ok(Received {
                        data_len,
                        turnaround: began.saturating_duration_since(self.sent_at),
                    }));
                }
                // A longer frame is arriving: judge it once it is whole.
                Err(_) if self.want() > self.len => {}
                Err(e) => return Progress::Complete(Err(e)),
            }
        }
        if now > self.overrun_at {
            return Progress::Complete(Err(ModbusError::Malformed("reply overran its time")));
        }
        match self.last_byte {
            Some(last) if self.len > 0 => {
                let gap_end = (last + MAX_INTER_BYTE_GAP).min(self.overrun_at);
                if now >= gap_end {
                    Progress::Complete(Err(self.cut_short(need)))
                } else {
                    Progress::Pending { until: gap_end }
                }
            }
            _ if now >= self.deadline => Progress::Complete(Err(self.no_reply())),
            _ => Progress::Pending {
                until: self.deadline,
            },
        }
    }

    /// Nothing of ours by the deadline.
    fn no_reply(&self) -> ModbusError {
        match self.other_unit {
            Some(got) => ModbusError::WrongUnit {
                expected: self.expected.unit,
                got,
            },
            None => ModbusError::Timeout,
        }
    }

    /// The line went quiet in the middle of a frame.
    fn cut_short(&self, need: usize) -> ModbusError {
        match self.buf.get(..need) {
            Some(frame) if self.len >= need => match parse_reply(&self.expected, frame) {
                Err(e) => e,
                Ok(_) => ModbusError::Malformed("unexpected"),
            },
            _ => ModbusError::Malformed("truncated frame"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::scripted::with_crc;
    use crate::modbus::{ExceptionCode, Request};

    const TIMEOUT: Duration = Duration::from_millis(200);
    const FRAME_TIME: Duration = Duration::from_millis(267);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The meter's voltage..power read, 14 input registers: 33-byte reply.
    fn meter_read(t0: Instant) -> Assembler {
        let req = Request::ReadInput {
            unit: 2,
            addr: 0,
            count: 14,
        };
        Assembler::new(req.expected(), t0, TIMEOUT, FRAME_TIME)
    }

    fn meter_reply(first: u8) -> Vec<u8> {
        let mut body = vec![2, 4, 28];
        body.extend((0..28).map(|i| first.wrapping_add(i)));
        with_crc(&body)
    }

    fn done(p: Progress) -> Result<Received, ModbusError> {
        match p {
            Progress::Complete(r) => r,
            Progress::Pending { until } => panic!("still pending until {until:?}"),
        }
    }

    fn until(p: Progress) -> Instant {
        match p {
            Progress::Pending { until } => until,
            Progress::Complete(r) => panic!("complete: {r:?}"),
        }
    }

    #[test]
    fn a_whole_reply_completes_with_its_turnaround() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let reply = meter_reply(7);
        let (taken, p) = a.feed(&reply, t0 + ms(12));
        assert_eq!(taken, 33);
        let r = done(p).unwrap();
        assert_eq!(r.data_len, 28);
        assert_eq!(r.turnaround, ms(12));
        assert_eq!(a.register_data(), &reply[3..31]);
        assert_eq!((a.bytes_in(), a.skipped()), (33, 0));
    }

    #[test]
    fn a_reply_in_pieces_completes_at_exactly_its_length_and_leaves_what_follows() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let mut line = meter_reply(1);
        line.extend([0xAA, 0xBB]);
        for (i, byte) in line[..32].iter().enumerate() {
            let at = t0 + ms(10 + i as u64);
            let (taken, p) = a.feed(&[*byte], at);
            assert_eq!(taken, 1);
            // Each byte extends the wait by one gap.
            assert_eq!(until(p), at + MAX_INTER_BYTE_GAP);
        }
        // The last byte and the two after it arrive together: only the frame is taken.
        let (taken, p) = a.feed(&line[32..], t0 + ms(42));
        assert_eq!(taken, 1);
        let r = done(p).unwrap();
        assert_eq!(r.turnaround, ms(10));
        assert!(a.space().is_empty());
    }

    #[test]
    fn an_exception_is_complete_at_five_bytes_with_its_code() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let exception = with_crc(&[2, 0x84, 2]);
        let (taken, p) = a.feed(&exception[..3], t0 + ms(5));
        assert_eq!(taken, 3);
        // Two more bytes needed, not the 33 of a normal reply.
        assert_eq!(a.space().len(), 2);
        let _ = until(p);
        let (_, p) = a.feed(&exception[3..], t0 + ms(6));
        assert!(matches!(
            done(p),
            Err(ModbusError::Exception {
                function: 4,
                code: ExceptionCode::IllegalDataAddress
            })
        ));
    }

    #[test]
    fn silence_until_the_deadline_is_a_timeout() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        assert_eq!(until(a.received(0, t0)), t0 + TIMEOUT);
        assert_eq!(until(a.received(0, t0 + TIMEOUT - ms(1))), t0 + TIMEOUT);
        assert!(matches!(
            done(a.received(0, t0 + TIMEOUT)),
            Err(ModbusError::Timeout)
        ));
    }

    #[test]
    fn a_gap_ends_a_truncated_frame() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let reply = meter_reply(0);
        let at = t0 + ms(20);
        let p = a.feed(&reply[..20], at).1;
        assert_eq!(until(p), at + MAX_INTER_BYTE_GAP);
        let _ = until(a.received(0, at + MAX_INTER_BYTE_GAP - ms(1)));
        assert!(matches!(
            done(a.received(0, at + MAX_INTER_BYTE_GAP)),
            Err(ModbusError::Malformed("truncated frame"))
        ));
    }

    #[test]
    fn a_reply_begun_in_time_may_finish_after_the_deadline() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let reply = meter_reply(0);
        let _ = until(a.feed(&reply[..10], t0 + TIMEOUT - ms(1)).1);
        let r = done(a.feed(&reply[10..], t0 + TIMEOUT + ms(20)).1).unwrap();
        assert_eq!(r.turnaround, TIMEOUT - ms(1));
    }

    #[test]
    fn a_bad_crc_is_a_crc_error_once_the_frame_is_whole() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let mut reply = meter_reply(0);
        reply[10] ^= 0x10;
        let (taken, p) = a.feed(&reply, t0 + ms(10));
        assert_eq!(taken, 33);
        assert!(matches!(done(p), Err(ModbusError::Crc)));
    }

    #[test]
    fn another_units_late_reply_is_skipped_and_ours_taken() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        // The inverter's late reply to a 2-register read, then the meter's own.
        let late = with_crc(&[1, 4, 4, 0, 1, 0, 2]);
        let _ = until(a.feed(&late, t0 + ms(3)).1);
        assert_eq!(a.skipped(), 9);
        let r = done(a.feed(&meter_reply(0), t0 + ms(30)).1).unwrap();
        // Measured from our reply, not from the late one.
        assert_eq!(r.turnaround, ms(30));
        assert_eq!((a.bytes_in(), a.skipped()), (42, 9));
    }

    #[test]
    fn another_units_reply_alone_is_reported_as_the_wrong_unit() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        // Exactly our shape, from unit 3.
        let mut body = meter_reply(0);
        body[0] = 3;
        let other = with_crc(&body[..31]);
        assert_eq!(until(a.feed(&other, t0 + ms(5)).1), t0 + TIMEOUT);
        assert!(matches!(
            done(a.received(0, t0 + TIMEOUT)),
            Err(ModbusError::WrongUnit {
                expected: 2,
                got: 3
            })
        ));
    }

    #[test]
    fn a_late_reply_to_an_earlier_bigger_read_is_read_whole_and_skipped() {
        let t0 = Instant::now();
        let req = Request::ReadInput {
            unit: 2,
            addr: 0x46,
            count: 10,
        };
        let mut a = Assembler::new(req.expected(), t0, TIMEOUT, FRAME_TIME);
        // Our own unit's reply to the earlier 14-register read: 33 bytes where we need 25.
        let late = meter_reply(0);
        let (taken, p) = a.feed(&late, t0 + ms(2));
        assert_eq!(taken, 33);
        let _ = until(p);
        assert_eq!(a.skipped(), 33);
        let mut ours = vec![2, 4, 20];
        ours.extend([9; 20]);
        let r = done(a.feed(&with_crc(&ours), t0 + ms(40)).1).unwrap();
        assert_eq!(r.data_len, 20);
        assert_eq!(a.register_data(), &[9; 20]);
    }

    #[test]
    fn garbage_is_malformed_and_a_line_that_keeps_delivering_frames_is_cut_off() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let (_, p) = a.feed(&[0x55; 40], t0 + ms(5));
        assert!(matches!(done(p), Err(ModbusError::Malformed(_))));

        // Another unit's frames, back to back for ever: at each look half a frame is pending.
        let mut a = meter_read(t0);
        let other = with_crc(&[1, 6, 0, 3, 0, 1]);
        let rotated: Vec<u8> = other[4..].iter().chain(&other[..4]).copied().collect();
        let _ = until(a.feed(&other[..4], t0 + ms(1)).1);
        let mut at = t0 + ms(1);
        let outcome = loop {
            at += ms(10);
            match a.feed(&rotated, at).1 {
                Progress::Pending { until } => assert!(until <= at + MAX_INTER_BYTE_GAP),
                Progress::Complete(r) => break r,
            }
        };
        assert!(matches!(
            outcome,
            Err(ModbusError::Malformed("reply overran its time"))
        ));
        let overrun_at = t0 + TIMEOUT + MAX_INTER_BYTE_GAP + FRAME_TIME;
        assert!(at > overrun_at && at <= overrun_at + ms(10));
    }

    #[test]
    fn late_replies_without_ours_end_at_the_deadline() {
        let t0 = Instant::now();
        let mut a = meter_read(t0);
        let other = with_crc(&[1, 6, 0, 3, 0, 1]);
        let mut at = t0;
        let outcome = loop {
            at += ms(10);
            match a.feed(&other, at).1 {
                Progress::Pending { until } => assert_eq!(until, t0 + TIMEOUT),
                Progress::Complete(r) => break r,
            }
        };
        assert_eq!(at, t0 + TIMEOUT);
        assert!(matches!(
            outcome,
            Err(ModbusError::WrongUnit {
                expected: 2,
                got: 1
            })
        ));
    }

    #[test]
    fn write_echoes_complete_at_eight_bytes() {
        let t0 = Instant::now();
        let req = Request::WriteSingle {
            unit: 1,
            addr: 3,
            value: 55,
        };
        let mut a = Assembler::new(req.expected(), t0, TIMEOUT, FRAME_TIME);
        let echo = with_crc(&[1, 6, 0, 3, 0, 55]);
        let r = done(a.feed(&echo, t0 + ms(8)).1).unwrap();
        assert_eq!(r.data_len, 0);
        assert!(a.register_data().is_empty());
        let mut a = Assembler::new(req.expected(), t0, TIMEOUT, FRAME_TIME);
        let wrong = with_crc(&[1, 6, 0, 3, 0, 56]);
        assert!(matches!(
            done(a.feed(&wrong, t0 + ms(8)).1),
            Err(ModbusError::Malformed("wrong echo"))
        ));
    }
}
