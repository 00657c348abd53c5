//! One row read into its dataset's field slots: straight from the page's JSON text (as the
//! client hands it over) or from a parsed [`Value`]. Names are looked up in an index built once
//! per [`Normaliser`], text is borrowed from the page where it has no escapes, and only the
//! fields the dataset does not declare become JSON values.
//!
//! Both inputs give the same row, field errors in the same order: a JSON object's fields are
//! taken as a [`serde_json::Map`] holds them (a repeated name keeps its last value; names in
//! sorted order decide which of a field's two names came first).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{FieldError, cut, rule};
use crate::dataset::Dataset;

/// A dataset's fields indexed by the names an export gives them; build one and normalise many
/// rows with it ([`Normaliser::row`], [`Normaliser::row_json`]).
#[derive(Debug)]
pub struct Normaliser<'d> {
    pub(super) dataset: &'d Dataset,
    /// Exported name (canonical or renamed) → the slot of its field in `dataset.fields`.
    by_name: FxHashMap<&'d str, usize>,
    pub(super) required: Vec<bool>,
    pub(super) key_slots: Vec<Option<usize>>,
    pub(super) partition_slot: Option<usize>,
    pub(super) cursor_slot: Option<usize>,
}

impl<'d> Normaliser<'d> {
    pub fn new(dataset: &'d Dataset) -> Self {
        let slot = |name: &str| dataset.fields.iter().position(|f| f.name == name);
        let mut by_name: FxHashMap<&str, usize> = FxHashMap::default();
        for (i, field) in dataset.fields.iter().enumerate() {
            // A field declared twice (refused by `Dataset::check`) keeps its first slot.
            by_name.entry(field.name.as_str()).or_insert(i);
        }
        // The first rename of a name wins; one onto an undeclared field leaves the name unknown.
        for rename in dataset.renames.iter().rev() {
            match slot(&rename.to) {
                Some(i) => by_name.insert(rename.from.as_str(), i),
                None => by_name.remove(rename.from.as_str()),
            };
        }
        Self {
            dataset,
            by_name,
            required: dataset
                .fields
                .iter()
                .map(|f| dataset.is_required(f))
                .collect(),
            key_slots: dataset.key_fields.iter().map(|k| slot(k)).collect(),
            partition_slot: slot(&dataset.partition_field),
            cursor_slot: slot(&dataset.cursor_field),
        }
    }

    /// The row's fields from its JSON text; `Err` with the one error of a row that is not an
    /// object.
    pub(super) fn read_json<'a>(&self, raw: &'a RawValue) -> Result<Fields<'a>, FieldError> {
        let text = raw.get();
        if !text.trim_start().starts_with('{') {
            return Err(not_an_object(&text_of(raw)));
        }
        let mut reader = serde_json::Deserializer::from_str(text);
        RowSeed(self)
            .deserialize(&mut reader)
            .map_err(|e| unreadable(text, &e))
    }

    /// The row's fields from a parsed value.
    pub(super) fn read_value<'a>(&self, raw: &'a Value) -> Result<Fields<'a>, FieldError> {
        if !raw.is_object() {
            return Err(not_an_object(&raw.to_string()));
        }
        RowSeed(self)
            .deserialize(raw)
            .map_err(|e| unreadable(&raw.to_string(), &e))
    }
}

/// A row's text as the rejects keep it: the JSON value printed again (fields in sorted order,
/// a repeated name once), so that one raw row has one text whichever way it was read.
pub fn text_of(raw: &RawValue) -> String {
    serde_json::from_str::<Value>(raw.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.get().to_owned())
}

fn not_an_object(text: &str) -> FieldError {
    FieldError {
        field: String::new(),
        value: cut(text),
        rule: rule::OBJECT,
        message: "the row is not a JSON object".to_owned(),
    }
}

/// A row the page's split let through but JSON does not allow: a number out of range
/// (`1e400`), a lone surrogate (`"\ud800"`), nesting deeper than 128. (Before rows were read
/// one by one, such a row failed its whole page.)
fn unreadable(text: &str, error: &serde_json::Error) -> FieldError {
    FieldError {
        field: String::new(),
        value: cut(text),
        rule: rule::OBJECT,
        message: format!("the row is not valid JSON: {error}"),
    }
}

/// A declared field's value as the row gave it: text (borrowed from the page where it has no
/// escapes), or any other JSON value (numbers, booleans and null without allocating).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Given<'a> {
    Text(Cow<'a, str>),
    Json(Value),
}

impl Given<'_> {
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Given::Json(Value::Null))
    }
}

/// As JSON, the way a [`Value`] prints.
impl fmt::Display for Given<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Given::Text(text) => {
                let mut quoted = serde_json::Serializer::new(FmtWriter(f));
                text.serialize(&mut quoted).map_err(|_| fmt::Error)
            }
            Given::Json(value) => value.fmt(f),
        }
    }
}

/// `io::Write` onto a formatter, for serde_json's string escaping (only ever UTF-8).
struct FmtWriter<'f, 'g>(&'f mut fmt::Formatter<'g>);

