//! The IDX format of MNIST and Fashion-MNIST (unsigned-byte arrays), gzipped or raw.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::GzDecoder;
use ndarray::Array2;

use super::npy::{MAX_DEFLATE_RATIO, read_full};
use super::{Budget, CorruptPart, Dataset, Error, Features, RawLabels, TaskHint};

/// An IDX array: its dimensions and its bytes in row-major order.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file (gzip detected from its magic bytes), checking the header against the bytes
/// present and claiming `held_bytes` per value from `budget` before allocating.
pub fn read_idx(path: &Path, part: &str, held_bytes: u64, budget: &mut Budget) -> Result<IdxArray, Error> {
    let mut file = BufReader::new(File::open(path)?);
    let size = file.get_ref().metadata()?.len();
    let mut magic = [0u8; 2];
    let got = read_full(&mut file, &mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    if got == 2 && magic == [0x1f, 0x8b] {
        let stream = GzStream {
            inner: GzDecoder::new(file),
            part,
        };
        read_idx_from(stream, Stored::Gzip(size), part, held_bytes, budget)
    } else {
        read_idx_from(file, Stored::Raw(size), part, held_bytes, budget)
    }
}

/// How an IDX file arrived: its size on disk, raw or gzipped.
#[derive(Debug, Clone, Copy)]
enum Stored {
    Raw(u64),
    Gzip(u64),
}

/// A gzip decoder whose failures are problems with the upload (a 422), not server errors.
struct GzStream<'a, R: Read> {
    inner: R,
    part: &'a str,
}

impl<R: Read> Read for GzStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            CorruptPart::io(
                self.part,
                format!("the gzip stream is truncated or corrupt ({e})"),
            )
        })
    }
}

fn read_idx_from(
    mut r: impl Read,
    stored: Stored,
    part: &str,
    held_bytes: u64,
    budget: &mut Budget,
) -> Result<IdxArray, Error> {
    let mut head = [0u8; 4];
    let got = read_full(&mut r, &mut head)?;
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
    if read_full(&mut r, &mut raw_dims)? < raw_dims.len() {
        return Err(Error::invalid(part, "IDX header is cut short"));
    }
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let Some(expected) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        return Err(Error::invalid(
            part,
            format!("IDX header declares impossible dimensions {dims:?}"),
        ));
    };
    let declared = format!("IDX header declares dimensions {dims:?} ({expected} bytes)");
    let mismatch = match stored {
        Stored::Raw(size) => {
            let n = size.saturating_sub(4 + 4 * ndims as u64);
            match n.cmp(&(expected as u64)) {
                std::cmp::Ordering::Less => Some(format!("the file holds only {n} bytes, fewer than that")),
                std::cmp::Ordering::Greater => Some("the file holds more than that".to_string()),
                std::cmp::Ordering::Equal => None,
            }
        }
        Stored::Gzip(size) => (expected as u64 > size.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024))
            .then(|| format!("the file's {size} gzip bytes cannot decompress to that much")),
    };
    if let Some(m) = mismatch {
        return Err(Error::invalid(part, format!("{declared} but {m}")));
    }
    budget.claim(
        part,
        &format!("the IDX array {dims:?}"),
        (expected as u64).saturating_mul(held_bytes),
    )?;
    // Zeroed allocations come from fresh pages, which only become resident as bytes arrive.
    let mut data = vec![0u8; expected];
    let got = read_full(&mut r, &mut data)?;
    let mut extra = [0u8; 1];
    let more = read_full(&mut r, &mut extra)? > 0;
    if got < expected || more {
        let source = match stored {
            Stored::Raw(_) => "file",
            Stored::Gzip(_) => "gzip stream",
        };
        let holds = if more {
            "holds more than that".to_string()
        } else {
            format!("holds only {got} bytes, fewer than that")
        };
        return Err(Error::invalid(
            part,
            format!("{declared} but the {source} {holds}"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Builds a dataset from an images file and a labels file; `budget` caps what they decode to.
pub fn load(
    images: &Path,
    labels: &Path,
    input_shape: Option<Vec<usize>>,
    budget: &mut Budget,
) -> Result<Dataset, Error> {
    let img = read_idx(images, "images", 1, budget)?;
    // Labels are held as 64-bit integers until the task is decided.
    let lab = read_idx(labels, "labels", 8, budget)?;
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
    let x = Array2::from_shape_vec((n, features.max(1)), img.data)
        .map_err(|e| Error::invalid("images", format!("cannot be read as {n} samples: {e}")))?;
    let y = lab.data.into_iter().map(i64::from).collect();
    Dataset::new(
        Features::U8(x),
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
        let err =
            read_idx_from(&bytes[..], Stored::Raw(19), "images", 1, &mut Budget::unlimited()).unwrap_err();
        assert!(
            err.to_string()
                .contains("(8 bytes) but the file holds only 3 bytes"),
            "{err}"
        );
    }
}
