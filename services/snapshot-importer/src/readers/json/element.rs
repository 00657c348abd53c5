//! One element parsed into a row: the serde visitors that read an object's keys and cells, the
//! cache of mapped key sequences, and the outcomes of elements that are no valid object.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use paygo_snapshots::{Columns, ImportContext, RowError, column_name, cut, rule};
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

use super::RAW_ELEMENT;
use crate::readers::{RowOutcome, keep_raw};

/// How many different key sequences keep their [`Columns`] mapped (most recent first).
const KEY_SETS_KEPT: usize = 8;

/// One element as parsed: an object's keys and cells in document order (duplicates kept),
/// borrowed from the element's text where JSON escapes allow; or what else it was.
pub(super) enum Element<'a> {
    Object(Vec<(Cow<'a, str>, Cow<'a, str>)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
        while let Some(key) = map.next_key_seed(Key)? {
            entries.push((key, map.next_value_seed(Cell)?));
        }
        Ok(Element::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Element<'de>, E> {
        Ok(Element::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
        Ok(Element::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
        Ok(Element::Other("null"))
    }
}

/// An object key, borrowed unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

/// A value as cell text, taken from the element's own text: a string its (unescaped) text; a
/// number its JSON text as written (`12.50`, `1e2`: no round trip through `f64`); `true` /
/// `false`; `null` empty; an object or array its compact JSON text.
struct Cell;

impl<'de> DeserializeSeed<'de> for Cell {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        cell_text(raw.get()).map_err(de::Error::custom)
    }
}

/// The cell text of one JSON value's text, which serde_json has checked already.
fn cell_text(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.as_bytes().first() {
        Some(b'"') => match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(text) if !text.contains('\\') => Ok(Cow::Borrowed(text)),
            _ => serde_json::from_str::<String>(raw).map(Cow::Owned),
        },
        Some(b'n') => Ok(Cow::Borrowed("")),
        Some(b'{' | b'[') => serde_json::from_str::<serde_json::Value>(raw)
            .map(|nested| Cow::Owned(nested.to_string())),
        _ => Ok(Cow::Borrowed(raw)),
    }
}

/// The [`Columns`] of the key sequences seen last: objects nearly always repeat their keys in
/// the same order, and mapping them onto the catalogue per row would cost more than the row.
#[derive(Default)]
pub(super) struct KeySets {
    /// Most recently used first.
    recent: Vec<KeySet>,
}

struct KeySet {
    keys: Vec<String>,
    columns: Columns,
    /// Positions (from 0) of a key's first and second occurrence, compared as column names.
    duplicates: Vec<(usize, usize)>,
}

impl KeySet {
    fn new(keys: Vec<String>) -> Self {
        let columns = Columns::new(&keys);
        let mut first_at: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
        let mut duplicates = Vec::new();
        for (position, key) in keys.iter().enumerate() {
            let name = column_name(key);
            // Blank keys become `column_<n>`, like blank header cells: never duplicates.
            if name.is_empty() {
                continue;
            }
            if let Some(&first) = first_at.get(name) {
                duplicates.push((first, position));
            } else {
                first_at.insert(name, position);
            }
        }
        Self {
            keys,
            columns,
            duplicates,
        }
    }
}

impl KeySets {
    /// The key set of `keys`, mapped once and moved to the front.
    fn get(&mut self, keys: &[Cow<'_, str>]) -> &KeySet {
        let same = |set: &&KeySet| {
            set.keys.len() == keys.len() && set.keys.iter().zip(keys).all(|(a, b)| a == b)
        };
        match self.recent.iter().position(|set| same(&set)) {
            Some(0) => {}
            Some(at) => {
                let set = self.recent.remove(at);
                self.recent.insert(0, set);
            }
            None => {
                self.recent.truncate(KEY_SETS_KEPT - 1);
                let keys = keys.iter().map(|key| key.clone().into_owned()).collect();
                self.recent.insert(0, KeySet::new(keys));
            }
        }
        &self.recent[0]
    }

    /// Validates one object.
    pub(super) fn outcome(
        &mut self,
        row: u64,
        entries: Vec<(Cow<'_, str>, Cow<'_, str>)>,
        ctx: &ImportContext,
    ) -> RowOutcome {
        let (keys, cells): (Vec<Cow<'_, str>>, Vec<Cow<'_, str>>) = entries.into_iter().unzip();
        let set = self.get(&keys);
        let cells: Vec<&str> = cells.iter().map(|cell| cell.as_ref()).collect();
        let mut errors: Vec<RowError> = set
            .duplicates
            .iter()
            .map(|&(first, second)| {
                let name = set.columns.names()[second].clone();
                let value = cells.get(second).copied().unwrap_or_default();
                RowError {
                    row,
                    message: format!(
                        "key `{name}` appears twice in the object (keys {} and {}), so its \
                         value is ambiguous",
                        first + 1,
                        second + 1
                    ),
                    column: name,
                    value: cut(value).to_owned(),
                    rule: rule::JSON,
                }
            })
            .collect();
        let result = match set.columns.validate(row, &cells, ctx) {
            Ok(snapshot) if errors.is_empty() => Ok(snapshot),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        };
        RowOutcome::of(row, set.columns.names(), &cells, result)
    }
}

/// A row that is no object, or no JSON: one error for the whole element.
pub(super) fn rejected_element(row: u64, text: &str, message: String) -> RowOutcome {
    RowOutcome {
        row,
        result: Err(vec![element_error(row, text, rule::JSON, message)]),
        raw: vec![(RAW_ELEMENT.to_owned(), cut(text).to_owned())],
    }
}

pub(super) fn element_error(row: u64, text: &str, rule: &'static str, message: String) -> RowError {
    RowError {
        row,
        column: String::new(),
        value: cut(text.trim()).to_owned(),
        rule,
        message,
    }
}

/// An element with invalid UTF-8: the error names the keys whose values hold it when the rest
/// of the element parses, else the element.
pub(super) fn encoding_outcome(row: u64, bytes: &[u8], error: &std::str::Utf8Error) -> RowOutcome {
    let text = String::from_utf8_lossy(bytes);
    let message = |what: &str| {
        format!(
            "{what} is not valid UTF-8 (invalid byte at offset {} of the element)",
            error.valid_up_to()
        )
    };
    let mut errors = Vec::new();
    let mut raw = Vec::new();
    if let Ok(Element::Object(entries)) = serde_json::from_str::<Element>(&text) {
        for (key, value) in entries {
            if key.contains('\u{fffd}') || value.contains('\u{fffd}') {
                errors.push(RowError {
                    row,
                    column: column_name(&key).to_owned(),
                    value: cut(&value).to_owned(),
                    rule: rule::ENCODING,
                    message: message(&format!("column `{}`", column_name(&key))),
                });
            }
            raw.push((column_name(&key).to_owned(), value.into_owned()));
        }
    }
    if errors.is_empty() {
        errors.push(element_error(
            row,
            &text,
            rule::ENCODING,
            message(&quote(text.trim())),
        ));
        raw = vec![(RAW_ELEMENT.to_owned(), text.into_owned())];
    }
    RowOutcome {
        row,
        result: Err(errors),
        raw: keep_raw(
            raw.iter()
                .map(|(column, value)| (column.clone(), value.as_str())),
        ),
    }
}

/// The value in backquotes, cut to 64 characters so that a huge element does not flood a report.
pub(super) fn quote(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("`{}…`", &value[..end]),
        None => format!("`{value}`"),
    }
}
