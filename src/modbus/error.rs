//! What can go wrong: on the wire ([`ModbusError`]'s wire variants, counted per unit), or in
//! the caller's request ([`InvalidRequest`], refused before the bus is touched, never counted).

use std::fmt;

/// A Modbus exception code (Modbus Application Protocol v1.1b3 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionCode {
    /// 01: the device does not implement the function.
    IllegalFunction,
    /// 02: the register range is not (entirely) in the device's map.
    IllegalDataAddress,
    /// 03: the value or the count is not acceptable to the device.
    IllegalDataValue,
    /// 04: the device failed while executing the request.
    ServerDeviceFailure,
    /// 05: accepted, but it will take long: ask again later.
    Acknowledge,
    /// 06: busy with a long command: ask again later.
    ServerDeviceBusy,
    /// Any other code (never one of the above: [`ExceptionCode::from_code`] names those).
    Other(u8),
}

impl ExceptionCode {
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => ExceptionCode::IllegalFunction,
            2 => ExceptionCode::IllegalDataAddress,
            3 => ExceptionCode::IllegalDataValue,
            4 => ExceptionCode::ServerDeviceFailure,
            5 => ExceptionCode::Acknowledge,
            6 => ExceptionCode::ServerDeviceBusy,
            other => ExceptionCode::Other(other),
        }
    }

    /// The code as it is on the wire.
    pub fn code(self) -> u8 {
        match self {
            ExceptionCode::IllegalFunction => 1,
            ExceptionCode::IllegalDataAddress => 2,
            ExceptionCode::IllegalDataValue => 3,
            ExceptionCode::ServerDeviceFailure => 4,
            ExceptionCode::Acknowledge => 5,
            ExceptionCode::ServerDeviceBusy => 6,
            ExceptionCode::Other(code) => code,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ExceptionCode::IllegalFunction => "illegal function",
            ExceptionCode::IllegalDataAddress => "illegal data address",
            ExceptionCode::IllegalDataValue => "illegal data value",
            ExceptionCode::ServerDeviceFailure => "server device failure",
            ExceptionCode::Acknowledge => "acknowledge",
            ExceptionCode::ServerDeviceBusy => "server device busy",
            ExceptionCode::Other(_) => "other",
        }
    }
}

impl fmt::Display for ExceptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

/// A request the master refuses before touching the bus: a mistake of the caller, not of the
/// line or the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRequest {
    /// A read of 0 or more than 125 registers.
    ReadCount(usize),
    /// A 0x10 write of 0 or more than 123 registers.
    WriteCount(usize),
    /// Unit 0 is the broadcast address: nobody answers, so nothing can be read from it.
    BroadcastRead,
    /// Units 248..=255 are reserved by the serial line specification.
    ReservedUnit(u8),
    /// The block runs past register 65535.
    AddressRange { addr: u16, count: usize },
    /// `start` while another transaction is still in flight.
    InFlight,
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidRequest::ReadCount(n) => write!(f, "read of {n} registers (1..=125)"),
            InvalidRequest::WriteCount(n) => write!(f, "write of {n} registers (1..=123)"),
            InvalidRequest::BroadcastRead => write!(f, "a broadcast cannot be read"),
            InvalidRequest::ReservedUnit(u) => write!(f, "unit {u} is reserved (1..=247)"),
            InvalidRequest::AddressRange { addr, count } => {
                write!(f, "{count} registers from {addr} run past register 65535")
            }
            InvalidRequest::InFlight => write!(f, "another transaction is in flight"),
        }
    }
}

#[derive(Debug)]
pub enum ModbusError {
    /// No reply at all within the response timeout.
    Timeout,
    /// A full-length frame with a bad CRC.
    Crc,
    /// Short/truncated frame, bad byte count, wrong function, bad echo, garbage.
    Malformed(&'static str),
    WrongUnit {
        expected: u8,
        got: u8,
    },
    /// A Modbus exception reply to `function`.
    Exception {
        function: u8,
        code: ExceptionCode,
    },
    /// Port gone, read or write failed.
    Io(std::io::Error),
    /// Refused before anything was sent; see [`InvalidRequest`].
    InvalidRequest(InvalidRequest),
}

/// The error classes, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Timeout,
    Crc,
    Malformed,
    WrongUnit,
    Exception,
    Io,
    /// Never counted: such a request never reaches the bus.
    InvalidRequest,
}

