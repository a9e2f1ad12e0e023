//! What Victron's Python services do to a value with `int()`, `float()` and `str()`:
//! localsettings converts every value written or given as a default that way, and velib's
//! GetText is `str(value)` (testkit/README.md). For the values dbus-python hands them.

use dbus::arg::{ArgType, RefArg};

/// A D-Bus argument as dbus-python unwraps it: variants are transparent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyValue {
    /// Every integer type (dbus.Int32, dbus.UInt64, dbus.Byte, ...).
    Int(i128),
    /// dbus.Boolean, an int subclass: 0 or 1 to `int()` and `float()`, "1"/"0" to `str()`.
    Bool(bool),
    Float(f64),
    /// dbus.String, dbus.ObjectPath and dbus.Signature (all str subclasses).
    Str(String),
    /// Arrays, dicts, structs, file descriptors.
    Container,
}

impl PyValue {
    pub(crate) fn of(a: &dyn RefArg) -> PyValue {
        match a.arg_type() {
            ArgType::Variant => a
                .as_iter()
                .and_then(|mut i| i.next().map(PyValue::of))
                .unwrap_or(PyValue::Container),
            ArgType::Boolean => PyValue::Bool(a.as_i64() == Some(1)),
            ArgType::Byte
            | ArgType::Int16
            | ArgType::UInt16
            | ArgType::Int32
            | ArgType::UInt32
            | ArgType::Int64 => PyValue::Int(i128::from(a.as_i64().unwrap_or(0))),
            ArgType::UInt64 => PyValue::Int(i128::from(a.as_u64().unwrap_or(0))),
            ArgType::Double => PyValue::Float(a.as_f64().unwrap_or(f64::NAN)),
            ArgType::String | ArgType::ObjectPath | ArgType::Signature => {
                PyValue::Str(a.as_str().unwrap_or_default().to_string())
            }
            _ => PyValue::Container,
        }
    }

    /// `bool(x)`. (An empty container is false to Python; none is sent where this matters.)
    pub(crate) fn truthy(&self) -> bool {
        match self {
            PyValue::Int(i) => *i != 0,
            PyValue::Bool(b) => *b,
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::Container => true,
        }
    }

    /// `int(x)`; None where Python raises.
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => i64::try_from(*i).ok(),
            PyValue::Bool(b) => Some(i64::from(*b)),
            PyValue::Float(f) if f.is_finite() => Some(f.trunc() as i64),
            PyValue::Str(s) => parse_int(s),
            _ => None,
        }
    }

    /// `float(x)`; None where Python raises.
    pub(crate) fn float(&self) -> Option<f64> {
        match self {
            PyValue::Int(i) => Some(*i as f64),
            PyValue::Bool(b) => Some(f64::from(u8::from(*b))),
            PyValue::Float(f) => Some(*f),
            PyValue::Str(s) => parse_float(s),
            PyValue::Container => None,
        }
    }

    /// `str(x)`. A container would give its dbus-python repr (`dbus.Array([...], ...)`); no
    /// client writes one to a string setting on purpose, so it is refused here instead.
    pub(crate) fn str(&self) -> Option<String> {
        match self {
            PyValue::Int(i) => Some(i.to_string()),
            PyValue::Bool(b) => Some(u8::from(*b).to_string()),
            PyValue::Float(f) => Some(float_str(*f)),
            PyValue::Str(s) => Some(s.clone()),
            PyValue::Container => None,
        }
    }
}

/// Python's `int(str)`: surrounding whitespace, a sign, decimal digits with single underscores
/// between them. (Python also takes non-ASCII decimal digits; these are refused here.)
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = without_underscores(digits)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some(if neg { -n } else { n })
}

/// Python's `float(str)`: as Rust's parser (which also takes inf, infinity and nan in any
/// case), after trimming and with single underscores between digits allowed.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    without_underscores(s.trim())?.parse().ok()
}

/// `s` without underscores that stand between two digits; None for any other underscore.
fn without_underscores(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if c == '_' {
            let between_digits =
                i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !between_digits {
                return None;
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Python's `str(float)`: the shortest repr, positional from 1e-4 up to 1e16, with ".0" on
/// whole numbers, scientific with a signed two-digit exponent outside that.
pub(crate) fn float_str(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.2345e-5".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python() {
        for (f, py) in [
            (5.0, "5.0"),
            (0.1, "0.1"),
            (-1.5, "-1.5"),
            (1234.5, "1234.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (0.0, "0.0"),
            (1e300, "1e+300"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float_str(f), py, "{f:e}");
        }
    }

    #[test]
    fn strings_convert_like_python() {
        assert_eq!(parse_int(" 12 "), Some(12));
        assert_eq!(parse_int("+5"), Some(5));
        assert_eq!(parse_int("-0"), Some(0));
        assert_eq!(parse_int("1_000"), Some(1000));
        for bad in ["", "1.0", "0x10", "1__0", "_1", "1_", "abc", "1e3"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
        assert_eq!(parse_float(" 1e3 "), Some(1000.0));
        assert_eq!(parse_float("1_0.5"), Some(10.5));
        assert_eq!(parse_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_float("nan").unwrap().is_nan());
        assert_eq!(parse_float("1,5"), None);
        assert_eq!(PyValue::Float(-2.7).int(), Some(-2));
        assert_eq!(PyValue::Float(f64::NAN).int(), None);
        assert_eq!(PyValue::Bool(true).str().as_deref(), Some("1"));
        assert_eq!(PyValue::Int(7).float(), Some(7.0));
        assert_eq!(PyValue::Container.int(), None);
    }
}
