//! The IDX format of MNIST and Fashion-MNIST (unsigned-byte arrays), gzipped or raw.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;
use ndarray::Array2;

use super::{Dataset, Error, RawLabels, TaskHint};

/// An IDX array: its dimensions and its bytes in row-major order.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip detected from its magic bytes), checking the header against the data.
pub fn read_idx(path: &Path, part: &str) -> Result<IdxArray, Error> {
    let mut file = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 2];
    let got = read_full(&mut file, &mut magic)?;
    let file = BufReader::new(File::open(path)?);
    let gzipped = got == 2 && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gzipped {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    read_idx_from(reader, gzipped, part)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_idx_from(mut r: impl Read, gzipped: bool, part: &str) -> Result<IdxArray, Error> {
    let stream_error = |e: std::io::Error| {
        if gzipped {
            Error::invalid(part, format!("the gzip stream is truncated or corrupt ({e})"))
        } else {
            Error::Io(e)
        }
    };
    let mut head = [0u8; 4];
    let got = read_full(&mut r, &mut head).map_err(stream_error)?;
    if got < 4 || head[0] != 0 || head[1] != 0 {
        return Err(Error::invalid(part, "is not an IDX file (bad magic number)"));
    }
    if head[2] != 0x08 {
        return Err(Error::invalid(
            part,
            format!(
                "IDX element type 0x{:02x} is not supported; only unsigned bytes (0x08)",
                head[2]
            ),
        ));
    }
    let ndims = head[3] as usize;
    if !(1..=4).contains(&ndims) {
        return Err(Error::invalid(
            part,
            format!("IDX header declares {ndims} dimensions; expected 1 to 4"),
        ));
    }
    let mut raw_dims = vec![0u8; 4 * ndims];
    if read_full(&mut r, &mut raw_dims).map_err(stream_error)? < raw_dims.len() {
        return Err(Error::invalid(part, "IDX header is cut short"));
    }
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= 1 << 34);
    let Some(expected) = expected else {
        return Err(Error::invalid(
            part,
            format!("IDX header declares impossible dimensions {dims:?}"),
        ));
    };
    let mut data = Vec::with_capacity(expected);
    (&mut r)
        .take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(stream_error)?;
    if data.len() != expected {
        let what = if data.len() > expected {
            "more than".to_string()
        } else {
            format!("only {} bytes, fewer than", data.len())
        };
        return Err(Error::invalid(
            part,
            format!(
                "IDX header declares dimensions {dims:?} ({expected} bytes) but the file holds {what} that"
            ),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Builds a dataset from an images file and a labels file.
pub fn load(images: &Path, labels: &Path, input_shape: Option<Vec<usize>>) -> Result<Dataset, Error> {
    let img = read_idx(images, "images")?;
    let lab = read_idx(labels, "labels")?;
    if lab.dims.len() != 1 {
        return Err(Error::invalid(
            "labels",
            format!("must be 1-dimensional, not {:?}", lab.dims),
        ));
    }
    let n = img.dims[0];
    let features: usize = img.dims[1..].iter().product();
    let shape = match input_shape {
        Some(s) => s,
        None if img.dims.len() == 1 => vec![1],
        None => img.dims[1..].to_vec(),
    };
    // Convert in place of the byte buffer as far as possible: one u8 and one f32 copy at most.
    let x: Vec<f32> = img.data.into_iter().map(f32::from).collect();
    let x = Array2::from_shape_vec((n, features.max(1)), x)
        .map_err(|e| Error::invalid("images", format!("cannot be read as {n} samples: {e}")))?;
    let y = lab.data.into_iter().map(i64::from).collect();
    Dataset::new(
        x,
        shape,
        RawLabels::Ints(y),
        TaskHint::Classification,
        "images",
        "labels",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_that_disagrees_with_the_data_is_named() {
        let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
        bytes.extend_from_slice(&[1, 2, 3]);
        let err = read_idx_from(&bytes[..], false, "images").unwrap_err();
        assert!(
            err.to_string()
                .contains("(8 bytes) but the file holds only 3 bytes"),
            "{err}"
        );
    }
}
