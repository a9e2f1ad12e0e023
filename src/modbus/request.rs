//! What the master can ask: a typed request per function, checked before it reaches the bus,
//! encoded by rmodbus into a fixed buffer, and the reply shape it expects.

use rmodbus::{ModbusProto, client::ModbusRequest};

use super::frame::{
    Expected, ExpectedBody, FN_READ_HOLDING, FN_READ_INPUT, FN_WRITE_MULTIPLE, FN_WRITE_SINGLE,
    FrameBuf, MAX_READ_REGISTERS, MAX_WRITE_REGISTERS, Response, foreign_reply_len, parse_reply,
};
use super::{InvalidRequest, ModbusError};

/// Unit 0: writes to every device, no reply.
pub(crate) const BROADCAST: u8 = 0;
/// The highest unit address; 248..=255 are reserved.
const MAX_UNIT: u8 = 247;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFunction {
    /// 0x03
    Holding,
    /// 0x04
    Input,
}

impl ReadFunction {
    pub fn code(self) -> u8 {
        match self {
            ReadFunction::Holding => FN_READ_HOLDING,
            ReadFunction::Input => FN_READ_INPUT,
        }
    }
}

/// One Modbus request. Any value can be built; [`Request::check`] (called by the master before
/// anything is sent) refuses what no device could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// 0x03: `count` holding registers from `addr`.
    ReadHolding { unit: u8, addr: u16, count: u16 },
    /// 0x04: `count` input registers from `addr`.
    ReadInput { unit: u8, addr: u16, count: u16 },
    /// 0x06: one holding register; the reply echoes it.
    WriteSingle { unit: u8, addr: u16, value: u16 },
    /// 0x10: consecutive holding registers from `addr`; the reply echoes address and count.
    WriteMultiple {
        unit: u8,
        addr: u16,
        values: &'a [u16],
    },
}

impl Request<'_> {
    /// A read of `count` registers of either kind.
    pub fn read(function: ReadFunction, unit: u8, addr: u16, count: u16) -> Self {
        match function {
            ReadFunction::Holding => Request::ReadHolding { unit, addr, count },
            ReadFunction::Input => Request::ReadInput { unit, addr, count },
        }
    }

    pub fn unit(&self) -> u8 {
        match *self {
            Request::ReadHolding { unit, .. }
            | Request::ReadInput { unit, .. }
            | Request::WriteSingle { unit, .. }
            | Request::WriteMultiple { unit, .. } => unit,
        }
    }

    /// The function code on the wire.
    pub fn function(&self) -> u8 {
        match self {
            Request::ReadHolding { .. } => FN_READ_HOLDING,
            Request::ReadInput { .. } => FN_READ_INPUT,
            Request::WriteSingle { .. } => FN_WRITE_SINGLE,
            Request::WriteMultiple { .. } => FN_WRITE_MULTIPLE,
        }
    }

    /// Length of a normal (non-exception) reply.
    pub fn response_len(&self) -> usize {
        self.expected().reply_len()
    }

    /// Refuses what no device could answer: counts outside the function's limit, a read from
    /// the broadcast address, reserved units, blocks running past register 65535.
    pub fn check(&self) -> Result<(), InvalidRequest> {
        let unit = self.unit();
        if unit > MAX_UNIT {
            return Err(InvalidRequest::ReservedUnit(unit));
        }
        let (addr, count) = match *self {
            Request::ReadHolding { addr, count, .. } | Request::ReadInput { addr, count, .. } => {
                if count == 0 || count > MAX_READ_REGISTERS {
                    return Err(InvalidRequest::ReadCount(usize::from(count)));
                }
                if unit == BROADCAST {
                    return Err(InvalidRequest::BroadcastRead);
                }
                (addr, usize::from(count))
            }
            Request::WriteSingle { addr, .. } => (addr, 1),
            Request::WriteMultiple { addr, values, .. } => {
                let too_many = values.len() > usize::from(MAX_WRITE_REGISTERS);
                if values.is_empty() || too_many {
                    return Err(InvalidRequest::WriteCount(values.len()));
                }
                (addr, values.len())
            }
        };
        if usize::from(addr) + count > 0x1_0000 {
            return Err(InvalidRequest::AddressRange { addr, count });
        }
        Ok(())
    }

    /// Builds the request frame with rmodbus, after [`Request::check`].
    pub(crate) fn encode(&self, out: &mut FrameBuf) -> Result<(), InvalidRequest> {
        self.check()?;
        let mut req = ModbusRequest::new(self.unit(), ModbusProto::Rtu);
        let built = match *self {
            Request::ReadHolding { addr, count, .. } => req.generate_get_holdings(addr, count, out),
            Request::ReadInput { addr, count, .. } => req.generate_get_inputs(addr, count, out),
            Request::WriteSingle { addr, value, .. } => req.generate_set_holding(addr, value, out),
            Request::WriteMultiple { addr, values, .. } => {
                req.generate_set_holdings_bulk(addr, values, out)
            }
        };
        // Unreachable after the checks (the largest request, 123 registers, is 255 bytes).
        built.map_err(|_| match *self {
            Request::WriteMultiple { values, .. } => InvalidRequest::WriteCount(values.len()),
            _ => InvalidRequest::ReadCount(0),
        })
    }

    /// The shape of the reply to this request.
    pub(crate) fn expected(&self) -> Expected {
        let body = match *self {
            Request::ReadHolding { count, .. } | Request::ReadInput { count, .. } => {
                ExpectedBody::Registers { count }
            }
            Request::WriteSingle { addr, value, .. } => ExpectedBody::Echo {
                addr,
                second: value,
            },
            Request::WriteMultiple { addr, values, .. } => ExpectedBody::Echo {
                addr,
                second: u16::try_from(values.len()).unwrap_or(u16::MAX),
            },
        };
        Expected {
            unit: self.unit(),
            function: self.function(),
            body,
        }
    }
}

