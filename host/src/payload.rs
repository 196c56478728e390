//! Event payloads between Socket.IO packets and plugins, without re-parsing
//! JSON the host does not need to read.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

use crate::bindings::{Payload, PluginError};

/// Splits an incoming event packet (`["event", arg, ...]` plus attachments)
/// into its name and a [`Payload`]: one argument as is, several as an array.
pub fn decode_event(
    packet: &str,
    attachments: Option<VecDeque<Bytes>>,
) -> Result<(String, Payload), serde_json::Error> {
    let parts: Vec<&RawValue> = serde_json::from_str(packet)?;
    let (event, args) = parts
        .split_first()
        .ok_or_else(|| serde::de::Error::custom("an event packet needs an event name"))?;
    let event: String = serde_json::from_str(event.get())?;
    let json = match args {
        [] => "null".to_owned(),
        [single] => single.get().to_owned(),
        several => {
            let mut json = String::with_capacity(packet.len());
            json.push('[');
            for (index, arg) in several.iter().enumerate() {
                if index > 0 {
                    json.push(',');
                }
                json.push_str(arg.get());
            }
            json.push(']');
            json
        }
    };
    let attachments = attachments
        .map(|attachments| {
            attachments
                .into_iter()
                .map(|bytes| bytes.to_vec())
                .collect()
        })
        .unwrap_or_default();
    Ok((event, Payload { json, attachments }))
}

/// Size a payload counts against `max_payload_bytes`.
pub fn size(payload: &Payload) -> usize {
    payload.json.len() + payload.attachments.iter().map(Vec::len).sum::<usize>()
}

/// A plugin's payload, checked and ready to serialize into a packet.
pub enum Outgoing {
    /// Plain JSON, written out as the plugin produced it.
    Json(Box<RawValue>),
    /// JSON whose placeholders are replaced by binary attachments.
    WithAttachments(serde_json::Value, Vec<Vec<u8>>),
}

impl Outgoing {
    pub fn new(payload: Payload) -> Result<Self, PluginError> {
        let invalid = |error: serde_json::Error| {
            PluginError::new(
                "invalid_json",
                format!("the payload is not valid JSON: {error}"),
            )
        };
        if payload.attachments.is_empty() {
            RawValue::from_string(payload.json)
                .map(Self::Json)
                .map_err(invalid)
        } else {
            let value = serde_json::from_str(&payload.json).map_err(invalid)?;
            Ok(Self::WithAttachments(value, payload.attachments))
        }
    }
}

impl Outgoing {
    /// Bytes it holds: its JSON text and its attachments.
    pub fn size(&self) -> usize {
        match self {
            Self::Json(raw) => raw.get().len(),
            Self::WithAttachments(value, attachments) => {
                value.to_string().len() + attachments.iter().map(Vec::len).sum::<usize>()
            }
        }
    }
}

impl Serialize for Outgoing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(raw) => raw.serialize(serializer),
            Self::WithAttachments(value, attachments) => {
                WithPlaceholders { value, attachments }.serialize(serializer)
            }
        }
    }
}

/// Serializes a JSON value, writing `{"_placeholder":true,"num":N}` objects as
/// attachment N's bytes so Socket.IO sends them as binary.
struct WithPlaceholders<'a> {
    value: &'a serde_json::Value,
    attachments: &'a [Vec<u8>],
}

impl WithPlaceholders<'_> {
    fn nested<'b>(&self, value: &'b serde_json::Value) -> WithPlaceholders<'b>
    where
        Self: 'b,
    {
        WithPlaceholders {
            value,
            attachments: self.attachments,
        }
    }

    fn attachment(&self) -> Option<&[u8]> {
        let object = self.value.as_object()?;
        if object.len() != 2 || object.get("_placeholder") != Some(&serde_json::Value::Bool(true)) {
            return None;
        }
        let index = usize::try_from(object.get("num")?.as_u64()?).ok()?;
        self.attachments.get(index).map(Vec::as_slice)
    }
}

impl Serialize for WithPlaceholders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(bytes) = self.attachment() {
            return serializer.serialize_bytes(bytes);
        }
        match self.value {
            serde_json::Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&self.nested(item))?;
                }
                seq.end()
            }
            serde_json::Value::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, &self.nested(value))?;
                }
                map.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_zero_one_and_several_arguments() {
        let (event, payload) = decode_event(r#"["ping"]"#, None).unwrap();
        assert_eq!((event.as_str(), payload.json.as_str()), ("ping", "null"));
        let (_, payload) = decode_event(r#"["join", {"room": "a b"}]"#, None).unwrap();
        assert_eq!(payload.json, r#"{"room": "a b"}"#);
        let (_, payload) = decode_event(r#"["pair",1,"two"]"#, None).unwrap();
        assert_eq!(payload.json, r#"[1,"two"]"#);
        assert!(decode_event("[]", None).is_err());
        assert!(decode_event(r#"[1, 2]"#, None).is_err());
    }

    #[test]
    fn outgoing_json_is_validated_and_kept_verbatim() {
        let payload = |json: &str| Payload {
            json: json.to_owned(),
            attachments: Vec::new(),
        };
        let outgoing = Outgoing::new(payload(r#"{"a": 1}"#)).unwrap();
        assert_eq!(serde_json::to_string(&outgoing).unwrap(), r#"{"a": 1}"#);
        let error = Outgoing::new(payload("{oops")).err().unwrap();
        assert_eq!(error.code, "invalid_json");
    }

    #[test]
    fn placeholders_become_bytes() {
        let outgoing = Outgoing::new(Payload {
            json: r#"{"file":{"_placeholder":true,"num":0},"n":[1]}"#.to_owned(),
            attachments: vec![vec![7, 8]],
        })
        .unwrap();
        // serde_json writes bytes as an array of numbers; Socket.IO's
        // serializer turns the same call into a binary attachment.
        assert_eq!(
            serde_json::to_string(&outgoing).unwrap(),
            r#"{"file":[7,8],"n":[1]}"#
        );
    }
}