impl std::io::Write for FmtWriter<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(bytes).map_err(std::io::Error::other)?;
        self.0.write_str(text).map_err(std::io::Error::other)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Given<'de> {
    fn deserialize<D: Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        input.deserialize_any(GivenVisitor)
    }
}

struct GivenVisitor;

impl<'de> Visitor<'de> for GivenVisitor {
    type Value = Given<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Given<'de>, E> {
        Ok(Given::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Given<'de>, E> {
        Ok(Given::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Given<'de>, E> {
        Ok(Given::Text(Cow::Owned(text)))
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Given<'de>, E> {
        Ok(Given::Json(Value::Bool(flag)))
    }

    // Numbers as serde_json's own `Value` takes them, so that both inputs compare alike.
    fn visit_i64<E>(self, n: i64) -> Result<Given<'de>, E> {
        Ok(Given::Json(Value::Number(n.into())))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Given<'de>, E> {
        Ok(Given::Json(Value::Number(n.into())))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Given<'de>, E> {
        Ok(Given::Json(
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E>(self) -> Result<Given<'de>, E> {
        Ok(Given::Json(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Given<'de>, E> {
        Ok(Given::Json(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, input: D) -> Result<Given<'de>, D::Error> {
        Given::deserialize(input)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Given<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Given::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Given<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Given::Json)
    }
}

/// A field's name, borrowed from the page where it has no escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(input: D) -> Result<Self, D::Error> {
        // JSON's keys are strings: read as a value's text, borrowed the same way.
        match input.deserialize_str(GivenVisitor)? {
            Given::Text(name) => Ok(Name(name)),
            Given::Json(other) => Err(serde::de::Error::custom(format!(
                "a field name must be text, not {other}"
            ))),
        }
    }
}

/// A declared field as the row gave it: its exported name and value.
pub(super) type Slot<'a> = Option<(Cow<'a, str>, Given<'a>)>;

/// A row's fields: one slot per declared field, in declaration order; what the row gave under
/// a field's second name; the undeclared fields as JSON text, by exported name.
#[derive(Debug)]
pub(super) struct Fields<'a> {
    slots: Vec<Slot<'a>>,
    /// (slot, name, value) of a field given under more than one name (rare).
    more: Vec<(usize, Cow<'a, str>, Given<'a>)>,
    extra: BTreeMap<String, String>,
}

impl<'a> Fields<'a> {
    fn give(&mut self, slot: usize, name: Cow<'a, str>, value: Given<'a>) {
        match &mut self.slots[slot] {
            empty @ None => *empty = Some((name, value)),
            // The same name again: the last value counts, as in a JSON map.
            Some((first, earlier)) if *first == name => *earlier = value,
            Some(_) => match self.more.iter_mut().find(|m| m.0 == slot && m.1 == name) {
                Some(again) => again.2 = value,
                None => self.more.push((slot, name, value)),
            },
        }
    }

    /// One (name, value) per declared field, and the conflicts: a field given under its old
    /// and its new name with different values. The names of one field are taken in sorted
    /// order; a null under one of them says nothing.
    pub(super) fn resolve(mut self) -> (Vec<Slot<'a>>, BTreeMap<String, String>, Vec<FieldError>) {
        let mut conflicts = Vec::new();
        let mut more = std::mem::take(&mut self.more);
        while let Some(&(slot, ..)) = more.first() {
            let mut names: Vec<(Cow<'a, str>, Given<'a>)> =
                self.slots[slot].take().into_iter().collect();
            let (same, rest): (Vec<_>, Vec<_>) = more.into_iter().partition(|m| m.0 == slot);
            more = rest;
            names.extend(same.into_iter().map(|(_, name, value)| (name, value)));
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut chosen: Slot<'a> = None;
            for (name, value) in names {
                match &chosen {
                    Some((_, earlier)) if value.is_null() || *earlier == value => {}
                    Some((_, earlier)) if earlier.is_null() => chosen = Some((name, value)),
                    Some((other, earlier)) => conflicts.push(FieldError {
                        field: name.to_string(),
                        value: cut(&value.to_string()),
                        rule: rule::CONFLICT,
                        message: format!(
                            "`{name}` is {value} but `{other}` (the same field) is {earlier}",
                        ),
                    }),
                    None => chosen = Some((name, value)),
                }
            }
            self.slots[slot] = chosen;
        }
        // In the order of the names, as a JSON map gives them.
        conflicts.sort_by(|a, b| a.field.cmp(&b.field));
        (self.slots, self.extra, conflicts)
    }
}

/// Reads one JSON object into [`Fields`].
struct RowSeed<'n, 'd>(&'n Normaliser<'d>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = Fields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, input: D) -> Result<Fields<'de>, D::Error> {
        input.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields {
            slots: vec![None; self.0.dataset.fields.len()],
            more: Vec::new(),
            extra: BTreeMap::new(),
        };
        while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
            match self.0.by_name.get(&*name) {
                Some(&slot) => {
                    let value = map.next_value::<Given<'de>>()?;
                    fields.give(slot, name, value);
                }
                None => {
                    let value = map.next_value::<Value>()?;
                    fields.extra.insert(name.into_owned(), value.to_string());
                }
            }
        }
        Ok(fields)
    }
}
