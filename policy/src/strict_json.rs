//! JSON objects parsed strictly: the top level must be an object and no member name may repeat.
//!
//! serde_json keeps the last of duplicate members silently; for claims that is an attack surface
//! (two `sub` members read differently by two parsers), so duplicates are refused here.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON, or not an object at the top level.
    NotAnObject,
    /// A member name appears twice.
    DuplicateMember,
}

struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object without duplicate members")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom("duplicate member"));
                    }
                    map.insert(key, value);
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Parses `bytes` as a JSON object whose top-level member names are unique.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, StrictJsonError> {
    match serde_json::from_slice::<StrictObject>(bytes) {
        Ok(StrictObject(map)) => Ok(map),
        Err(e) if e.to_string().starts_with("duplicate member") => {
            Err(StrictJsonError::DuplicateMember)
        }
        Err(_) => Err(StrictJsonError::NotAnObject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_member_is_refused() {
        assert_eq!(
            parse_object(br#"{"sub":"a","sub":"b"}"#),
            Err(StrictJsonError::DuplicateMember)
        );
    }

    #[test]
    fn arrays_and_garbage_are_not_objects() {
        assert_eq!(parse_object(b"[1]"), Err(StrictJsonError::NotAnObject));
        assert_eq!(parse_object(b"nope"), Err(StrictJsonError::NotAnObject));
        assert_eq!(parse_object(b"{} x"), Err(StrictJsonError::NotAnObject));
    }

    #[test]
    fn nested_duplicates_do_not_confuse_top_level() {
        let map = parse_object(br#"{"a":{"x":1},"b":2}"#).expect("valid");
        assert_eq!(map.len(), 2);
    }
}