impl ErrorKind {
    pub const COUNT: usize = 7;
    pub const ALL: [ErrorKind; ErrorKind::COUNT] = [
        ErrorKind::Timeout,
        ErrorKind::Crc,
        ErrorKind::Malformed,
        ErrorKind::WrongUnit,
        ErrorKind::Exception,
        ErrorKind::Io,
        ErrorKind::InvalidRequest,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

impl ModbusError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModbusError::Timeout => ErrorKind::Timeout,
            ModbusError::Crc => ErrorKind::Crc,
            ModbusError::Malformed(_) => ErrorKind::Malformed,
            ModbusError::WrongUnit { .. } => ErrorKind::WrongUnit,
            ModbusError::Exception { .. } => ErrorKind::Exception,
            ModbusError::Io(_) => ErrorKind::Io,
            ModbusError::InvalidRequest(_) => ErrorKind::InvalidRequest,
        }
    }

    /// The reply could not be trusted (corrupt, truncated, from another unit): what follows it on
    /// the line must not be taken for the next reply.
    pub(crate) fn leaves_line_dirty(&self) -> bool {
        matches!(
            self,
            ModbusError::Crc | ModbusError::Malformed(_) | ModbusError::WrongUnit { .. }
        )
    }
}

impl fmt::Display for ModbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModbusError::Timeout => write!(f, "no reply (timeout)"),
            ModbusError::Crc => write!(f, "CRC error"),
            ModbusError::Malformed(what) => write!(f, "malformed reply: {what}"),
            ModbusError::WrongUnit { expected, got } => {
                write!(f, "reply from unit {got}, expected unit {expected}")
            }
            ModbusError::Exception { function, code } => {
                write!(f, "Modbus exception {code} on function {function:#04x}")
            }
            ModbusError::Io(e) => write!(f, "serial I/O error: {e}"),
            ModbusError::InvalidRequest(what) => write!(f, "invalid request: {what}"),
        }
    }
}

impl std::error::Error for ModbusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModbusError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ModbusError {
    fn from(e: std::io::Error) -> Self {
        ModbusError::Io(e)
    }
}

impl From<serialport::Error> for ModbusError {
    fn from(e: serialport::Error) -> Self {
        ModbusError::Io(e.into())
    }
}

impl From<InvalidRequest> for ModbusError {
    fn from(e: InvalidRequest) -> Self {
        ModbusError::InvalidRequest(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_distinct() {
        let errors = [
            ModbusError::Timeout,
            ModbusError::Crc,
            ModbusError::Malformed("x"),
            ModbusError::WrongUnit {
                expected: 1,
                got: 2,
            },
            ModbusError::Exception {
                function: 3,
                code: ExceptionCode::IllegalDataAddress,
            },
            ModbusError::Io(std::io::ErrorKind::BrokenPipe.into()),
            ModbusError::InvalidRequest(InvalidRequest::BroadcastRead),
        ];
        for (e, kind) in errors.iter().zip(ErrorKind::ALL) {
            assert_eq!(e.kind(), kind);
            assert_eq!(
                kind.index(),
                ErrorKind::ALL.iter().position(|k| *k == kind).unwrap()
            );
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn exception_codes_round_trip_and_name_themselves() {
        for code in 0..=255u8 {
            assert_eq!(ExceptionCode::from_code(code).code(), code);
        }
        assert_eq!(
            ExceptionCode::from_code(2),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(ExceptionCode::from_code(6), ExceptionCode::ServerDeviceBusy);
        assert_eq!(ExceptionCode::from_code(11), ExceptionCode::Other(11));
        let e = ModbusError::Exception {
            function: 4,
            code: ExceptionCode::IllegalDataAddress,
        };
        assert_eq!(
            e.to_string(),
            "Modbus exception 2 (illegal data address) on function 0x04"
        );
    }

    #[test]
    fn caller_mistakes_are_not_wire_errors() {
        let e = ModbusError::from(InvalidRequest::ReadCount(0));
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert!(!e.leaves_line_dirty());
        assert!(e.to_string().contains("read of 0 registers"), "{e}");
    }
}
