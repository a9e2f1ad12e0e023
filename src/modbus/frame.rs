//! RTU frames as pure functions over byte slices: CRC, the fixed buffer requests are built in,
//! and a strict reply parser that never panics on wire input.

use crc::{CRC_16_MODBUS, Crc};
use rmodbus::VectorTrait;

use super::{ExceptionCode, ModbusError};

/// An RTU frame is at most 256 bytes (unit + PDU of 253 + CRC).
pub(crate) const MAX_FRAME: usize = 256;
/// The Modbus limit for one read of holding/input registers.
pub(crate) const MAX_READ_REGISTERS: u16 = 125;
/// The Modbus limit for one 0x10 write.
pub(crate) const MAX_WRITE_REGISTERS: u16 = 123;

pub(crate) const FN_READ_HOLDING: u8 = 0x03;
pub(crate) const FN_READ_INPUT: u8 = 0x04;
pub(crate) const FN_WRITE_SINGLE: u8 = 0x06;
pub(crate) const FN_WRITE_MULTIPLE: u8 = 0x10;
pub(crate) const EXCEPTION_FLAG: u8 = 0x80;
/// Unit, function | 0x80, code, CRC.
pub(crate) const EXCEPTION_FRAME_LEN: usize = 5;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

/// CRC-16/MODBUS of `bytes` (sent low byte first).
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

/// True when the last two bytes of `frame` are the CRC of the bytes before them.
pub fn crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(body_len) if body_len > 0 => {
            let (body, tail) = frame.split_at(body_len);
            tail == crc16(body).to_le_bytes()
        }
        _ => false,
    }
}

/// A fixed, stack-sized frame buffer: lets rmodbus build requests without a heap allocation.
#[derive(Clone)]
pub(crate) struct FrameBuf {
    bytes: [u8; MAX_FRAME],
    len: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_FRAME],
            len: 0,
        }
    }
}

impl FrameBuf {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl VectorTrait<u8> for FrameBuf {
    fn push(&mut self, value: u8) -> Result<(), rmodbus::ErrorKind> {
        let slot = self
            .bytes
            .get_mut(self.len)
            .ok_or(rmodbus::ErrorKind::OOB)?;
        *slot = value;
        self.len += 1;
        Ok(())
    }
    fn extend(&mut self, other: &[u8]) -> Result<(), rmodbus::ErrorKind> {
        let end = self.len + other.len();
        let dest = self
            .bytes
            .get_mut(self.len..end)
            .ok_or(rmodbus::ErrorKind::OOB)?;
        dest.copy_from_slice(other);
        self.len = end;
        Ok(())
    }
    fn len(&self) -> usize {
        self.len
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn clear(&mut self) {
        self.len = 0;
    }
    fn cut_end(&mut self, len_to_cut: usize, _value: u8) {
        self.len = self.len.saturating_sub(len_to_cut);
    }
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.bytes.get_mut(..self.len).unwrap_or(&mut [])
    }
    fn resize(&mut self, new_len: usize, value: u8) -> Result<(), rmodbus::ErrorKind> {
        if new_len > MAX_FRAME {
            return Err(rmodbus::ErrorKind::OOB);
        }
        if let Some(grown) = self.bytes.get_mut(self.len..new_len) {
            grown.fill(value);
        }
        self.len = new_len;
        Ok(())
    }
    fn replace(&mut self, index: usize, value: u8) {
        if let Some(slot) = self
            .bytes
            .get_mut(..self.len)
            .and_then(|b| b.get_mut(index))
        {
            *slot = value;
        }
    }
}

/// What a reply to a request must look like: everything the parser checks it against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    pub(crate) unit: u8,
    pub(crate) function: u8,
    pub(crate) body: ExpectedBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpectedBody {
    /// A read: a byte count of `2 * count`, then the registers.
    Registers { count: u16 },
    /// A write: the request's address and its second word echoed (the value written by 0x06,
    /// the count written by 0x10).
    Echo { addr: u16, second: u16 },
}

impl Expected {
    /// Length of a normal (non-exception) reply.
    pub(crate) fn reply_len(&self) -> usize {
        match self.body {
            ExpectedBody::Registers { count } => 5 + 2 * usize::from(count),
            ExpectedBody::Echo { .. } => 8,
        }
    }
}

/// A validated reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// Register data bytes (big-endian, 2 per register) of a 0x03/0x04 reply.
    Registers(&'a [u8]),
    /// A correct echo of a 0x06/0x10 request.
    WriteAck,
}

/// Validates `frame` as the complete reply to `expected`. Pure, never panics.
/// Order: function (to know the shape) → length → CRC → unit → byte count / echo, so a corrupt
/// frame is reported as Crc and nothing after the CRC check is trusted before it passes.
pub(crate) fn parse_reply<'a>(
    expected: &Expected,
    frame: &'a [u8],
) -> Result<Response<'a>, ModbusError> {
    let (unit, function) = match frame {
        [unit, function, ..] if frame.len() >= EXCEPTION_FRAME_LEN => (*unit, *function),
        _ => return Err(ModbusError::Malformed("short frame")),
    };
    if function == expected.function | EXCEPTION_FLAG {
        if frame.len() != EXCEPTION_FRAME_LEN {
            return Err(ModbusError::Malformed("exception frame length"));
        }
        check_crc_and_unit(expected, unit, frame)?;
        let code = frame.get(2).copied().unwrap_or(0);
        return Err(ModbusError::Exception {
            function: expected.function,
            code: ExceptionCode::from_code(code),
        });
    }
    if function != expected.function {
        return Err(ModbusError::Malformed("wrong function"));
    }
    if frame.len() != expected.reply_len() {
        return Err(ModbusError::Malformed("wrong length"));
    }
    check_crc_and_unit(expected, unit, frame)?;
    let body = frame.get(2..frame.len() - 2).unwrap_or(&[]);
    match expected.body {
        ExpectedBody::Registers { count } => match body.split_first() {
            Some((&byte_count, data))
                if usize::from(byte_count) == 2 * usize::from(count)
                    && data.len() == usize::from(byte_count) =>
            {
                Ok(Response::Registers(data))
            }
            _ => Err(ModbusError::Malformed("wrong byte count")),
        },
        ExpectedBody::Echo { addr, second } => {
            let mut echo = [0u8; 4];
            echo[..2].copy_from_slice(&addr.to_be_bytes());
            echo[2..].copy_from_slice(&second.to_be_bytes());
            if body == echo {
                Ok(Response::WriteAck)
            } else {
                Err(ModbusError::Malformed("wrong echo"))
            }
        }
    }
}

