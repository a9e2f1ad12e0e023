//! RTU frames as pure functions over byte slices: request building (via rmodbus), CRC, and a
//! strict response parser that never panics on wire input.

use crc::{CRC_16_MODBUS, Crc};
use rmodbus::{ModbusProto, VectorTrait, client::ModbusRequest};

use super::ModbusError;

/// An RTU frame is at most 256 bytes (unit + PDU of 253 + CRC).
pub const MAX_FRAME: usize = 256;
/// The Modbus limit for one read of holding/input registers.
pub const MAX_READ_REGISTERS: u16 = 125;
/// The Modbus limit for one 0x10 write.
pub const MAX_WRITE_REGISTERS: u16 = 123;

pub const FN_READ_HOLDING: u8 = 0x03;
pub const FN_READ_INPUT: u8 = 0x04;
pub const FN_WRITE_SINGLE: u8 = 0x06;
pub const FN_WRITE_MULTIPLE: u8 = 0x10;
const EXCEPTION_FLAG: u8 = 0x80;
const EXCEPTION_FRAME_LEN: usize = 5;

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
pub struct FrameBuf {
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
    pub fn as_bytes(&self) -> &[u8] {
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

/// What the master asked, i.e. everything needed to validate the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub unit: u8,
    pub function: u8,
    pub addr: u16,
    /// Registers read or written (1 for 0x06).
    pub count: u16,
    /// The value written by 0x06 (echoed back); unused otherwise.
    pub value: u16,
}

impl Request {
    /// Length of a normal (non-exception) reply.
    pub fn response_len(&self) -> usize {
        match self.function {
            FN_READ_HOLDING | FN_READ_INPUT => 5 + 2 * usize::from(self.count),
            _ => 8,
        }
    }

    fn is_read(&self) -> bool {
        matches!(self.function, FN_READ_HOLDING | FN_READ_INPUT)
    }

    /// Builds the request frame with rmodbus. `values` is used by 0x10 only.
    pub fn encode(&self, values: &[u16], out: &mut FrameBuf) -> Result<(), ModbusError> {
        let mut req = ModbusRequest::new(self.unit, ModbusProto::Rtu);
        let built = match self.function {
            FN_READ_HOLDING => req.generate_get_holdings(self.addr, self.count, out),
            FN_READ_INPUT => req.generate_get_inputs(self.addr, self.count, out),
            FN_WRITE_SINGLE => req.generate_set_holding(self.addr, self.value, out),
            FN_WRITE_MULTIPLE => req.generate_set_holdings_bulk(self.addr, values, out),
            _ => return Err(ModbusError::Malformed("unsupported function")),
        };
        built.map_err(|_| ModbusError::Malformed("request does not fit a frame"))
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
pub fn parse_response<'a>(
    expected: &Request,
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
            code,
        });
    }
    if function != expected.function {
        return Err(ModbusError::Malformed("wrong function"));
    }
    if frame.len() != expected.response_len() {
        return Err(ModbusError::Malformed("wrong length"));
    }
    check_crc_and_unit(expected, unit, frame)?;
    let body = frame.get(2..frame.len() - 2).unwrap_or(&[]);
    if expected.is_read() {
        match body.split_first() {
            Some((&byte_count, data))
                if usize::from(byte_count) == 2 * usize::from(expected.count)
                    && data.len() == usize::from(byte_count) =>
            {
                Ok(Response::Registers(data))
            }
            _ => Err(ModbusError::Malformed("wrong byte count")),
        }
    } else {
        let second = if expected.function == FN_WRITE_SINGLE {
            expected.value
        } else {
            expected.count
        };
        let mut echo = [0u8; 4];
        echo[..2].copy_from_slice(&expected.addr.to_be_bytes());
        echo[2..].copy_from_slice(&second.to_be_bytes());
        if body == echo {
            Ok(Response::WriteAck)
        } else {
            Err(ModbusError::Malformed("wrong echo"))
        }
    }
}