/// Validates `frame` as the complete reply to `request`. Pure, never panics; a frame whose CRC
/// is wrong is never accepted, neither as data nor as an exception.
pub fn parse_response<'f>(
    request: &Request<'_>,
    frame: &'f [u8],
) -> Result<Response<'f>, ModbusError> {
    parse_reply(&request.expected(), frame)
}

/// The length of the complete, CRC-valid frame starting `buf` when it cannot be the reply to
/// `request` (a late reply to an earlier request, or another unit's), else None.
pub fn foreign_frame_len(request: &Request<'_>, buf: &[u8]) -> Option<usize> {
    foreign_reply_len(&request.expected(), buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::crc_ok;

    fn encoded(req: &Request) -> Vec<u8> {
        let mut buf = FrameBuf::default();
        req.encode(&mut buf).unwrap();
        buf.as_bytes().to_vec()
    }

    #[test]
    fn encodes_each_function_with_crc() {
        let read = encoded(&Request::ReadHolding {
            unit: 1,
            addr: 0x0003,
            count: 1,
        });
        assert_eq!(&read[..6], &[1, 3, 0, 3, 0, 1]);
        assert!(crc_ok(&read));
        assert_eq!(read.len(), 8);
        let input = encoded(&Request::read(ReadFunction::Input, 2, 0x0046, 10));
        assert_eq!(&input[..6], &[2, 4, 0, 0x46, 0, 10]);
        let single = encoded(&Request::WriteSingle {
            unit: 1,
            addr: 3,
            value: 0x1234,
        });
        assert_eq!(&single[..6], &[1, 6, 0, 3, 0x12, 0x34]);
        let multiple = encoded(&Request::WriteMultiple {
            unit: 1,
            addr: 122,
            values: &[1, 900],
        });
        assert_eq!(&multiple[..11], &[1, 0x10, 0, 122, 0, 2, 4, 0, 1, 3, 0x84]);
        assert!(crc_ok(&multiple));
    }

    #[test]
    fn refuses_what_no_device_could_answer() {
        let read = |unit, addr, count| Request::ReadInput { unit, addr, count }.check();
        assert_eq!(read(2, 0, 0), Err(InvalidRequest::ReadCount(0)));
        assert_eq!(read(2, 0, 126), Err(InvalidRequest::ReadCount(126)));
        assert_eq!(read(0, 0, 1), Err(InvalidRequest::BroadcastRead));
        assert_eq!(read(248, 0, 1), Err(InvalidRequest::ReservedUnit(248)));
        assert_eq!(
            read(2, 0xFFFF, 2),
            Err(InvalidRequest::AddressRange {
                addr: 0xFFFF,
                count: 2
            })
        );
        assert_eq!(read(2, 0xFFFF, 1), Ok(()));
        assert_eq!(read(247, 0, 125), Ok(()));
        let write = |values: &[u16]| {
            Request::WriteMultiple {
                unit: 1,
                addr: 0,
                values,
            }
            .check()
        };
        assert_eq!(write(&[]), Err(InvalidRequest::WriteCount(0)));
        assert_eq!(write(&[0; 124]), Err(InvalidRequest::WriteCount(124)));
        assert_eq!(write(&[0; 123]), Ok(()));
        // A broadcast write is fine: nobody answers, every device executes it.
        let broadcast = Request::WriteSingle {
            unit: BROADCAST,
            addr: 0x12,
            value: 0,
        };
        assert_eq!(broadcast.check(), Ok(()));
        // The refusal happens before encoding.
        let mut buf = FrameBuf::default();
        assert!(
            Request::read(ReadFunction::Holding, 0, 0, 1)
                .encode(&mut buf)
                .is_err()
        );
        assert!(buf.as_bytes().is_empty());
    }

    #[test]
    fn reply_lengths_follow_the_function() {
        assert_eq!(
            Request::read(ReadFunction::Input, 2, 0, 14).response_len(),
            33
        );
        let single = Request::WriteSingle {
            unit: 1,
            addr: 3,
            value: 5,
        };
        assert_eq!(single.response_len(), 8);
        let multiple = Request::WriteMultiple {
            unit: 1,
            addr: 3,
            values: &[5; 10],
        };
        assert_eq!(multiple.response_len(), 8);
        assert_eq!(multiple.function(), 0x10);
        assert_eq!(multiple.unit(), 1);
    }
}
