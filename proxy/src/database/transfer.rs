//! Tables in and out of the database API as files: an export streamed as NDJSON (one JSON
//! row per line, lossless) or CSV (a header, then one record per row), and an import of
//! NDJSON, a JSON array or CSV, read whole, checked, then inserted in batches. Pure: the
//! handlers in the parent module do the I/O.

use http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Rows inserted per query of an import.
pub const IMPORT_BATCH: usize = 500;

/// The failures an import reports by row, at most.
const REPORTED_FAILURES: usize = 20;

/// A file format of export and import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`application/x-ndjson`): what is exported comes back
    /// as it was.
    Ndjson,
    /// A JSON array of objects (import only).
    Json,
    /// A header of field names, then one record per row (`text/csv`): strings as they
    /// are, other values as JSON, a missing field as an empty cell.
    Csv,
}

impl Format {
    /// The `format` query parameter (`ndjson` when not given).
    pub fn parse(value: Option<&str>, export: bool) -> Result<Self, ApiError> {
        match value.unwrap_or("ndjson") {
            "ndjson" => Ok(Self::Ndjson),
            "csv" => Ok(Self::Csv),
            "json" if !export => Ok(Self::Json),
            other => Err(ApiError::bad_request(format!(
                "query parameter format {other:?} is not one of {}",
                if export {
                    "ndjson, csv"
                } else {
                    "ndjson, json, csv"
                }
            ))),
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    /// Its file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }
}

/// What an import does with a row whose key is taken (`conflict`, default `error`).
pub fn conflict_mode(value: Option<&str>) -> Result<&'static str, ApiError> {
    match value.unwrap_or("error") {
        "error" => Ok("error"),
        "replace" => Ok("replace"),
        "update" => Ok("update"),
        other => Err(ApiError::bad_request(format!(
            "query parameter conflict {other:?} is not one of error (refuse the row), replace \
             (the whole row), update (merge its fields)"
        ))),
    }
}

/// The export's CSV columns: `primary_key` first, then the other fields of the first
/// batch in order (a field that appears only later is not a column; NDJSON keeps all).
pub fn csv_columns(primary_key: &str, first: &[Value]) -> Vec<String> {
    let mut columns = vec![primary_key.to_owned()];
    let mut others: Vec<&String> = first
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|row| row.keys())
        .filter(|key| *key != primary_key)
        .collect();
    others.sort_unstable();
    others.dedup();
    columns.extend(others.into_iter().cloned());
    columns
}

/// `rows` as CSV records of `columns` (with the header first when `header`).
pub fn csv_records(columns: &[String], rows: &[Value], header: bool) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if header {
        let _ = writer.write_record(columns);
    }
    for row in rows {
        let cells = columns.iter().map(|column| match row.get(column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        });
        let _ = writer.write_record(cells);
    }
    writer.into_inner().unwrap_or_default()
}

/// `rows` as NDJSON lines.
pub fn ndjson_lines(rows: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(row.to_string().into_bytes());
        out.push(b'\n');
    }
    out
}

/// The rows of an import `body` in `format`, or `400` naming the line (or record) that is
/// not a row, before anything is written.
pub fn import_rows(format: Format, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the import is not UTF-8 text"))?;
    let rows = match format {
        Format::Ndjson => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(at, line)| match serde_json::from_str::<Value>(line) {
                Ok(row @ Value::Object(_)) => Ok(row),
                Ok(_) => Err(ApiError::bad_request(format!(
                    "line {} of the import is not a JSON object",
                    at + 1
                ))),
                Err(error) => Err(ApiError::bad_request(format!(
                    "line {} of the import is not JSON: {error}",
                    at + 1
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Format::Json => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(rows)) => {
                if let Some(at) = rows.iter().position(|row| !row.is_object()) {
                    return Err(ApiError::bad_request(format!(
                        "element {at} of the import's array is not a JSON object"
                    )));
                }
                rows
            }
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "a JSON import is an array of objects (or use format=ndjson)",
                ));
            }
            Err(error) => {
                return Err(ApiError::bad_request(format!(
                    "the import is not valid JSON: {error}"
                )));
            }
        },
        Format::Csv => csv_rows(text)?,
    };
    if rows.is_empty() {
        return Err(ApiError::bad_request("the import has no rows"));
    }
    Ok(rows)
}

/// CSV records as rows: the header names the fields; a cell is read as JSON when it is
/// JSON (numbers, `true`, quoted strings, objects), else as a string; an empty cell is no
/// field.
fn csv_rows(text: &str) -> Result<Vec<Value>, ApiError> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .map_err(|error| ApiError::bad_request(format!("the CSV header cannot be read: {error}")))?
        .clone();
    let mut rows = Vec::new();
    for (at, record) in reader.records().enumerate() {
        let record = record.map_err(|error| {
            ApiError::bad_request(format!("record {} of the CSV: {error}", at + 1))
        })?;
        let row: Map<String, Value> = header
            .iter()
            .zip(record.iter())
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(field, cell)| {
                let value =
                    serde_json::from_str(cell).unwrap_or_else(|_| Value::String(cell.to_owned()));
                (field.to_owned(), value)
            })
            .collect();
        rows.push(Value::Object(row));
    }
    Ok(rows)
}

