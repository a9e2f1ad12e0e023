//! Item values, their wire encoding (a variant per value), text rendering and write coercion.

use dbus::Signature;
use dbus::arg::{ArgType, Iter, IterAppend, Variant};

/// A published or received value. `Invalid` is the Victron "no value" (an empty `ai` on the wire).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Invalid,
    Int(i32),
    Double(f64),
    Text(String),
    TextList(Vec<String>),
}

impl Value {
    /// Non-finite doubles and empty lists cannot be told apart from "invalid" by consumers, so they
    /// are stored as `Invalid` (spec §1.4, §10.5).
    pub fn normalized(self) -> Value {
        match self {
            Value::Double(d) if !d.is_finite() => Value::Invalid,
            Value::TextList(l) if l.is_empty() => Value::Invalid,
            v => v,
        }
    }

    pub fn is_valid(&self) -> bool {
        !matches!(self, Value::Invalid)
    }

    /// Numeric view: ints, doubles and numeric strings (writers send any of them, §1.3).
    pub fn as_f64(&self) -> Option<f64> {
        let d = match self {
            Value::Int(i) => f64::from(*i),
            Value::Double(d) => *d,
            Value::Text(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        d.is_finite().then_some(d)
    }

    /// Integral view: refuses fractional numbers rather than silently truncating them.
    pub fn as_i32(&self) -> Option<i32> {
        if let Value::Int(i) = self {
            return Some(*i);
        }
        let d = self.as_f64()?;
        if d.fract() != 0.0 || d < f64::from(i32::MIN) || d > f64::from(i32::MAX) {
            return None;
        }
        Some(d as i32)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v).normalized()
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Invalid, Into::into)
    }
}

/// How GetText renders a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    /// The value as is (lists joined with ", ").
    Plain,
    /// A number with a fixed number of decimals and a unit suffix, e.g. `"1234 W"`, `"0.52 kWh"`.
    Unit { unit: &'static str, decimals: u8 },
    /// An integer in hex (`/ProductId` convention): `"0xB023"`.
    Hex,
    /// An integer code with a text per known value (`/StatusCode` "Running"); other values show
    /// as their number.
    Texts(&'static [(i32, &'static str)]),
}

impl Format {
    pub const fn unit(unit: &'static str, decimals: u8) -> Format {
        Format::Unit { unit, decimals }
    }
}

/// GetText of an invalid value, as velib's `VeDbusItemExport.GetText` answers
/// (docs/reference/victron.md §1).
pub(crate) const INVALID_TEXT: &str = "---";

/// GetText of a value: velib's `---` when invalid, else the value in its format.
pub(crate) fn format_text(value: &Value, format: Format) -> String {
    let text = match (value, format) {
        (Value::Invalid, _) => INVALID_TEXT.to_string(),
        (Value::Int(i), Format::Hex) => format!("0x{:X}", *i as u32),
        (Value::Int(i), Format::Texts(texts)) => texts
            .iter()
            .find(|(code, _)| code == i)
            .map_or_else(|| i.to_string(), |(_, t)| t.to_string()),
        (Value::Int(i), Format::Unit { unit, decimals: 0 }) => format!("{i} {unit}"),
        (Value::Int(i), Format::Unit { unit, decimals }) => {
            format!("{:.*} {unit}", usize::from(decimals), f64::from(*i))
        }
        (Value::Double(d), Format::Unit { unit, decimals }) => {
            format!("{:.*} {unit}", usize::from(decimals), d)
        }
        (Value::Int(i), Format::Plain) => i.to_string(),
        (Value::Double(d), _) => d.to_string(),
        (Value::Text(s), _) => s.clone(),
        (Value::TextList(l), _) => l.join(", "),
    };
    // A unitless number with fixed decimals (power factor) has no unit to separate.
    match format {
        Format::Unit { unit: "", .. } => text.trim_end().to_string(),
        _ => text,
    }
}

/// Whether and how a path accepts SetValue. Validation happens synchronously in SetValue.
#[derive(Clone, Debug, PartialEq)]
pub enum Writable {
    No,
    Int { min: i32, max: i32 },
    Double { min: f64, max: f64 },
    Text,
    OneOf(Vec<String>),
}

/// Why a write was refused (the SetValue reply is non-zero either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    ReadOnly,
    WrongType,
    OutOfRange,
}

