//! CSV with a header row: one column of labels (default `label`), every other column a feature.
//! Kaggle's `fashion-mnist_train.csv` (`label,pixel1..pixel784`) loads as is.

use std::io::Read;

use ndarray::Array2;

use super::{Dataset, Error, RawLabels, TaskHint};

/// Parses a CSV; `part` names the upload part for errors.
pub fn load(
    reader: impl Read,
    part: &str,
    label_column: Option<&str>,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
) -> Result<Dataset, Error> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(::csv::Trim::All)
        .from_reader(reader);
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
    while rdr.read_record(&mut record).map_err(|e| csv_error(part, e))? {
        let line = record.position().map(|p| p.line()).unwrap_or(row as u64 + 2);
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
    let x = Array2::from_shape_vec((row, n_features), x).expect("every row has n_features values");
    let y = Array2::from_shape_vec((row, 1), y).expect("one label per row");
    let shape = input_shape.unwrap_or_else(|| vec![n_features]);
    Dataset::new(x, shape, RawLabels::Floats(y), task, part, part)
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
        ::csv::ErrorKind::Io(_) => Error::Io(std::io::Error::other(e.to_string())),
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
        )
        .unwrap();
        assert_eq!(d.x, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
    }
}
