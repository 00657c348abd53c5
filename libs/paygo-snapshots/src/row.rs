//! One row: headers checked once per file, then every row turned into an [`AccountSnapshot`] or
//! into the complete list of what was wrong with it.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Map;

use crate::catalogue::{
    ACCOUNT_EXTERNAL_ID, ACCOUNT_UID, CREATED_AT, CUSTOM, DATA_ORIGIN, FIELDS, ORGANIZATION_ID,
    SNAPSHOT_DATE, SOURCE_ID, UPDATED_AT, field,
};
use crate::value::{CellError, MAX_CELL_BYTES, Value, parse_cell, quote, rule};

/// The `data_origin` of rows whose source does not name itself.
pub const GENERIC_ORIGIN: &str = "generic";

/// What an import knows besides the file: who sends it, from where, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportContext {
    /// The tenant; becomes `organization_id` and the first part of `account_uid`.
    pub organization_id: String,
    /// The name the source gives itself; `None` (or blank) means [`GENERIC_ORIGIN`].
    pub data_origin: Option<String>,
    /// The import source; becomes `source_id`.
    pub source_id: String,
    /// The time of the import (UTC); becomes `created_at` and `updated_at`.
    pub now: DateTime<Utc>,
}

impl ImportContext {
    /// The `data_origin` this import stamps on its rows.
    pub fn origin(&self) -> &str {
        match self.data_origin.as_deref().map(str::trim) {
            Some(origin) if !origin.is_empty() => origin,
            _ => GENERIC_ORIGIN,
        }
    }
}

/// One thing wrong with one row, as the import report lists it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}, column `{column}`: {message}")]
pub struct RowError {
    /// The row number as the caller counts it (the readers use the line or sheet row).
    pub row: u64,
    /// The column name as the header gives it (trimmed); empty for [`rule::EXTRA_CELLS`].
    pub column: String,
    /// The raw cell, cut to [`MAX_CELL_BYTES`]; for extra cells, those cells joined by `,`.
    pub value: String,
    /// One of the codes in [`rule`].
    pub rule: &'static str,
    /// What was wrong, naming the value.
    pub message: String,
}

/// A header row that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required column is absent: most likely the file has no header row.
    #[error("no header row? the first row has no `{column}` column")]
    MissingRequired {
        /// The required column that was not found.
        column: &'static str,
    },
    /// Two columns have the same name (after trimming), so a cell would be ambiguous.
    #[error("column `{name}` appears twice in the header, as columns {first} and {second}")]
    Duplicate {
        /// The repeated name.
        name: String,
        /// Its first position, counted from 1.
        first: usize,
        /// Its second position, counted from 1.
        second: usize,
    },
}

/// A header cell as a column name: without a UTF-8 byte order mark and surrounding whitespace.
pub fn column_name(header: &str) -> &str {
    header.strip_prefix('\u{feff}').unwrap_or(header).trim()
}

/// Checks a header row once per file: every required column present, no name twice. Blank
/// header cells are allowed (a trailing separator makes them); their cells go to `custom` as
/// `column_<n>`.
///
/// Linear in the number of columns (a header of a million columns is checked in well under a
/// second): each name is looked up once in a set of the names before it.
pub fn check_headers(headers: &[String]) -> Result<(), HeaderError> {
    // A blank header cell is named by its position; a real `column_3` would collide with it.
    let mut first_at: std::collections::HashMap<std::borrow::Cow<'_, str>, usize> =
        std::collections::HashMap::with_capacity(headers.len());
    let mut duplicate = None;
    for (i, header) in headers.iter().enumerate() {
        let name: std::borrow::Cow<'_, str> = match column_name(header) {
            "" => format!("column_{}", i + 1).into(),
            name => name.into(),
        };
        match first_at.get(&name) {
            Some(&first) => {
                duplicate.get_or_insert(HeaderError::Duplicate {
                    name: name.into_owned(),
                    first: first + 1,
                    second: i + 1,
                });
            }
            None => {
                first_at.insert(name, i);
            }
        }
    }
    // A first row without the required names is no header at all: say that first.
    for required in FIELDS.iter().filter(|f| f.required) {
        if !first_at.contains_key(required.name) {
            return Err(HeaderError::MissingRequired {
                column: required.name,
            });
        }
    }
    duplicate.map_or(Ok(()), Err)
}

/// A validated row: one account on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSnapshot {
    /// One slot per column of [`FIELDS`], in its order; `None` where the row had no value. The
    /// `custom` slot stays `None`: its content is [`AccountSnapshot::custom`].
    pub values: Vec<Option<Value>>,
    /// The columns that match no field (as strings), merged over the keys of a `custom` JSON
    /// object the row may carry itself. Nothing the sender gave is dropped.
    pub custom: Map<String, serde_json::Value>,
}