impl Writable {
    /// The value to store for a write request, coerced to the path's type (int, double and numeric
    /// strings are all accepted for numbers, §1.3).
    pub fn coerce(&self, v: &Value) -> Result<Value, Refusal> {
        match self {
            Writable::No => Err(Refusal::ReadOnly),
            Writable::Int { min, max } => {
                let i = v.as_i32().ok_or(Refusal::WrongType)?;
                if i < *min || i > *max {
                    return Err(Refusal::OutOfRange);
                }
                Ok(Value::Int(i))
            }
            Writable::Double { min, max } => {
                let d = v.as_f64().ok_or(Refusal::WrongType)?;
                if d < *min || d > *max {
                    return Err(Refusal::OutOfRange);
                }
                Ok(Value::Double(d))
            }
            Writable::Text => match v {
                Value::Text(s) => Ok(Value::Text(s.clone())),
                // dbus-spy sends an int or double when the typed text looks like a number.
                Value::Int(i) => Ok(Value::Text(i.to_string())),
                Value::Double(d) => Ok(Value::Text(d.to_string())),
                _ => Err(Refusal::WrongType),
            },
            Writable::OneOf(allowed) => {
                let s = v.as_str().ok_or(Refusal::WrongType)?;
                if allowed.iter().any(|a| a == s) {
                    Ok(Value::Text(s.to_string()))
                } else {
                    Err(Refusal::OutOfRange)
                }
            }
        }
    }
}

