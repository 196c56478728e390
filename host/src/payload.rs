//! Event payloads between Socket.IO packets and plugins, without re-parsing
//! JSON the host does not need to read.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeTuple, Serializer};
use serde_json::value::RawValue;

use crate::bindings::{Payload, PluginError};

/// An incoming event packet (`["event", arg, ...]` plus attachments) split
/// into its name and its arguments as written, borrowed from the packet: what
/// it would hold is known ([`Self::size`]) before anything is copied.
pub struct EventParts<'a> {
    /// Shared by the call and what it logs.
    pub event: Arc<str>,
    /// The event's name, then its arguments.
    parts: Vec<&'a RawValue>,
    attachments: Option<VecDeque<Bytes>>,
}

pub fn split_event(
    packet: &str,
    attachments: Option<VecDeque<Bytes>>,
) -> Result<EventParts<'_>, serde_json::Error> {
    let parts: Vec<&RawValue> = serde_json::from_str(packet)?;
    let name = parts
        .first()
        .ok_or_else(|| de::Error::custom("an event packet needs an event name"))?;
    // Borrowed from the packet unless the name has escapes.
    let event: Arc<str> = match serde_json::from_str::<&str>(name.get()) {
        Ok(event) => event.into(),
        Err(_) => serde_json::from_str::<String>(name.get())?.into(),
    };
    Ok(EventParts {
        event,
        parts,
        attachments,
    })
}

impl EventParts<'_> {
    fn args(&self) -> impl Iterator<Item = &RawValue> {
        self.parts.iter().skip(1).copied()
    }

    /// What its [`Payload`] counts against `max_payload_bytes` ([`size`]).
    pub fn size(&self) -> usize {
        let attachments = self.attachments.iter().flatten();
        held(
            self.args().map(|arg| arg.get().len()).sum::<usize>()
                + attachments.clone().map(Bytes::len).sum::<usize>(),
            self.parts.len() - 1 + attachments.count(),
        )
    }

    /// Its name, and its arguments and attachments copied out of the packet.
    pub fn into_event(self) -> (Arc<str>, Payload) {
        let args = self.args().map(|arg| arg.get().to_owned()).collect();
        let attachments = self
            .attachments
            .into_iter()
            .flatten()
            .map(|bytes| bytes.to_vec())
            .collect();
        (self.event, Payload { args, attachments })
    }
}

/// What each argument or attachment holds besides its bytes: its record and
/// its allocation's rounding.
pub const PART_RECORD_BYTES: usize = 32;

/// What `bytes` in `parts` arguments and attachments count against
/// `max_payload_bytes`.
fn held(bytes: usize, parts: usize) -> usize {
    bytes + parts * PART_RECORD_BYTES
}

/// Size a payload counts against `max_payload_bytes`: what it holds, so an
/// event of many tiny arguments is bounded as a large one is. Counting their
/// text alone, twenty events of 400,000 one-byte arguments (0.8 MB each)
/// made the node hold 442 MiB while they waited for their plugin.
pub fn size(payload: &Payload) -> usize {
    held(
        payload.args.iter().map(String::len).sum::<usize>()
            + payload.attachments.iter().map(Vec::len).sum::<usize>(),
        payload.args.len() + payload.attachments.len(),
    )
}

/// A payload over `server.max_payload_bytes`, counted as [`size`] counts
/// it; its message follows what carries it (an event, a reply, an emit).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "carries {bytes} bytes, counting {PART_RECORD_BYTES} for each argument; the limit is {limit} (server.max_payload_bytes)"
)]
pub struct TooLarge {
    pub bytes: usize,
    pub limit: usize,
}

/// Whether a payload of `bytes` (as [`size`] counts them) is within `limit`.
pub fn within(bytes: usize, limit: usize) -> Result<(), TooLarge> {
    if bytes > limit {
        return Err(TooLarge { bytes, limit });
    }
    Ok(())
}

/// One argument of JSON text.
pub fn one_argument(json: String) -> Payload {
    Payload {
        args: vec![json],
        attachments: Vec::new(),
    }
}