impl AccountSnapshot {
    /// `{organization_id}_{data_origin}_{account_external_id}`, e.g. `1_crm_C11223344`.
    pub fn account_uid(&self) -> Option<&str> {
        match self.values.get(ACCOUNT_UID) {
            Some(Some(Value::String(uid))) => Some(uid),
            _ => None,
        }
    }

    /// The day the snapshot describes.
    pub fn snapshot_date(&self) -> Option<NaiveDate> {
        match self.values.get(SNAPSHOT_DATE) {
            Some(Some(Value::Date(date))) => Some(*date),
            _ => None,
        }
    }

    /// The value of a catalogue column by name; `None` when empty or not a column.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let (index, _) = field(name)?;
        self.values.get(index)?.as_ref()
    }
}

/// What one header cell means, worked out once per file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// A catalogue column the file may set: its position in [`FIELDS`].
    Field(usize),
    /// The `custom` column: a JSON object merged with the unknown columns.
    Custom,
    /// An autogenerated column: recoup sets it, the cell is ignored.
    Auto,
    /// A column that matches no field; its cells go to `custom` under this key.
    Unknown(String),
}

/// A file's header row mapped onto the catalogue once, so that each row is validated without
/// looking names up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The column names as the header gives them (trimmed, without a BOM).
    names: Vec<String>,
    slots: Vec<Slot>,
}

impl Columns {
    /// Maps a header row without checking it (see [`Columns::checked`]).
    pub fn new(headers: &[String]) -> Self {
        let names: Vec<String> = headers.iter().map(|h| column_name(h).to_owned()).collect();
        let slots = names
            .iter()
            .enumerate()
            .map(|(position, name)| match field(name) {
                Some((CUSTOM, _)) => Slot::Custom,
                Some((_, known)) if known.autogenerated => Slot::Auto,
                Some((index, _)) => Slot::Field(index),
                None if name.is_empty() => Slot::Unknown(format!("column_{}", position + 1)),
                None => Slot::Unknown(name.clone()),
            })
            .collect();
        Self { names, slots }
    }

    /// Checks the header row ([`check_headers`]) and maps it.
    pub fn checked(headers: &[String]) -> Result<Self, HeaderError> {
        check_headers(headers)?;
        Ok(Self::new(headers))
    }

    /// The column names, in file order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many columns the header names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the header names no column.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Validates one row whose cells are in header order. See [`validate_row`].
    pub fn validate(
        &self,
        row: u64,
        cells: &[&str],
        ctx: &ImportContext,
    ) -> Result<AccountSnapshot, Vec<RowError>> {
        let mut errors: Vec<RowError> = self.extra_cells_error(row, cells).into_iter().collect();
        let mut parsed = ParsedCells::new();
        for (position, (name, slot)) in self.names.iter().zip(&self.slots).enumerate() {
            let raw = cells.get(position).copied().unwrap_or("");
            if let Err(error) = parsed.read(slot, raw) {
                errors.push(RowError {
                    row,
                    column: name.clone(),
                    value: cut(raw).to_owned(),
                    rule: error.rule,
                    message: format!("column `{name}`: {}", error.message),
                });
            }
        }
        errors.extend(parsed.missing_required(row));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(parsed.into_snapshot(ctx))
    }

    /// The error for a row with more cells than the header names columns, if it has.
    fn extra_cells_error(&self, row: u64, cells: &[&str]) -> Option<RowError> {
        if cells.len() <= self.names.len() {
            return None;
        }
        let extra = &cells[self.names.len()..];
        Some(RowError {
            row,
            column: String::new(),
            value: cut(&extra.join(",")).to_owned(),
            rule: rule::EXTRA_CELLS,
            message: format!(
                "row has {} cells but the header names {} columns: {} extra",
                cells.len(),
                self.names.len(),
                extra.len()
            ),
        })
    }
}

/// What a row's cells yielded, before required fields are checked and autogenerated ones set.
struct ParsedCells {
    /// One slot per column of [`FIELDS`], as in [`AccountSnapshot::values`].
    values: Vec<Option<Value>>,
    /// The fields whose cell was refused: not reported again as missing.
    failed: [bool; FIELDS.len()],
    /// The cells of columns that match no field, by key.
    unknown: Map<String, serde_json::Value>,
    /// The keys of the row's own `custom` JSON object.
    custom: Map<String, serde_json::Value>,
}