/// What an import did: rows by outcome, and the first failures the server gave.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Rows in the file.
    pub rows: usize,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows whose taken key was replaced or updated (`conflict=replace|update`).
    pub replaced: u64,
    /// Rows already as given.
    pub unchanged: u64,
    /// Rows refused.
    pub errors: u64,
    /// The server's reasons, one per batch that had refusals, at most 20.
    pub failures: Vec<String>,
}

impl Report {
    /// Adds the result of one batch insert.
    pub fn add(&mut self, result: &Value) {
        let count = |field: &str| result.get(field).and_then(Value::as_u64).unwrap_or(0);
        self.inserted += count("inserted");
        self.replaced += count("replaced");
        self.unchanged += count("unchanged");
        self.errors += count("errors");
        if let Some(error) = result.get("first_error").and_then(Value::as_str)
            && self.failures.len() < REPORTED_FAILURES
        {
            self.failures.push(error.to_owned());
        }
    }

    /// Its status: `201` when something was written, `409` when every row was refused.
    pub fn status(&self) -> StatusCode {
        if self.errors > 0 && self.inserted + self.replaced + self.unchanged == 0 {
            StatusCode::CONFLICT
        } else {
            StatusCode::CREATED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_columns_are_the_key_then_the_first_rows_fields() {
        let rows = [
            json!({"n": 1, "sku": "a"}),
            json!({"colour": "red", "sku": "b"}),
        ];
        assert_eq!(csv_columns("sku", &rows), ["sku", "colour", "n"]);
        let csv = String::from_utf8(csv_records(&csv_columns("sku", &rows), &rows, true)).unwrap();
        assert_eq!(csv, "sku,colour,n\na,,1\nb,red,\n");
    }

    #[test]
    fn what_csv_export_writes_csv_import_reads_back() {
        let rows = [
            json!({"sku": "a", "n": 1, "tags": ["x", "y"], "note": "has, a comma"}),
            json!({"sku": "b", "done": true}),
        ];
        let columns = csv_columns("sku", &rows);
        let file = csv_records(&columns, &rows, true);
        let back = import_rows(Format::Csv, &file).unwrap();
        assert_eq!(back, rows);
    }

    #[test]
    fn ndjson_and_json_imports_take_objects_and_name_the_line_that_is_not_one() {
        let rows = import_rows(Format::Ndjson, b"{\"sku\": \"a\"}\n\n{\"sku\": \"b\"}\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(ndjson_lines(&rows), b"{\"sku\":\"a\"}\n{\"sku\":\"b\"}\n");
        let error = import_rows(Format::Ndjson, b"{\"sku\": \"a\"}\n[1]\n").unwrap_err();
        assert!(error.message.contains("line 2"), "{}", error.message);
        let error = import_rows(Format::Ndjson, b"{\"sku\": \n").unwrap_err();
        assert!(error.message.contains("line 1"), "{}", error.message);
        assert_eq!(import_rows(Format::Json, b"[{\"a\": 1}]").unwrap().len(), 1);
        let error = import_rows(Format::Json, b"[{\"a\": 1}, 2]").unwrap_err();
        assert!(error.message.contains("element 1"), "{}", error.message);
        assert!(import_rows(Format::Json, b"{}").is_err());
        assert!(import_rows(Format::Ndjson, b"\n").is_err());
    }

    #[test]
    fn formats_and_conflict_modes_are_named_in_their_refusals() {
        assert_eq!(Format::parse(None, true).unwrap(), Format::Ndjson);
        assert!(Format::parse(Some("json"), true).is_err());
        assert_eq!(Format::parse(Some("json"), false).unwrap(), Format::Json);
        let error = Format::parse(Some("xml"), false).unwrap_err();
        assert!(error.message.contains("format"), "{}", error.message);
        assert_eq!(conflict_mode(None).unwrap(), "error");
        assert_eq!(conflict_mode(Some("update")).unwrap(), "update");
        assert!(
            conflict_mode(Some("skip"))
                .unwrap_err()
                .message
                .contains("conflict")
        );
    }

    #[test]
    fn a_report_adds_its_batches_and_is_a_conflict_only_when_nothing_was_written() {
        let mut report = Report::default();
        report.add(&json!({"inserted": 0, "errors": 2, "first_error": "Duplicate primary key"}));
        assert_eq!(report.status(), StatusCode::CONFLICT);
        report.add(&json!({"inserted": 3}));
        assert_eq!(report.status(), StatusCode::CREATED);
        assert_eq!((report.inserted, report.errors), (3, 2));
        assert_eq!(report.failures, ["Duplicate primary key"]);
    }
}
