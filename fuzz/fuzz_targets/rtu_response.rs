//! Fuzzes the RTU reply parser with arbitrary requests and frames.
//!
//! Random bytes almost never form a reply with the right unit, function, length and CRC, so the
//! first input byte picks how much of the frame the target builds itself:
//! * bits 0-1: CRC: none appended (the frame is the raw input), the correct one, or a corrupted
//!   one;
//! * bit 2: shape the frame as a reply to the request (unit, function, byte count, length); then
//!   bit 3 makes it an exception reply and bit 4 echoes the request exactly for a write.
//!
//! Whatever the mode: a frame whose CRC is wrong is never accepted, neither as data nor as an
//! exception; an accepted frame comes from the expected unit; an accepted read carries exactly
//! `count` registers; and a correctly shaped reply with a correct CRC is accepted.
#![no_main]

// `modbus::frame` is private; its functions are re-exported from `modbus`.
use dbus_modbus_client::modbus::{ModbusError, Request, Response, crc_ok, crc16, parse_response};
use libfuzzer_sys::fuzz_target;

/// The values of a 0x10 write: only their number reaches the reply.
static VALUES: [u16; 125] = [0; 125];
const CRC_NONE: u8 = 0;
const CRC_CORRECT: u8 = 1;
const SHAPE: u8 = 0b100;
const EXCEPTION: u8 = 0b1000;
const EXACT_ECHO: u8 = 0b1_0000;

/// A frame assembled on the stack (no allocation per run).
struct Frame {
    bytes: [u8; 300],
    len: usize,
}

impl Frame {
    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.bytes.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// The frame to parse; `None` when the input does not make one.
fn build(mode: u8, expected: &Request, body: &[u8]) -> Option<Frame> {
    let mut frame = Frame {
        bytes: [0; 300],
        len: 0,
    };
    if mode & SHAPE == 0 {
        frame.push(body)?;
    } else if mode & EXCEPTION != 0 {
        frame.push(&[expected.unit(), expected.function() | 0x80, *body.first()?])?;
    } else {
        frame.push(&[expected.unit(), expected.function()])?;
        let (addr, second) = match *expected {
            Request::ReadHolding { count, .. } | Request::ReadInput { count, .. } => {
                let data_len = 2 * usize::from(count);
                frame.push(&[u8::try_from(data_len).ok()?])?;
                // The register data: the input, zero-padded to the length.
                let data = body.get(..data_len.min(body.len()))?;
                frame.push(data)?;
                frame.push([0; 250].get(..data_len - data.len())?)?;
                return finish(frame, mode, body);
            }
            Request::WriteSingle { addr, value, .. } => (addr, value),
            Request::WriteMultiple { addr, values, .. } => (addr, values.len() as u16),
        };
        if mode & EXACT_ECHO != 0 {
            frame.push(&addr.to_be_bytes())?;
            frame.push(&second.to_be_bytes())?;
        } else {
            frame.push(body.get(..4)?)?;
        }
    }
    finish(frame, mode, body)
}

/// Appends the CRC the mode asks for.
fn finish(mut frame: Frame, mode: u8, body: &[u8]) -> Option<Frame> {
    let crc_mode = mode & 0b11;
    if crc_mode != CRC_NONE || mode & SHAPE != 0 {
        let mut crc = crc16(frame.as_bytes());
        if crc_mode != CRC_CORRECT {
            // Never zero: always a wrong CRC.
            crc ^= u16::from(*body.last().unwrap_or(&1)).max(1);
        }
        frame.push(&crc.to_le_bytes())?;
    }
    Some(frame)
}

fuzz_target!(|data: &[u8]| {
    // Header: mode, unit, function selector, addr (2), count (2), value (2); the rest is the body.
    let Some((header, body)) = data.split_first_chunk::<9>() else {
        return;
    };
    let [mode, unit, function, a0, a1, c0, c1, v0, v1] = *header;
    let addr = u16::from_be_bytes([a0, a1]);
    let count = u16::from_be_bytes([c0, c1]) % 126;
    let Some(values) = VALUES.get(..usize::from(count)) else {
        return;
    };
    let expected = match function % 4 {
        0 => Request::ReadHolding { unit, addr, count },
        1 => Request::ReadInput { unit, addr, count },
        2 => Request::WriteSingle {
            unit,
            addr,
            value: u16::from_be_bytes([v0, v1]),
        },
        _ => Request::WriteMultiple { unit, addr, values },
    };
    let Some(frame) = build(mode, &expected, body) else {
        return;
    };
    let frame = frame.as_bytes();
    let result = parse_response(&expected, frame);
    let accepted = matches!(result, Ok(_) | Err(ModbusError::Exception { .. }));
    if accepted {
        assert!(
            crc_ok(frame),
            "bad-CRC frame accepted: {frame:02x?} for {expected:?}"
        );
        assert_eq!(frame.first(), Some(&unit), "foreign unit accepted");
    }
    let crc_mode = mode & 0b11;
    let corrupted = crc_mode != CRC_NONE && crc_mode != CRC_CORRECT;
    if corrupted {
        assert!(!accepted, "corrupted CRC accepted: {frame:02x?}");
    }
    if let Ok(Response::Registers(data)) = result {
        assert_eq!(data.len(), 2 * usize::from(count));
    }
    let reads = matches!(
        expected,
        Request::ReadHolding { .. } | Request::ReadInput { .. }
    );
    let well_formed = mode & SHAPE != 0
        && crc_mode == CRC_CORRECT
        && (mode & EXCEPTION != 0 || reads || mode & EXACT_ECHO != 0);
    if well_formed {
        assert!(
            accepted,
            "good reply refused: {result:?} {frame:02x?} for {expected:?}"
        );
    }
});
