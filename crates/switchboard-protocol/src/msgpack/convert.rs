//! Converting argument values between the JSON and MessagePack models.
//!
//! A message published through the REST API (JSON) must reach MessagePack
//! clients, and a MessagePack client's invocation may be forwarded as JSON.
//! JSON is the narrower model, so the msgpack → JSON direction has to choose:
//!
//! * `bin` → a base64 string, which is how .NET's System.Text.Json writes a
//!   `byte[]`, so a JSON consumer sees what an ASP.NET server would send it.
//! * the timestamp extension (type −1, .NET `DateTime`) → an ISO-8601 UTC string,
//!   again matching System.Text.Json; other extensions have no JSON form → `null`.
//! * NaN and infinities (not representable in JSON) → `null`.
//! * non-string map keys → their JSON text (`1` → `"1"`), invalid UTF-8 → lossy.

use base64::Engine as _;
use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

/// MessagePack extension type reserved for timestamps.
const TIMESTAMP_EXT: i8 = -1;

/// Converts a JSON value to MessagePack; integers keep their exact value.
pub fn json_to_msgpack(value: &Json) -> Value {
    match value {
        Json::Null => Value::Nil,
        Json::Bool(flag) => Value::Boolean(*flag),
        Json::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                Value::from(unsigned)
            } else if let Some(signed) = number.as_i64() {
                Value::from(signed)
            } else {
                Value::F64(number.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_msgpack).collect()),
        Json::Object(entries) => {
            Value::Map(entries.iter().map(|(key, value)| (Value::from(key.as_str()), json_to_msgpack(value))).collect())
        }
    }
}

/// Converts a MessagePack value to JSON, following the choices in the module docs.
pub fn msgpack_to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(flag) => Json::Bool(*flag),
        Value::Integer(integer) => match (integer.as_u64(), integer.as_i64()) {
            (Some(unsigned), _) => Json::from(unsigned),
            (None, Some(signed)) => Json::from(signed),
            (None, None) => Json::Null,
        },
        Value::F32(number) => float(f64::from(*number)),
        Value::F64(number) => float(*number),
        Value::String(text) => Json::String(match text.as_str() {
            Some(valid) => valid.to_owned(),
            None => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        }),
        Value::Binary(bytes) => Json::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Value::Array(items) => Json::Array(items.iter().map(msgpack_to_json).collect()),
        Value::Map(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                object.insert(map_key(key), msgpack_to_json(value));
            }
            Json::Object(object)
        }
        Value::Ext(TIMESTAMP_EXT, bytes) => timestamp(bytes).map_or(Json::Null, Json::String),
        Value::Ext(..) => Json::Null,
    }
}

fn float(number: f64) -> Json {
    Number::from_f64(number).map_or(Json::Null, Json::Number)
}

fn map_key(key: &Value) -> String {
    match msgpack_to_json(key) {
        Json::String(text) => text,
        other => other.to_string(),
    }
}

/// Formats a msgpack timestamp (4, 8 or 12 byte form) as `YYYY-MM-DDTHH:MM:SS[.f]Z`.
/// Returns `None` for malformed bodies and years outside 1..=9999 (.NET's range).
fn timestamp(bytes: &[u8]) -> Option<String> {
    let (seconds, nanos): (i64, u32) = match bytes.len() {
        4 => (i64::from(u32::from_be_bytes(bytes.try_into().ok()?)), 0),
        8 => {
            let packed = u64::from_be_bytes(bytes.try_into().ok()?);
            ((packed & 0x3_ffff_ffff) as i64, (packed >> 34) as u32)
        }
        12 => (i64::from_be_bytes(bytes[4..].try_into().ok()?), u32::from_be_bytes(bytes[..4].try_into().ok()?)),
        _ => return None,
    };
    if nanos >= 1_000_000_000 {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        return None;
    }
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// using the era-based algorithm (400-year cycles of 146 097 days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_values_survive_a_round_trip() {
        let original = json!({"a": [1, -2, 18446744073709551615u64, 1.5, null, true, "x"], "b": {}});
        assert_eq!(msgpack_to_json(&json_to_msgpack(&original)), original);
    }

    #[test]
    fn msgpack_only_values_get_documented_json_forms() {
        assert_eq!(msgpack_to_json(&Value::Binary(vec![1, 2, 3])), json!("AQID"));
        assert_eq!(msgpack_to_json(&Value::F64(f64::NAN)), Json::Null);
        assert_eq!(msgpack_to_json(&Value::Ext(5, vec![1])), Json::Null);
        let map = Value::Map(vec![(Value::from(1), Value::from("one"))]);
        assert_eq!(msgpack_to_json(&map), json!({"1": "one"}));
    }

    #[test]
    fn timestamps_become_iso_strings() {
        let ts32 = Value::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec());
        assert_eq!(msgpack_to_json(&ts32), json!("2023-11-14T22:13:20Z"));
        let packed: u64 = (500_000_000u64 << 34) | 86_400;
        let ts64 = Value::Ext(-1, packed.to_be_bytes().to_vec());
        assert_eq!(msgpack_to_json(&ts64), json!("1970-01-02T00:00:00.5Z"));
        let mut ts96 = 1u32.to_be_bytes().to_vec();
        ts96.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(msgpack_to_json(&Value::Ext(-1, ts96)), json!("1969-12-31T23:59:59.000000001Z"));
        assert_eq!(msgpack_to_json(&Value::Ext(-1, vec![1, 2])), Json::Null);
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-719_162), (1, 1, 1));
    }
}