/// A plugin's payload, checked and ready to serialize into a packet: its
/// arguments, written out as Socket.IO's arguments.
pub enum Outgoing {
    /// Plain JSON, written out as the plugin produced it.
    Json(Vec<Box<RawValue>>),
    /// JSON whose placeholders are replaced by binary attachments.
    WithAttachments(Vec<serde_json::Value>, Vec<Vec<u8>>),
}

impl Outgoing {
    pub fn new(payload: Payload) -> Result<Self, PluginError> {
        let invalid = |index: usize, error: serde_json::Error| {
            PluginError::new(
                "invalid_json",
                format!("argument {index} of the payload is not valid JSON: {error}"),
            )
        };
        let arguments = payload.args.into_iter().enumerate();
        if payload.attachments.is_empty() {
            // Pushed, not collected: collecting in place would reuse the
            // strings' buffer and reallocate it to the smaller boxes' size.
            let mut json = Vec::with_capacity(arguments.len());
            for (index, arg) in arguments {
                json.push(RawValue::from_string(arg).map_err(|error| invalid(index, error))?);
            }
            Ok(Self::Json(json))
        } else {
            let values = arguments
                .map(|(index, arg)| {
                    serde_json::from_str(&arg).map_err(|error| invalid(index, error))
                })
                .collect::<Result<_, _>>()?;
            Ok(Self::WithAttachments(values, payload.attachments))
        }
    }

    /// Bytes it holds: its JSON text and its attachments.
    pub fn size(&self) -> usize {
        match self {
            Self::Json(args) => args.iter().map(|arg| arg.get().len()).sum(),
            Self::WithAttachments(values, attachments) => {
                values
                    .iter()
                    .map(|value| value.to_string().len())
                    .sum::<usize>()
                    + attachments.iter().map(Vec::len).sum::<usize>()
            }
        }
    }

    /// Its arguments as one JSON array, placeholders left in (for storage).
    pub fn json_array(&self) -> String {
        let args: Vec<String> = match self {
            Self::Json(args) => args.iter().map(|arg| arg.get().to_owned()).collect(),
            Self::WithAttachments(values, _) => values.iter().map(ToString::to_string).collect(),
        };
        format!("[{}]", args.join(","))
    }

    /// How many arguments it has.
    fn count(&self) -> usize {
        match self {
            Self::Json(args) => args.len(),
            Self::WithAttachments(values, _) => values.len(),
        }
    }

    /// The JSON text of its argument when it has exactly one.
    pub fn only_argument(&self) -> Option<String> {
        match self {
            Self::Json(args) => match args.as_slice() {
                [arg] => Some(arg.get().to_owned()),
                _ => None,
            },
            Self::WithAttachments(values, _) => match values.as_slice() {
                [value] => Some(value.to_string()),
                _ => None,
            },
        }
    }

    /// Its attachments, indexed by the placeholders' `num`.
    pub fn attachments(&self) -> &[Vec<u8>] {
        match self {
            Self::Json(_) => &[],
            Self::WithAttachments(_, attachments) => attachments,
        }
    }

    pub fn into_attachments(self) -> Vec<Vec<u8>> {
        match self {
            Self::Json(_) => Vec::new(),
            Self::WithAttachments(_, attachments) => attachments,
        }
    }

    /// The payload [`Self::json_array`] and [`Self::attachments`] describe.
    pub fn from_json_array(json: &str, attachments: Vec<Vec<u8>>) -> Option<Self> {
        let args: Vec<&RawValue> = serde_json::from_str(json).ok()?;
        let args = args.into_iter().map(|arg| arg.get().to_owned()).collect();
        Self::new(Payload { args, attachments }).ok()
    }

    /// Its arguments followed by `last`: connection-state recovery's offset.
    pub fn followed_by<'a>(&'a self, last: &'a str) -> impl Serialize + 'a {
        Arguments {
            payload: self,
            last: Some(last),
        }
    }
}