fn check_crc_and_unit(expected: &Request, unit: u8, frame: &[u8]) -> Result<(), ModbusError> {
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

/// True when `buf` starts with a complete, CRC-valid reply that cannot be the reply to
/// `expected` (another unit, function or length): a stale or late reply to an earlier request.
/// Returns its length so the reader can skip it. Another unit's frame is skipped too: with one
/// master on the bus it can only be a late reply to an earlier request, and our own reply may
/// still follow it.
pub fn foreign_frame_len(expected: &Request, buf: &[u8]) -> Option<usize> {
    let len = reply_frame_len(buf)?;
    let frame = buf.get(..len)?;
    let function = *frame.get(1)?;
    let shape_ours = if function == expected.function | EXCEPTION_FLAG {
        true
    } else {
        function == expected.function && len == expected.response_len()
    };
    let ours = shape_ours && frame.first() == Some(&expected.unit);
    (!ours && crc_ok(frame)).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut f = body.to_vec();
        f.extend_from_slice(&crc16(body).to_le_bytes());
        f
    }

    fn read_req(count: u16) -> Request {
        Request {
            unit: 2,
            function: FN_READ_INPUT,
            addr: 0,
            count,
            value: 0,
        }
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
    fn encodes_read_request_with_crc() {
        let mut buf = FrameBuf::default();
        let req = Request {
            unit: 1,
            function: FN_READ_HOLDING,
            addr: 0x0003,
            count: 1,
            value: 0,
        };
        req.encode(&[], &mut buf).unwrap();
        assert_eq!(&buf.as_bytes()[..6], &[1, 3, 0, 3, 0, 1]);
        assert!(crc_ok(buf.as_bytes()));
        assert_eq!(buf.as_bytes().len(), 8);
    }

    #[test]
    fn parses_read_reply() {
        let f = with_crc(&[2, 4, 4, 0x43, 0x66, 0, 0]);
        assert_eq!(
            parse_response(&read_req(2), &f).unwrap(),
            Response::Registers(&[0x43, 0x66, 0, 0])
        );
    }

    #[test]
    fn classifies_errors() {
        let req = read_req(1);
        let mut bad = with_crc(&[2, 4, 2, 1, 2]);
        bad[3] ^= 1;
        assert!(matches!(parse_response(&req, &bad), Err(ModbusError::Crc)));
        let wrong_unit = with_crc(&[3, 4, 2, 1, 2]);
        assert!(matches!(
            parse_response(&req, &wrong_unit),
            Err(ModbusError::WrongUnit {
                expected: 2,
                got: 3
            })
        ));
        let exception = with_crc(&[2, 0x84, 2]);
        assert!(matches!(
            parse_response(&req, &exception),
            Err(ModbusError::Exception {
                function: 4,
                code: 2
            })
        ));
        let wrong_count = with_crc(&[2, 4, 4, 1, 2]);
        assert!(matches!(
            parse_response(&req, &wrong_count),
            Err(ModbusError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(&req, &[2, 4]),
            Err(ModbusError::Malformed(_))
        ));
        let wrong_fn = with_crc(&[2, 3, 2, 1, 2]);
        assert!(matches!(
            parse_response(&req, &wrong_fn),
            Err(ModbusError::Malformed(_))
        ));
    }

    #[test]
    fn checks_write_echo() {
        let req = Request {
            unit: 1,
            function: FN_WRITE_SINGLE,
            addr: 3,
            count: 1,
            value: 55,
        };
        assert_eq!(
            parse_response(&req, &with_crc(&[1, 6, 0, 3, 0, 55])).unwrap(),
            Response::WriteAck
        );
        assert!(matches!(
            parse_response(&req, &with_crc(&[1, 6, 0, 3, 0, 56])),
            Err(ModbusError::Malformed(_))
        ));
    }

    #[test]
    fn recognises_a_foreign_frame_but_not_our_own_shape() {
        let req = read_req(1);
        let other = with_crc(&[2, 4, 4, 1, 2, 3, 4]);
        assert_eq!(foreign_frame_len(&req, &other), Some(9));
        let ours = with_crc(&[2, 4, 2, 1, 2]);
        assert_eq!(foreign_frame_len(&req, &ours), None);
        // Our shape from another unit: a late reply to an earlier request to that unit.
        let ours_wrong_unit = with_crc(&[3, 4, 2, 1, 2]);
        assert_eq!(foreign_frame_len(&req, &ours_wrong_unit), Some(7));
        let mut bad_crc = ours_wrong_unit.clone();
        bad_crc[3] ^= 1;
        assert_eq!(foreign_frame_len(&req, &bad_crc), None);
    }

    #[test]
    fn frame_buf_refuses_overflow() {
        let mut b = FrameBuf::default();
        assert!(b.extend(&[0u8; MAX_FRAME]).is_ok());
        assert!(b.push(1).is_err());
        assert!(b.extend(&[1]).is_err());
    }
}