fn check_crc_and_unit(expected: &Expected, unit: u8, frame: &[u8]) -> Result<(), ModbusError> {
    if !crc_ok(frame) {
        return Err(ModbusError::Crc);
    }
    if unit != expected.unit {
        return Err(ModbusError::WrongUnit {
            expected: expected.unit,
            got: unit,
        });
    }
    Ok(())
}

/// The length of whatever complete reply frame starts `buf`, judged from its header only
/// (None until enough header bytes are there or for an unknown function).
pub fn reply_frame_len(buf: &[u8]) -> Option<usize> {
    let function = *buf.get(1)?;
    if function & EXCEPTION_FLAG != 0 {
        return Some(EXCEPTION_FRAME_LEN);
    }
    match function {
        FN_READ_HOLDING | FN_READ_INPUT => buf.get(2).map(|&n| 5 + usize::from(n)),
        FN_WRITE_SINGLE | FN_WRITE_MULTIPLE => Some(8),
        _ => None,
    }
}

/// The length of the complete, CRC-valid reply starting `buf` when it cannot be the reply to
/// `expected` (another unit, function or length): a stale or late reply to an earlier request,
/// to be skipped. Another unit's frame is skipped too: with one master on the bus it can only be
/// a late reply to an earlier request, and our own reply may still follow it.
pub(crate) fn foreign_reply_len(expected: &Expected, buf: &[u8]) -> Option<usize> {
    let len = reply_frame_len(buf)?;
    let frame = buf.get(..len)?;
    let function = *frame.get(1)?;
    let shape_ours = if function == expected.function | EXCEPTION_FLAG {
        true
    } else {
        function == expected.function && len == expected.reply_len()
    };
    let ours = shape_ours && frame.first() == Some(&expected.unit);
    (!ours && crc_ok(frame)).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::scripted::with_crc;
    use crate::modbus::{ExceptionCode, Request};

    fn read_req(count: u16) -> Expected {
        Request::ReadInput {
            unit: 2,
            addr: 0,
            count,
        }
        .expected()
    }

    #[test]
    fn crc_matches_the_specification_example() {
        // "01 04 02 FF FF" -> CRC B8 80 (low byte first), from the Modbus over serial line guide.
        assert_eq!(
            crc16(&[0x01, 0x04, 0x02, 0xFF, 0xFF]).to_le_bytes(),
            [0xB8, 0x80]
        );
    }

    #[test]
    fn parses_read_reply() {
        let f = with_crc(&[2, 4, 4, 0x43, 0x66, 0, 0]);
        assert_eq!(
            parse_reply(&read_req(2), &f).unwrap(),
            Response::Registers(&[0x43, 0x66, 0, 0])
        );
    }

    #[test]
    fn classifies_errors() {
        let req = read_req(1);
        let mut bad = with_crc(&[2, 4, 2, 1, 2]);
        bad[3] ^= 1;
        assert!(matches!(parse_reply(&req, &bad), Err(ModbusError::Crc)));
        let wrong_unit = with_crc(&[3, 4, 2, 1, 2]);
        assert!(matches!(
            parse_reply(&req, &wrong_unit),
            Err(ModbusError::WrongUnit {
                expected: 2,
                got: 3
            })
        ));
        let exception = with_crc(&[2, 0x84, 2]);
        assert!(matches!(
            parse_reply(&req, &exception),
            Err(ModbusError::Exception {
                function: 4,
                code: ExceptionCode::IllegalDataAddress
            })
        ));
        let wrong_count = with_crc(&[2, 4, 4, 1, 2]);
        assert!(matches!(
            parse_reply(&req, &wrong_count),
            Err(ModbusError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(&req, &[2, 4]),
            Err(ModbusError::Malformed(_))
        ));
        let wrong_fn = with_crc(&[2, 3, 2, 1, 2]);
        assert!(matches!(
            parse_reply(&req, &wrong_fn),
            Err(ModbusError::Malformed(_))
        ));
    }

    #[test]
    fn checks_write_echo() {
        let single = Request::WriteSingle {
            unit: 1,
            addr: 3,
            value: 55,
        }
        .expected();
        assert_eq!(
            parse_reply(&single, &with_crc(&[1, 6, 0, 3, 0, 55])).unwrap(),
            Response::WriteAck
        );
        assert!(matches!(
            parse_reply(&single, &with_crc(&[1, 6, 0, 3, 0, 56])),
            Err(ModbusError::Malformed(_))
        ));
        let multiple = Request::WriteMultiple {
            unit: 1,
            addr: 122,
            values: &[1, 900],
        }
        .expected();
        assert_eq!(
            parse_reply(&multiple, &with_crc(&[1, 0x10, 0, 122, 0, 2])).unwrap(),
            Response::WriteAck
        );
        assert!(matches!(
            parse_reply(&multiple, &with_crc(&[1, 0x10, 0, 122, 0, 1])),
            Err(ModbusError::Malformed("wrong echo"))
        ));
    }

    #[test]
    fn recognises_a_foreign_frame_but_not_our_own_shape() {
        let req = read_req(1);
        let other = with_crc(&[2, 4, 4, 1, 2, 3, 4]);
        assert_eq!(foreign_reply_len(&req, &other), Some(9));
        let ours = with_crc(&[2, 4, 2, 1, 2]);
        assert_eq!(foreign_reply_len(&req, &ours), None);
        // Our shape from another unit: a late reply to an earlier request to that unit.
        let ours_wrong_unit = with_crc(&[3, 4, 2, 1, 2]);
        assert_eq!(foreign_reply_len(&req, &ours_wrong_unit), Some(7));
        let mut bad_crc = ours_wrong_unit.clone();
        bad_crc[3] ^= 1;
        assert_eq!(foreign_reply_len(&req, &bad_crc), None);
        // Our exception from another unit.
        let exception = with_crc(&[3, 0x84, 2]);
        assert_eq!(foreign_reply_len(&req, &exception), Some(5));
    }

    #[test]
    fn frame_buf_refuses_overflow() {
        let mut b = FrameBuf::default();
        assert!(b.extend(&[0u8; MAX_FRAME]).is_ok());
        assert!(b.push(1).is_err());
        assert!(b.extend(&[1]).is_err());
    }
}