impl Serialize for Outgoing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Arguments {
            payload: self,
            last: None,
        }
        .serialize(serializer)
    }
}

/// A payload's arguments, and maybe one more, as a tuple: Socket.IO's
/// serializer writes a tuple as that many arguments, anything else as one.
struct Arguments<'a> {
    payload: &'a Outgoing,
    last: Option<&'a str>,
}

impl Serialize for Arguments<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let count = self.payload.count() + usize::from(self.last.is_some());
        let mut tuple = serializer.serialize_tuple(count)?;
        match self.payload {
            Outgoing::Json(args) => {
                for arg in args {
                    tuple.serialize_element(arg)?;
                }
            }
            Outgoing::WithAttachments(values, attachments) => {
                for value in values {
                    tuple.serialize_element(&WithPlaceholders { value, attachments })?;
                }
            }
        }
        if let Some(last) = self.last {
            tuple.serialize_element(last)?;
        }
        tuple.end()
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

/// A client's acknowledgement as a [`Payload`]: each argument re-serialized
/// (socketioxide's parser hands binary data over as bytes, not as the text
/// it came in), keys in their order, binary data back to placeholders.
pub struct AckArguments(pub Payload);

impl<'de> serde::Deserialize<'de> for AckArguments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as a tuple: socketioxide's parser gives a tuple every
        // argument, anything else only the first.
        deserializer.deserialize_tuple(usize::MAX, AckVisitor)
    }
}

struct AckVisitor;

impl<'de> Visitor<'de> for AckVisitor {
    type Value = AckArguments;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("the arguments of an acknowledgement")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut attachments = Vec::new();
        let mut args = Vec::new();
        while let Some(value) = seq.next_element_seed(Argument {
            attachments: &mut attachments,
        })? {
            args.push(value.to_string());
        }
        Ok(AckArguments(Payload { args, attachments }))
    }
}

/// One JSON value whose binary data is moved to `attachments`, leaving a
/// placeholder numbered in the order Socket.IO numbers them.
struct Argument<'a> {
    attachments: &'a mut Vec<Vec<u8>>,
}

