//! CSV with a header row: one column of labels (default `label`), every other column a feature.
//! Kaggle's `fashion-mnist_train.csv` (`label,pixel1..pixel784`) loads as is.

use std::io::Read;

use ndarray::Array2;

use super::{Budget, CorruptPart, Dataset, Error, Features, RawLabels, TaskHint};

/// The longest record (row) accepted. The parser holds a whole record in memory, so without a
/// bound one endless line (or an unclosed quote) would be read into memory whole.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Parses a CSV; `part` names the upload part for errors. Each row's values are claimed from
/// `budget` as it is parsed (4 bytes per feature, 8 per label).
pub fn load(
    reader: impl Read,
    part: &str,
    label_column: Option<&str>,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
    budget: &mut Budget,
) -> Result<Dataset, Error> {
    let guarded = RecordGuard {
        inner: reader,
        part,
        since_newline: 0,
        in_quotes: false,
    };
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(::csv::Trim::All)
        .from_reader(guarded);
    let headers = rdr.headers().map_err(|e| csv_error(part, e))?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        return Err(Error::invalid(part, "is empty; expected a header row"));
    }
    let wanted = label_column.unwrap_or("label");
    let Some(label_idx) = headers.iter().position(|h| h == wanted) else {
        let (field, hint) = match label_column {
            Some(_) => ("label_column", ""),
            None => (part, "; name the label column with the form field label_column"),
        };
        return Err(Error::invalid(
            field,
            format!("the CSV header has no column {wanted:?}{hint}"),
        ));
    };
    let n_features = headers.len() - 1;
    if n_features == 0 {
        return Err(Error::invalid(part, "has a label column but no feature columns"));
    }
    let mut x: Vec<f32> = Vec::new();
    let mut y: Vec<f64> = Vec::new();
    let mut record = ::csv::StringRecord::new();
    let mut row = 0usize;
    let row_bytes = 4 * n_features as u64 + 8;
    let (mut held, remaining) = (0u64, budget.remaining());
    while rdr.read_record(&mut record).map_err(|e| csv_error(part, e))? {
        let line = record.position().map(|p| p.line()).unwrap_or(row as u64 + 2);
        held += row_bytes;
        if held > remaining {
            budget.claim(part, &format!("the CSV up to line {line}"), held)?;
        }
        for (col, cell) in record.iter().enumerate() {
            let value: f64 = cell.parse().map_err(|_| {
                Error::invalid(
                    part,
                    format!(
                        "line {line}, column {:?}: {cell:?} is not a number",
                        &headers[col]
                    ),
                )
            })?;
            if !value.is_finite() {
                return Err(Error::invalid(
                    part,
                    format!(
                        "line {line}, column {:?}: {cell:?} is not a finite number",
                        &headers[col]
                    ),
                ));
            }
            if col == label_idx {
                y.push(value);
            } else {
                x.push(value as f32);
            }
        }
        row += 1;
    }
    if row == 0 {
        return Err(Error::invalid(part, "has a header but no data rows"));
    }
    budget.claim(part, "the CSV", held)?;
    let x = Array2::from_shape_vec((row, n_features), x).expect("every row has n_features values");
    let y = Array2::from_shape_vec((row, 1), y).expect("one label per row");
    let shape = input_shape.unwrap_or_else(|| vec![n_features]);
    Dataset::new(Features::F32(x), shape, RawLabels::Floats(y), task, part, part)
}

/// Passes the CSV through, failing once a record grows past [`MAX_RECORD_BYTES`]. Records end at a
/// newline outside quotes (a quoted field may span lines; `""` inside one toggles twice).
struct RecordGuard<'a, R> {
    inner: R,
    part: &'a str,
    since_newline: usize,
    in_quotes: bool,
}

impl<R: Read> Read for RecordGuard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            match b {
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.since_newline = 0,
                _ => {}
            }
            self.since_newline += 1;
            if self.since_newline > MAX_RECORD_BYTES {
                return Err(CorruptPart::io(
                    self.part,
                    format!("has a row longer than {MAX_RECORD_BYTES} bytes"),
                ));
            }
        }
        Ok(n)
    }
}

fn csv_error(part: &str, e: ::csv::Error) -> Error {
    let line = e.position().map(|p| p.line());
    match e.kind() {
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => Error::invalid(
            part,
            format!(
                "line {} has {len} fields but the header has {expected_len}",
                line.map_or("?".into(), |l| l.to_string())
            ),
        ),
        ::csv::ErrorKind::Utf8 { .. } => Error::invalid(part, format!("is not UTF-8 text: {e}")),
        ::csv::ErrorKind::Io(_) => match e.into_kind() {
            ::csv::ErrorKind::Io(io) => Error::from(io),
            _ => unreachable!("matched as an I/O error"),
        },
        _ => Error::invalid(part, format!("is not valid CSV: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_the_wrong_width_name_their_line() {
        let err = load(
            "a,label\n1,0\n1,2,3\n".as_bytes(),
            "file",
            None,
            None,
            TaskHint::Auto,
            &mut Budget::unlimited(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "file: line 3 has 3 fields but the header has 2");
    }

    #[test]
    fn the_label_column_can_be_anywhere() {
        let d = load(
            "a,y,b\n1,0,2\n3,1,4\n".as_bytes(),
            "file",
            Some("y"),
            None,
            TaskHint::Auto,
            &mut Budget::unlimited(),
        )
        .unwrap();
        assert_eq!(d.x, Features::F32(ndarray::array![[1.0, 2.0], [3.0, 4.0]]));
    }

    #[test]
    fn rows_are_claimed_from_the_budget_as_they_are_parsed() {
        let csv = "label,a,b\n".to_string() + &"1,2,3\n".repeat(100);
        let mut budget = Budget::new(200);
        let err = load(csv.as_bytes(), "file", None, None, TaskHint::Auto, &mut budget).unwrap_err();
        assert!(
            err.to_string()
                .contains("the CSV up to line 14 decodes to 208 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_endless_row_is_refused_without_holding_it() {
        let mut long = "label,a\n1,".to_string();
        long.push_str(&"9".repeat(MAX_RECORD_BYTES + 10));
        let err = load(
            long.as_bytes(),
            "file",
            None,
            None,
            TaskHint::Auto,
            &mut Budget::unlimited(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("file: has a row longer than {MAX_RECORD_BYTES} bytes")
        );
    }
}
