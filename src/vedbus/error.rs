//! What can go wrong on D-Bus.

use std::fmt;

/// What can go wrong on D-Bus. Malformed input from peers is never an error here: it is
/// answered (error reply or non-zero SetValue) and logged at debug level.
#[derive(Debug)]
pub enum Error {
    /// Could not connect to the bus.
    Connect(String),
    /// The bus connection was lost.
    Disconnected,
    /// Waiting on the connections' sockets failed.
    Poll(String),
    /// The well-known name is owned by another process.
    NameTaken(String),
    /// A bad name, path or argument given by the caller.
    Invalid(String),
    /// A method call to a peer failed (error reply, timeout, peer gone).
    Call { method: String, detail: String },
    /// A peer's reply did not have the documented shape.
    BadReply(String),
    /// `com.victronenergy.settings` did not appear in time.
    SettingsUnavailable,
    /// localsettings refused a setting (AddSettings error code or SetValue result).
    Setting { path: String, code: i32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect to D-Bus: {e}"),
            Error::Disconnected => write!(f, "D-Bus connection lost"),
            Error::Poll(e) => write!(f, "waiting on the D-Bus connections failed: {e}"),
            Error::NameTaken(n) => write!(f, "D-Bus name {n} is already taken by another process"),
            Error::Invalid(e) => write!(f, "invalid D-Bus argument: {e}"),
            Error::Call { method, detail } => write!(f, "D-Bus call {method} failed: {detail}"),
            Error::BadReply(e) => write!(f, "unexpected D-Bus reply: {e}"),
            Error::SettingsUnavailable => write!(f, "com.victronenergy.settings is not running"),
            Error::Setting { path, code } => write!(f, "setting {path} refused with code {code}"),
        }
    }
}

impl std::error::Error for Error {}