impl<'de> DeserializeSeed<'de> for Argument<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Argument<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value or binary data")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
        self.visit_byte_buf(bytes.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Self::Value, E> {
        let num = self.attachments.len();
        self.attachments.push(bytes);
        Ok(serde_json::json!({"_placeholder": true, "num": num}))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Argument {
            attachments: &mut *self.attachments,
        })? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Argument {
                attachments: &mut *self.attachments,
            })?;
            fields.insert(key, value);
        }
        Ok(serde_json::Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(args: &[&str]) -> Payload {
        Payload {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            attachments: Vec::new(),
        }
    }

    #[test]
    fn an_acknowledgement_keeps_its_arguments_and_their_key_order() {
        let AckArguments(payload) =
            serde_json::from_str(r#"[1, {"b": [true, null], "a": "x"}, "three"]"#).unwrap();
        assert_eq!(
            payload.args,
            ["1", r#"{"b":[true,null],"a":"x"}"#, r#""three""#]
        );
        assert!(payload.attachments.is_empty());
        let AckArguments(payload) = serde_json::from_str("[]").unwrap();
        assert!(payload.args.is_empty());
    }

    #[test]
    fn a_payload_s_size_counts_each_argument_s_record() {
        assert_eq!(size(&payload(&[])), 0);
        assert_eq!(size(&payload(&["1", "22", ""])), 3 + 3 * PART_RECORD_BYTES);
        let mut with_attachment = payload(&["{}"]);
        with_attachment.attachments.push(vec![0; 10]);
        assert_eq!(size(&with_attachment), 12 + 2 * PART_RECORD_BYTES);
        // Known before the arguments are copied out of the packet, the same.
        let attachments = Some([Bytes::from(vec![0; 10])].into());
        let parts = split_event(r#"["e",1,"22",{}]"#, attachments).unwrap();
        let counted = parts.size();
        assert_eq!(counted, 1 + 4 + 2 + 10 + 4 * PART_RECORD_BYTES);
        assert_eq!(counted, size(&parts.into_event().1));
    }

    #[test]
    fn a_payload_at_the_limit_is_within_it_and_one_byte_more_says_how_it_counts() {
        assert!(within(100, 100).is_ok());
        let too_large = within(101, 100).unwrap_err();
        assert_eq!(
            too_large.to_string(),
            "carries 101 bytes, counting 32 for each argument; the limit is 100 (server.max_payload_bytes)"
        );
    }

    fn decode_event(packet: &str) -> Result<(Arc<str>, Payload), serde_json::Error> {
        split_event(packet, None).map(EventParts::into_event)
    }

    #[test]
    fn decodes_zero_one_and_several_arguments_as_written() {
        let (event, payload) = decode_event(r#"["ping"]"#).unwrap();
        assert_eq!(&*event, "ping");
        assert!(payload.args.is_empty());
        let (_, payload) = decode_event(r#"["join", {"room": "a b", "at": 1.50}]"#).unwrap();
        assert_eq!(payload.args, [r#"{"room": "a b", "at": 1.50}"#]);
        let (_, payload) = decode_event(r#"["pair",1,"two",[3]]"#).unwrap();
        assert_eq!(payload.args, ["1", r#""two""#, "[3]"]);
        // A name with escapes is decoded, not borrowed as written.
        let (event, _) = decode_event(r#"["sa\u0079 \"hi\""]"#).unwrap();
        assert_eq!(&*event, r#"say "hi""#);
        assert!(decode_event("[]").is_err());
        assert!(decode_event(r#"[1, 2]"#).is_err());
    }

    #[test]
    fn outgoing_arguments_are_validated_and_kept_verbatim() {
        let outgoing = Outgoing::new(payload(&[r#"{"b": 1, "a": 2}"#, "3"])).unwrap();
        // serde_json writes a tuple as an array; Socket.IO's serializer
        // writes the same calls as that many arguments.
        assert_eq!(
            serde_json::to_string(&outgoing).unwrap(),
            r#"[{"b": 1, "a": 2},3]"#
        );
        assert_eq!(
            serde_json::to_string(&outgoing.followed_by("17")).unwrap(),
            r#"[{"b": 1, "a": 2},3,"17"]"#
        );
        let error = Outgoing::new(payload(&["1", "{oops"])).err().unwrap();
        assert_eq!(error.code, "invalid_json");
        assert!(
            error.message.starts_with("argument 1 "),
            "{}",
            error.message
        );
    }

    #[test]
    fn placeholders_become_bytes_and_keys_keep_their_order() {
        let outgoing = Outgoing::new(Payload {
            args: vec![r#"{"z":{"_placeholder":true,"num":0},"n":[1]}"#.to_owned()],
            attachments: vec![vec![7, 8]],
        })
        .unwrap();
        // serde_json writes bytes as an array of numbers; Socket.IO's
        // serializer turns the same call into a binary attachment.
        assert_eq!(
            serde_json::to_string(&outgoing).unwrap(),
            r#"[{"z":[7,8],"n":[1]}]"#
        );
    }

    #[test]
    fn a_payload_stored_as_one_array_comes_back_the_same() {
        for outgoing in [
            Outgoing::new(payload(&[])).unwrap(),
            Outgoing::new(payload(&["1.0", r#"{"b":1,"a":[]}"#])).unwrap(),
            Outgoing::new(Payload {
                args: vec![
                    r#"{"_placeholder":true,"num":0}"#.to_owned(),
                    "2".to_owned(),
                ],
                attachments: vec![vec![1, 2, 3]],
            })
            .unwrap(),
        ] {
            let stored = outgoing.json_array();
            let back = Outgoing::from_json_array(&stored, outgoing.attachments().to_vec()).unwrap();
            assert_eq!(back.json_array(), stored);
            assert_eq!(back.attachments(), outgoing.attachments());
        }
    }
}