/// Signatures built from Rust types: infallible, unlike parsing strings.
fn sig(s: &'static str) -> Signature<'static> {
    match s {
        "ai" => Signature::make::<Vec<i32>>(),
        "i" => Signature::make::<i32>(),
        "d" => Signature::make::<f64>(),
        "as" => Signature::make::<Vec<String>>(),
        "v" => Signature::make::<Variant<u8>>(),
        _ => Signature::make::<&str>(),
    }
}

/// Appends `value` as a variant (never double-wrapped, §10.7).
pub(crate) fn append_variant(ia: &mut IterAppend, value: &Value) {
    match value {
        Value::Invalid => ia.append_variant(&sig("ai"), |s| {
            s.append_array(&sig("i"), |_| {});
        }),
        Value::Int(i) => ia.append_variant(&sig("i"), |s| s.append(*i)),
        Value::Double(d) => ia.append_variant(&sig("d"), |s| s.append(*d)),
        Value::Text(t) => ia.append_variant(&sig("s"), |s| s.append(t.as_str())),
        Value::TextList(l) => ia.append_variant(&sig("as"), |s| {
            s.append_array(&sig("s"), |a| {
                for t in l {
                    a.append(t.as_str());
                }
            })
        }),
    }
}

/// Appends a string wrapped in a variant (the `Text` entry of GetItems and the signals).
pub(crate) fn append_text_variant(ia: &mut IterAppend, text: &str) {
    ia.append_variant(&sig("s"), |s| s.append(text));
}

/// Appends `a{sv}` of `{"Value": v, "Text": v(s)}`.
pub(crate) fn append_value_text_dict(ia: &mut IterAppend, value: &Value, text: &str) {
    ia.append_dict(&sig("s"), &sig("v"), |d| {
        d.append_dict_entry(|e| {
            e.append("Value");
            append_variant(e, value);
        });
        d.append_dict_entry(|e| {
            e.append("Text");
            append_text_variant(e, text);
        });
    });
}

/// Reads the value of the variant at the iterator position. A basic value not wrapped in a
/// variant is accepted too (dbus-send users write `int32:5`). `None` for anything that is not a
/// BusItem value (dicts, structs, nested containers).
pub(crate) fn read_value(iter: &mut Iter) -> Option<Value> {
    match iter.arg_type() {
        ArgType::Variant => {
            let mut inner = iter.recurse(ArgType::Variant)?;
            read_plain(&mut inner)
        }
        _ => read_plain(iter),
    }
}

fn read_plain(iter: &mut Iter) -> Option<Value> {
    let v = match iter.arg_type() {
        ArgType::Int32 => Value::Int(iter.get::<i32>()?),
        ArgType::Double => Value::Double(iter.get::<f64>()?),
        ArgType::String => Value::Text(iter.get::<String>()?),
        ArgType::Boolean => Value::Int(i32::from(iter.get::<bool>()?)),
        ArgType::Byte => Value::Int(i32::from(iter.get::<u8>()?)),
        ArgType::Int16 => Value::Int(i32::from(iter.get::<i16>()?)),
        ArgType::UInt16 => Value::Int(i32::from(iter.get::<u16>()?)),
        ArgType::UInt32 => int_or_double(i64::from(iter.get::<u32>()?)),
        ArgType::Int64 => int_or_double(iter.get::<i64>()?),
        ArgType::UInt64 => {
            let u = iter.get::<u64>()?;
            i64::try_from(u).map_or(Value::Double(u as f64), int_or_double)
        }
        ArgType::Variant => return read_value(iter),
        ArgType::Array => return read_array(iter),
        _ => return None,
    };
    Some(v.normalized())
}

fn int_or_double(i: i64) -> Value {
    i32::try_from(i).map_or(Value::Double(i as f64), Value::Int)
}

/// Any empty array is invalid (§1.4); string arrays (`as`, or velib's `av` of strings) are lists.
fn read_array(iter: &mut Iter) -> Option<Value> {
    let mut items = iter.recurse(ArgType::Array)?;
    let mut list = Vec::new();
    loop {
        match items.arg_type() {
            ArgType::Invalid => break,
            ArgType::String => list.push(items.get::<String>()?),
            ArgType::Variant => match items
                .recurse(ArgType::Variant)
                .as_mut()
                .and_then(read_plain)
            {
                Some(Value::Text(s)) => list.push(s),
                _ => return None,
            },
            _ => return None,
        }
        if !items.next() {
            break;
        }
    }
    Some(Value::TextList(list).normalized())
}

/// Reads an `a{sv}` at the iterator position into (key, value) pairs; entries whose value is not
/// a BusItem value are skipped. `None` if it is not a dict.
pub(crate) fn read_dict_sv(iter: &mut Iter) -> Option<Vec<(String, Value)>> {
    let mut entries = iter.recurse(ArgType::Array)?;
    let mut out = Vec::new();
    while entries.arg_type() == ArgType::DictEntry {
        if let Some(mut e) = entries.recurse(ArgType::DictEntry) {
            let key = e.get::<String>();
            if let (Some(key), true) = (key, e.next())
                && let Some(v) = read_value(&mut e)
            {
                out.push((key, v));
            }
        }
        if !entries.next() {
            break;
        }
    }
    Some(out)
}

/// Reads an `a{sa{sv}}` (GetItems reply, ItemsChanged) into (path, Value entry) pairs.
pub(crate) fn read_items(iter: &mut Iter) -> Option<Vec<(String, Value)>> {
    let mut entries = iter.recurse(ArgType::Array)?;
    let mut out = Vec::new();
    while entries.arg_type() == ArgType::DictEntry {
        if let Some(mut e) = entries.recurse(ArgType::DictEntry) {
            let key = e.get::<String>();
            if let (Some(key), true) = (key, e.next()) {
                let value = read_dict_sv(&mut e)
                    .and_then(|d| d.into_iter().find(|(k, _)| k == "Value").map(|(_, v)| v));
                if let Some(v) = value {
                    out.push((key, v));
                }
            }
        }
        if !entries.next() {
            break;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus::Message;

    fn roundtrip(v: &Value) -> Option<Value> {
        let mut m = Message::new_signal("/", "a.b", "C").unwrap();
        append_variant(&mut IterAppend::new(&mut m), v);
        read_value(&mut m.iter_init())
    }

    #[test]
    fn values_survive_the_wire() {
        for v in [
            Value::Int(-5),
            Value::Double(1.25),
            Value::Text("x y".into()),
            Value::TextList(vec!["grid".into(), "pvinverter".into()]),
            Value::Invalid,
        ] {
            assert_eq!(roundtrip(&v), Some(v.clone()));
        }
    }

    #[test]
    fn invalid_is_an_empty_int_array() {
        let mut m = Message::new_signal("/", "a.b", "C").unwrap();
        append_variant(&mut IterAppend::new(&mut m), &Value::Invalid);
        let mut it = m.iter_init();
        let mut inner = it.recurse(ArgType::Variant).unwrap();
        assert_eq!(inner.signature().to_string(), "ai");
    }

    #[test]
    fn non_finite_and_empty_lists_are_invalid() {
        assert_eq!(Value::from(f64::NAN), Value::Invalid);
        assert_eq!(Value::Double(f64::INFINITY).normalized(), Value::Invalid);
        assert_eq!(Value::TextList(vec![]).normalized(), Value::Invalid);
        assert_eq!(Value::from(None::<i32>), Value::Invalid);
    }

    #[test]
    fn text_rendering() {
        assert_eq!(
            format_text(&Value::Double(1234.4), Format::unit("W", 0)),
            "1234 W"
        );
        assert_eq!(
            format_text(&Value::Double(0.5), Format::unit("kWh", 2)),
            "0.50 kWh"
        );
        assert_eq!(format_text(&Value::Int(3), Format::unit("%", 0)), "3 %");
        assert_eq!(format_text(&Value::Int(0xB023), Format::Hex), "0xB023");
        assert_eq!(format_text(&Value::Invalid, Format::unit("W", 0)), "---");
        assert_eq!(format_text(&Value::Invalid, Format::Plain), "---");
        const STATES: &[(i32, &str)] = &[(7, "Running")];
        assert_eq!(
            format_text(&Value::Int(7), Format::Texts(STATES)),
            "Running"
        );
        assert_eq!(format_text(&Value::Int(3), Format::Texts(STATES)), "3");
        assert_eq!(format_text(&Value::Int(7), Format::Plain), "7");
        assert_eq!(format_text(&Value::Text("a".into()), Format::Plain), "a");
    }

    #[test]
    fn int_paths_accept_ints_integral_doubles_and_numeric_strings() {
        let w = Writable::Int { min: 0, max: 2 };
        assert_eq!(w.coerce(&Value::Int(1)), Ok(Value::Int(1)));
        assert_eq!(w.coerce(&Value::Double(2.0)), Ok(Value::Int(2)));
        assert_eq!(w.coerce(&Value::Text(" 1 ".into())), Ok(Value::Int(1)));
        assert_eq!(w.coerce(&Value::Double(1.5)), Err(Refusal::WrongType));
        assert_eq!(w.coerce(&Value::Text("x".into())), Err(Refusal::WrongType));
        assert_eq!(w.coerce(&Value::Int(3)), Err(Refusal::OutOfRange));
        assert_eq!(w.coerce(&Value::Invalid), Err(Refusal::WrongType));
    }

    #[test]
    fn double_paths_accept_any_finite_number() {
        let w = Writable::Double {
            min: 0.0,
            max: 3000.0,
        };
        assert_eq!(w.coerce(&Value::Int(1500)), Ok(Value::Double(1500.0)));
        assert_eq!(
            w.coerce(&Value::Text("12.5".into())),
            Ok(Value::Double(12.5))
        );
        assert_eq!(
            w.coerce(&Value::Text("NaN".into())),
            Err(Refusal::WrongType)
        );
        assert_eq!(w.coerce(&Value::Double(-1.0)), Err(Refusal::OutOfRange));
    }

    #[test]
    fn text_and_choice_paths() {
        assert_eq!(
            Writable::Text.coerce(&Value::Int(12)),
            Ok(Value::Text("12".into()))
        );
        assert_eq!(Writable::No.coerce(&Value::Int(1)), Err(Refusal::ReadOnly));
        let roles = Writable::OneOf(vec!["grid".into(), "pvinverter".into()]);
        assert_eq!(
            roles.coerce(&Value::Text("grid".into())),
            Ok(Value::Text("grid".into()))
        );
        assert_eq!(
            roles.coerce(&Value::Text("genset".into())),
            Err(Refusal::OutOfRange)
        );
    }

    #[test]
    fn items_dict_reading_skips_foreign_shapes() {
        use dbus::arg::PropMap;
        use std::collections::HashMap;
        let mut good = PropMap::new();
        good.insert("Value".into(), Variant(Box::new(5i32)));
        good.insert("Text".into(), Variant(Box::new("5".to_string())));
        let mut odd = PropMap::new();
        odd.insert("Text".into(), Variant(Box::new("no value".to_string())));
        let items: HashMap<String, PropMap> =
            HashMap::from([("/A".into(), good), ("/B".into(), odd)]);
        let m = Message::new_signal("/", "a.b", "C").unwrap().append1(items);
        assert_eq!(
            read_items(&mut m.iter_init()),
            Some(vec![("/A".to_string(), Value::Int(5))])
        );
        let not_a_dict = Message::new_signal("/", "a.b", "C").unwrap().append1(3i32);
        assert_eq!(read_items(&mut not_a_dict.iter_init()), None);
        assert_eq!(read_dict_sv(&mut not_a_dict.iter_init()), None);
    }
}

#[cfg(test)]
mod unitless_tests {
    use super::*;

    #[test]
    fn unitless_numbers_have_no_trailing_space() {
        assert_eq!(
            format_text(&Value::Double(0.97), Format::unit("", 2)),
            "0.97"
        );
        assert_eq!(
            format_text(&Value::Double(0.5), Format::unit("W", 0)),
            "0 W"
        );
    }
}