impl ParsedCells {
    /// Nothing read yet.
    fn new() -> Self {
        Self {
            values: vec![None; FIELDS.len()],
            failed: [false; FIELDS.len()],
            unknown: Map::new(),
            custom: Map::new(),
        }
    }

    /// Reads one cell into the place its column's slot gives it, or says what is wrong with it.
    fn read(&mut self, slot: &Slot, raw: &str) -> Result<(), CellError> {
        match slot {
            Slot::Auto => {}
            Slot::Custom => match parse_cell(&FIELDS[CUSTOM], raw)? {
                None => {}
                Some(Value::Json(serde_json::Value::Object(object))) => self.custom.extend(object),
                Some(_) => {
                    return Err(CellError {
                        rule: rule::JSON,
                        message: format!("{} is not a JSON object", quote(raw.trim())),
                    });
                }
            },
            Slot::Field(index) => match parse_cell(&FIELDS[*index], raw) {
                Ok(Some(value)) => self.values[*index] = Some(value),
                Ok(None) => {}
                Err(error) => {
                    self.failed[*index] = true;
                    return Err(error);
                }
            },
            Slot::Unknown(_) if raw.len() > MAX_CELL_BYTES => {
                return Err(CellError {
                    rule: rule::TOO_LONG,
                    message: format!(
                        "cell of {} bytes starting {} is longer than the limit of \
                         {MAX_CELL_BYTES} bytes",
                        raw.len(),
                        quote(raw)
                    ),
                });
            }
            Slot::Unknown(_) if raw.trim().is_empty() => {}
            Slot::Unknown(key) => {
                self.unknown
                    .insert(key.clone(), serde_json::Value::String(raw.to_owned()));
            }
        }
        Ok(())
    }

    /// An error for each required field left empty or absent (a refused cell was reported).
    fn missing_required(&self, row: u64) -> Vec<RowError> {
        FIELDS
            .iter()
            .enumerate()
            .filter(|(index, f)| {
                f.required && self.values[*index].is_none() && !self.failed[*index]
            })
            .map(|(_, required)| RowError {
                row,
                column: required.name.to_owned(),
                value: String::new(),
                rule: rule::REQUIRED,
                message: format!("column `{}` is required but empty or absent", required.name),
            })
            .collect()
    }

    /// The snapshot of a row without errors, its autogenerated fields stamped from `ctx`.
    fn into_snapshot(self, ctx: &ImportContext) -> AccountSnapshot {
        let Self {
            mut values,
            unknown,
            mut custom,
            ..
        } = self;
        let origin = ctx.origin();
        if let Some(Value::String(external_id)) = &values[ACCOUNT_EXTERNAL_ID] {
            let uid = format!("{}_{origin}_{external_id}", ctx.organization_id);
            values[ACCOUNT_UID] = Some(Value::String(uid));
        }
        values[DATA_ORIGIN] = Some(Value::String(origin.to_owned()));
        // The tenant and the source are names in recoup, not the seed's integer ids.
        values[ORGANIZATION_ID] = Some(Value::String(ctx.organization_id.clone()));
        values[SOURCE_ID] = Some(Value::String(ctx.source_id.clone()));
        values[CREATED_AT] = Some(Value::DateTime(ctx.now));
        values[UPDATED_AT] = Some(Value::DateTime(ctx.now));
        // Named columns are the sender's latest word: they win over keys of a `custom` object.
        custom.extend(unknown);
        AccountSnapshot { values, custom }
    }
}

/// Validates one row and stamps the autogenerated fields.
///
/// `headers` is the header row (see [`check_headers`], which the caller runs once per file);
/// `cells` the row's cells in the same order. Missing trailing cells count as empty; more cells
/// than headers is an error. Every error of the row is returned, not only the first.
///
/// Autogenerated columns in the file are overridden by `ctx` (their cells are not parsed),
/// except `custom`: a JSON object there is kept and merged with the unknown columns. If a
/// column name repeats despite [`check_headers`], its last non-empty cell wins.
///
/// Readers map the header once with [`Columns`] and call [`Columns::validate`] per row; this
/// function does both for one row.
pub fn validate_row(
    row: u64,
    headers: &[String],
    cells: &[&str],
    ctx: &ImportContext,
) -> Result<AccountSnapshot, Vec<RowError>> {
    Columns::new(headers).validate(row, cells, ctx)
}

/// `raw` cut to at most [`MAX_CELL_BYTES`] bytes, on a character boundary: what reports and
/// rejects keep of a cell.
pub fn cut(raw: &str) -> &str {
    if raw.len() <= MAX_CELL_BYTES {
        return raw;
    }
    let mut end = MAX_CELL_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}
