//! A value as a D-Bus consumer of Victron services sees it: numbers, text, a list of strings, or
//! invalid (any empty array; testkit/README.md). Decoded here from the raw message,
//! independently of the daemon's own value code.

use dbus::arg::{ArgType, RefArg};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Invalid,
    Int(i32),
    Double(f64),
    Text(String),
    TextList(Vec<String>),
}

impl Value {
    pub fn is_valid(&self) -> bool {
        *self != Value::Invalid
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// A number as f64 (integers too); None for anything else.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(f64::from(*i)),
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// The content of a D-Bus argument, unwrapping variants the way consumers do: every
    /// integer type is an integer (wider ones that do not fit i32 become doubles), any empty
    /// array is invalid, a non-empty array is a list of strings. Panics on anything else: a
    /// service under test sent what no consumer reads.
    pub fn from_arg(a: &dyn RefArg) -> Value {
        match a.arg_type() {
            ArgType::Variant => a
                .as_iter()
                .and_then(|mut i| i.next().map(Value::from_arg))
                .unwrap_or(Value::Invalid),
            ArgType::Boolean
            | ArgType::Byte
            | ArgType::Int16
            | ArgType::UInt16
            | ArgType::Int32
            | ArgType::UInt32
            | ArgType::Int64
            | ArgType::UInt64 => {
                let wide = a
                    .as_i64()
                    .map_or(a.as_u64().unwrap_or(0) as f64, |i| i as f64);
                match a.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    Some(i) => Value::Int(i),
                    None => Value::Double(wide),
                }
            }
            ArgType::Double => Value::Double(a.as_f64().unwrap_or(f64::NAN)),
            ArgType::String => Value::Text(a.as_str().unwrap_or_default().to_string()),
            ArgType::Array => {
                let items: Vec<&dyn RefArg> =
                    a.as_iter().map(Iterator::collect).unwrap_or_default();
                if items.is_empty() {
                    Value::Invalid
                } else {
                    Value::TextList(
                        items
                            .iter()
                            .map(|i| match Value::from_arg(*i) {
                                Value::Text(s) => s,
                                other => panic!("a list of {other:?}, not of strings"),
                            })
                            .collect(),
                    )
                }
            }
            t => panic!("unexpected D-Bus type {t:?}"),
        }
    }

    /// The variant content a Victron service sends for this value (invalid: an empty `ai`).
    pub fn to_arg(&self) -> Box<dyn RefArg> {
        match self {
            Value::Invalid => Box::new(Vec::<i32>::new()),
            Value::Int(i) => Box::new(*i),
            Value::Double(d) => Box::new(*d),
            Value::Text(s) => Box::new(s.clone()),
            Value::TextList(l) => Box::new(l.clone()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_wire_form() {
        for v in [
            Value::Invalid,
            Value::Int(-3),
            Value::Double(1.5),
            Value::from("x"),
            Value::TextList(vec!["a".into(), "b".into()]),
        ] {
            assert_eq!(Value::from_arg(&*v.to_arg()), v);
        }
        assert_eq!(Value::from_arg(&true), Value::Int(1));
        assert_eq!(Value::from_arg(&5_000_000_000i64), Value::Double(5e9));
        assert_eq!(Value::from_arg(&Vec::<String>::new()), Value::Invalid);
    }
}
