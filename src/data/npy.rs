//! The NumPy `.npy` format and `.npz` archives of it: uploads of `x`/`y` pairs and archives, and the
//! arrays fitd stores.
//!
//! A header's declared size is compared with the bytes actually present (the file, or the zip entry)
//! and claimed from the upload's [`Budget`] before anything is allocated, and values are converted
//! chunk by chunk while they stream in, so an array is held once, in the form it is kept in.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ndarray::Array2;

use super::{Budget, CorruptPart, Dataset, Error, Features, RawLabels, TaskHint};

/// NumPy refuses headers longer than this by default (`max_header_size`); fitd does the same.
const MAX_HEADER_BYTES: usize = 10_000;

/// Deflate cannot expand data more than 1032-fold, so a compressed entry declaring more than that
/// is a lie (or a bomb) and is refused before it is inflated.
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// Bytes converted per read while streaming values in.
const CHUNK: usize = 64 * 1024;

/// An element type fitd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// NumPy's type code, without the byte-order character.
    fn code(self) -> &'static str {
        match self {
            Dtype::Bool => "b1",
            Dtype::U8 => "u1",
            Dtype::I8 => "i1",
            Dtype::U16 => "u2",
            Dtype::I16 => "i2",
            Dtype::U32 => "u4",
            Dtype::I32 => "i4",
            Dtype::U64 => "u8",
            Dtype::I64 => "i8",
            Dtype::F32 => "f4",
            Dtype::F64 => "f8",
        }
    }

    fn from_code(code: &str) -> Option<Dtype> {
        [
            Dtype::Bool,
            Dtype::U8,
            Dtype::I8,
            Dtype::U16,
            Dtype::I16,
            Dtype::U32,
            Dtype::I32,
            Dtype::U64,
            Dtype::I64,
            Dtype::F32,
            Dtype::F64,
        ]
        .into_iter()
        .find(|d| d.code() == code)
    }

    /// Decodes element `i` of `bytes` as a double (exact for every type but 64-bit integers past 2^53).
    fn get(self, bytes: &[u8], big_endian: bool) -> f64 {
        macro_rules! num {
            ($t:ty, $n:literal) => {{
                let b: [u8; $n] = bytes[..$n].try_into().expect("a whole element");
                (if big_endian {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                }) as f64
            }};
        }
        match self {
            Dtype::Bool => f64::from(u8::from(bytes[0] != 0)),
            Dtype::U8 => f64::from(bytes[0]),
            Dtype::I8 => f64::from(bytes[0] as i8),
            Dtype::U16 => num!(u16, 2),
            Dtype::I16 => num!(i16, 2),
            Dtype::U32 => num!(u32, 4),
            Dtype::I32 => num!(i32, 4),
            Dtype::U64 => num!(u64, 8),
            Dtype::I64 => num!(i64, 8),
            Dtype::F32 => num!(f32, 4),
            Dtype::F64 => num!(f64, 8),
        }
    }
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub dtype: Dtype,
    pub big_endian: bool,
    /// Column-major data (`fortran_order: True`).
    pub fortran: bool,
    pub shape: Vec<usize>,
    /// Number of elements (1 for a scalar).
    pub len: usize,
    /// Bytes of data the header declares: `len` times the element size.
    pub data_bytes: u64,
    /// Bytes from the start of the file to the first element.
    pub data_offset: u64,
}

impl Header {
    /// How the shape reads in messages: `(1000000, 1000000) float32`.
    fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let name = match self.dtype {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::U16 => "uint16",
            Dtype::I16 => "int16",
            Dtype::U32 => "uint32",
            Dtype::I32 => "int32",
            Dtype::U64 => "uint64",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        };
        match dims.len() {
            1 => format!("({},) {name}", dims[0]),
            _ => format!("({}) {name}", dims.join(", ")),
        }
    }
}

/// Reads and checks the header at the start of `r`, leaving `r` at the first element.
pub fn read_header(r: &mut impl Read, part: &str) -> Result<Header, Error> {
    let bad = |m: String| Error::invalid(part, m);
    let mut lead = [0u8; 8];
    if read_full(r, &mut lead)? < 8 || &lead[..6] != b"\x93NUMPY" {
        return Err(bad("is not an .npy file (bad magic string)".into()));
    }
    let (len_bytes, prefix) = match lead[6] {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => return Err(bad(format!(".npy format version {v} is not supported"))),
    };
    let mut raw_len = [0u8; 4];
    if read_full(r, &mut raw_len[..len_bytes])? < len_bytes {
        return Err(bad("the .npy header is cut short".into()));
    }
    let header_len = u32::from_le_bytes(raw_len) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "its .npy header is {header_len} bytes, more than the {MAX_HEADER_BYTES} allowed"
        )));
    }
    let mut text = vec![0u8; header_len];
    if read_full(r, &mut text)? < header_len {
        return Err(bad("the .npy header is cut short".into()));
    }
    let text = std::str::from_utf8(&text).map_err(|_| bad("the .npy header is not text".into()))?;
    let (descr, fortran, shape) =
        parse_dict(text).map_err(|m| bad(format!("the .npy header is not understood: {m}")))?;
    let (order, code) = descr.split_at(descr.len().min(1));
    let dtype = Dtype::from_code(code).filter(|_| matches!(order, "<" | ">" | "|" | "="));
    let Some(dtype) = dtype else {
        return Err(bad(format!(
            "has dtype {descr:?}; use float32/64, (u)int8..64 or bool"
        )));
    };
    let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let data_bytes = len.and_then(|n| (n as u64).checked_mul(dtype.size() as u64));
    let (Some(len), Some(data_bytes)) = (len, data_bytes) else {
        return Err(bad(format!("declares an impossible shape {shape:?}")));
    };
    Ok(Header {
        dtype,
        big_endian: order == ">" && dtype.size() > 1,
        fortran,
        shape,
        len,
        data_bytes,
        data_offset: (prefix + header_len) as u64,
    })
}

/// Parses the header's Python dict literal: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_dict(text: &str) -> Result<(String, bool, Vec<usize>), String> {
    let mut p = Lit {
        s: text.as_bytes(),
        i: 0,
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        if p.peek() == Some(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unknown key {other:?}")),
        }
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {}
            _ => return Err("expected , or }".into()),
        }
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        _ => Err("descr, fortran_order and shape are required".into()),
    }
}

/// A cursor over a Python literal.
struct Lit<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lit<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().filter(|&c| c == b'\'' || c == b'"');
        let Some(quote) = quote else {
            return Err(format!("expected a string at byte {}", self.i));
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or("unterminated string")?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.peek();
        for (word, value) in [("True", true), ("False", false)] {
            if self.s[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            match self.peek() {
                Some(b')') => {
                    self.i += 1;
                    return Ok(dims);
                }
                Some(c) if c.is_ascii_digit() => {
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    let digits = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII digits");
                    dims.push(
                        digits
                            .parse::<usize>()
                            .map_err(|_| format!("dimension {digits} is too large"))?,
                    );
                    // NumPy on Python 2 wrote long integers as `3L`.
                    if self.s.get(self.i) == Some(&b'L') {
                        self.i += 1;
                    }
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b')') => {}
                        _ => return Err("expected , or ) in the shape".into()),
                    }
                }
                _ => return Err(format!("expected a dimension at byte {}", self.i)),
            }
        }
    }
}

pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How many bytes of data follow a header, as far as can be known before reading them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Present {
    /// Exactly this many (a plain file, or a stored zip entry).
    Exactly(u64),
    /// A deflate stream of this many compressed bytes.
    Deflated(u64),
}

/// Compares what `declared` data bytes need with what is `present`, before anything is allocated.
pub(crate) fn check_present(part: &str, what: &str, declared: u64, present: Present) -> Result<(), Error> {
    match present {
        Present::Exactly(n) if n < declared => Err(Error::invalid(
            part,
            format!("{what} declares {declared} bytes of data but holds only {n}"),
        )),
        Present::Exactly(n) if n > declared => Err(Error::invalid(
            part,
            format!(
                "{what} declares {declared} bytes of data but holds {n}; the extra bytes are not part of it"
            ),
        )),
        Present::Deflated(n) if declared > n.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024) => {
            Err(Error::invalid(
                part,
                format!(
                    "{what} declares {declared} bytes of data, more than its {n} compressed bytes can hold"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// A value type arrays are decoded into.
pub(crate) trait Value: Copy + Default {
    fn from_f64(v: f64) -> Self;
}

impl Value for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Value for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Value for i64 {
    fn from_f64(v: f64) -> Self {
        v as i64
    }
}

impl Value for u8 {
    fn from_f64(v: f64) -> Self {
        v as u8
    }
}

/// Streams the `h.len` elements after the header into a new C-order vector, converting each.
/// `what` names the array in errors; a stream that ends early is an error.
pub(crate) fn read_values<T: Value>(
    r: &mut impl Read,
    h: &Header,
    part: &str,
    what: &str,
) -> Result<Vec<T>, Error> {
    let size = h.dtype.size();
    // Zeroed allocations come from fresh pages, which only become resident as values are written.
    let mut out = vec![T::default(); h.len];
    let mut buf = vec![0u8; CHUNK - CHUNK % size];
    let mut fortran = (h.fortran && h.shape.len() > 1).then(|| FortranOrder::new(&h.shape));
    let mut done = 0;
    while done < h.len {
        let want = ((h.len - done) * size).min(buf.len());
        let got = read_full(r, &mut buf[..want])?;
        if got < want {
            return Err(Error::invalid(
                part,
                format!(
                    "{what} ends after {} of the {} bytes of data its header declares",
                    done * size + got,
                    h.data_bytes
                ),
            ));
        }
        let count = want / size;
        match fortran.as_mut() {
            None => decode_into(h.dtype, h.big_endian, &buf[..want], &mut out[done..done + count]),
            Some(f) => {
                for c in buf[..want].chunks_exact(size) {
                    out[f.next_index()] = T::from_f64(h.dtype.get(c, h.big_endian));
                }
            }
        }
        done += count;
    }
    let mut extra = [0u8; 1];
    if read_full(r, &mut extra)? > 0 {
        return Err(Error::invalid(
            part,
            format!(
                "{what} holds more than the {} bytes of data its header declares",
                h.data_bytes
            ),
        ));
    }
    Ok(out)
}

/// Converts whole elements of `bytes` into `out`, one tight loop per element type.
fn decode_into<T: Value>(dtype: Dtype, big_endian: bool, bytes: &[u8], out: &mut [T]) {
    macro_rules! run {
        ($t:ty, $n:literal) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                let b: [u8; $n] = c.try_into().expect("a whole element");
                let v = if big_endian {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                };
                *o = T::from_f64(v as f64);
            }
        };
    }
    match dtype {
        Dtype::Bool => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = T::from_f64(f64::from(u8::from(b != 0)));
            }
        }
        Dtype::U8 => run!(u8, 1),
        Dtype::I8 => run!(i8, 1),
        Dtype::U16 => run!(u16, 2),
        Dtype::I16 => run!(i16, 2),
        Dtype::U32 => run!(u32, 4),
        Dtype::I32 => run!(i32, 4),
        Dtype::U64 => run!(u64, 8),
        Dtype::I64 => run!(i64, 8),
        Dtype::F32 => run!(f32, 4),
        Dtype::F64 => run!(f64, 8),
    }
}

/// Streams the bytes of a `uint8` array into a vector as they are.
pub(crate) fn read_bytes(r: &mut impl Read, h: &Header, part: &str, what: &str) -> Result<Vec<u8>, Error> {
    if h.fortran && h.shape.len() > 1 {
        return read_values(r, h, part, what);
    }
    let mut out = vec![0u8; h.len];
    let got = read_full(r, &mut out)?;
    if got < h.len {
        return Err(Error::invalid(
            part,
            format!(
                "{what} ends after {got} of the {} bytes of data its header declares",
                h.data_bytes
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if read_full(r, &mut extra)? > 0 {
        return Err(Error::invalid(
            part,
            format!(
                "{what} holds more than the {} bytes of data its header declares",
                h.data_bytes
            ),
        ));
    }
    Ok(out)
}

/// Walks a column-major array's elements, giving each one's row-major position.
struct FortranOrder {
    idx: Vec<usize>,
    shape: Vec<usize>,
    strides: Vec<usize>,
    pos: usize,
}

impl FortranOrder {
    fn new(shape: &[usize]) -> FortranOrder {
        let mut strides = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        FortranOrder {
            idx: vec![0; shape.len()],
            shape: shape.to_vec(),
            strides,
            pos: 0,
        }
    }

    /// The row-major position of the next element in column-major order.
    fn next_index(&mut self) -> usize {
        let here = self.pos;
        for d in 0..self.idx.len() {
            self.idx[d] += 1;
            self.pos += self.strides[d];
            if self.idx[d] < self.shape[d] {
                break;
            }
            self.pos -= self.strides[d] * self.idx[d];
            self.idx[d] = 0;
        }
        here
    }
}

/// What one part holds once read: features (first axis = samples) or labels.
enum Decoded {
    Features(Features, Vec<usize>),
    Labels(RawLabels),
}

/// Reads one array (positioned after its header) as features or labels, after checking its declared
/// size against what is `present` and claiming it from `budget`.
fn read_array(
    r: &mut impl Read,
    h: &Header,
    present: Present,
    budget: &mut Budget,
    part: &str,
    what: &str,
    as_labels: bool,
) -> Result<Decoded, Error> {
    let desc = format!("{what} {}", h.describe());
    check_present(part, &desc, h.data_bytes, present)?;
    if h.shape.is_empty() {
        return Err(Error::invalid(
            part,
            format!("{what} must have a sample axis first, not be a scalar"),
        ));
    }
    if as_labels {
        budget.claim(part, &desc, h.len as u64 * 8)?;
        let labels = if h.dtype.is_float() {
            let v: Vec<f64> = read_values(r, h, part, what)?;
            let n = h.shape[0];
            let cols: usize = h.shape[1..].iter().product();
            if h.shape.len() > 2 {
                return Err(Error::invalid(
                    part,
                    format!(
                        "labels must be 1- or 2-dimensional, not {}-dimensional",
                        h.shape.len()
                    ),
                ));
            }
            RawLabels::Floats(Array2::from_shape_vec((n, cols), v).expect("shape matches the count"))
        } else {
            let v: Vec<i64> = read_values(r, h, part, what)?;
            match h.shape.len() {
                1 => RawLabels::Ints(v),
                2 if h.shape[1] == 1 => RawLabels::Ints(v),
                2 => RawLabels::Floats(
                    Array2::from_shape_vec(
                        (h.shape[0], h.shape[1]),
                        v.into_iter().map(|l| l as f64).collect(),
                    )
                    .expect("shape matches the count"),
                ),
                d => {
                    return Err(Error::invalid(
                        part,
                        format!("labels must be 1- or 2-dimensional, not {d}-dimensional"),
                    ));
                }
            }
        };
        return Ok(Decoded::Labels(labels));
    }
    let n = h.shape[0];
    let sample_shape: Vec<usize> = if h.shape.len() == 1 {
        vec![1]
    } else {
        h.shape[1..].to_vec()
    };
    let features = sample_shape.iter().product::<usize>();
    let x = if matches!(h.dtype, Dtype::U8 | Dtype::Bool) {
        budget.claim(part, &desc, h.len as u64)?;
        let v = read_bytes(r, h, part, what)?;
        let v = if h.dtype == Dtype::Bool {
            v.into_iter().map(|b| u8::from(b != 0)).collect()
        } else {
            v
        };
        Features::U8(Array2::from_shape_vec((n, features), v).expect("shape matches the count"))
    } else {
        budget.claim(part, &desc, h.len as u64 * 4)?;
        let v: Vec<f32> = read_values(r, h, part, what)?;
        Features::F32(Array2::from_shape_vec((n, features), v).expect("shape matches the count"))
    };
    Ok(Decoded::Features(x, sample_shape))
}

fn read_npy_file(path: &Path, budget: &mut Budget, part: &str, as_labels: bool) -> Result<Decoded, Error> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let h = read_header(&mut r, part)?;
    let present = Present::Exactly(size.saturating_sub(h.data_offset));
    read_array(&mut r, &h, present, budget, part, "the array", as_labels)
}

/// Loads `x` and `y` from two `.npy` files.
pub fn load_pair(
    x: &Path,
    y: &Path,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
    budget: &mut Budget,
) -> Result<Dataset, Error> {
    let Decoded::Features(xa, sample_shape) = read_npy_file(x, budget, "x", false)? else {
        unreachable!("read as features")
    };
    let Decoded::Labels(ya) = read_npy_file(y, budget, "y", true)? else {
        unreachable!("read as labels")
    };
    Dataset::new(xa, input_shape.unwrap_or(sample_shape), ya, task, "x", "y")
}

/// Loads arrays `x` and `y` from an `.npz` archive (stored or deflated members `x.npy`, `y.npy`).
pub fn load_npz(
    path: &Path,
    part: &str,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
    budget: &mut Budget,
) -> Result<Dataset, Error> {
    let mut file = File::open(path)?;
    check_zip_directory(&mut file, part)?;
    file.seek(SeekFrom::Start(0))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::invalid(part, format!("is not a readable .npz archive: {e}")))?;
    let Decoded::Features(xa, sample_shape) = read_member(&mut zip, "x", budget, part, false)? else {
        unreachable!("read as features")
    };
    let Decoded::Labels(ya) = read_member(&mut zip, "y", budget, part, true)? else {
        unreachable!("read as labels")
    };
    Dataset::new(xa, input_shape.unwrap_or(sample_shape), ya, task, part, part)
}

fn read_member(
    zip: &mut zip::ZipArchive<BufReader<File>>,
    name: &str,
    budget: &mut Budget,
    part: &str,
    as_labels: bool,
) -> Result<Decoded, Error> {
    let member = format!("{name}.npy");
    let index = zip
        .index_for_name(&member)
        .or_else(|| zip.index_for_name(name))
        .ok_or_else(|| Error::invalid(part, format!("the archive has no array {name:?}")))?;
    let entry = zip
        .by_index(index)
        .map_err(|e| Error::invalid(part, format!("array {name:?} is unreadable: {e}")))?;
    let (size, compressed) = (entry.size(), entry.compressed_size());
    let stored = entry.compression() == zip::CompressionMethod::Stored;
    let what = format!("array {name:?}");
    // The entry's own sizes bound what may be inflated, whatever its npy header says.
    check_present(
        part,
        &format!("{what} (zip entry)"),
        size,
        if stored {
            Present::Exactly(compressed)
        } else {
            Present::Deflated(compressed)
        },
    )?;
    let mut r = ZipRead {
        inner: entry.take(size.saturating_add(1)),
        part,
    };
    let h = read_header(&mut r, part)?;
    let present = Present::Exactly(size.saturating_sub(h.data_offset));
    read_array(&mut r, &h, present, budget, part, &what, as_labels)
}

/// A zip entry reader whose failures (corrupt deflate data, a CRC mismatch) are problems with the
/// upload, not server errors.
struct ZipRead<'a, R: Read> {
    inner: R,
    part: &'a str,
}

impl<R: Read> Read for ZipRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| CorruptPart::io(self.part, format!("the archive is corrupt ({e})")))
    }
}

/// The most central-directory bytes an archive may have: an `.npz` lists a few arrays, while a
/// hostile archive listing millions of entries would make the reader allocate for each.
const MAX_ZIP_DIRECTORY: u64 = 1 << 20;

/// Reads the end-of-central-directory record (and its zip64 form) and refuses directories larger than
/// [`MAX_ZIP_DIRECTORY`], before the zip reader allocates anything for them.
fn check_zip_directory(file: &mut File, part: &str) -> Result<(), Error> {
    let len = file.metadata()?.len();
    let tail_len = len.min(22 + 65_535 + 20);
    file.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail)?;
    let Some(eocd) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(b"PK\x05\x06"))
    else {
        return Err(Error::invalid(
            part,
            "is not a readable .npz archive: no end of central directory",
        ));
    };
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as u64;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let mut entries = u16_at(&tail, eocd + 10);
    let mut dir_size = u32_at(&tail, eocd + 12);
    if (entries == 0xffff || dir_size == 0xffff_ffff)
        && eocd >= 20
        && tail[eocd - 20..].starts_with(b"PK\x06\x07")
    {
        let at = u64_at(&tail, eocd - 20 + 8);
        if at.checked_add(56).is_some_and(|end| end <= len) {
            let mut rec = [0u8; 56];
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut rec)?;
            if rec.starts_with(b"PK\x06\x06") {
                entries = u64_at(&rec, 32);
                dir_size = u64_at(&rec, 40);
            }
        }
    }
    if dir_size > MAX_ZIP_DIRECTORY || entries > MAX_ZIP_DIRECTORY / 46 {
        return Err(Error::invalid(
            part,
            format!(
                "the archive lists {entries} entries in {dir_size} bytes; an .npz holds arrays x and y \
                 (at most {MAX_ZIP_DIRECTORY} bytes of entries)"
            ),
        ));
    }
    Ok(())
}

/// Writes a version 1.0 header for a little-endian C-order array of `dtype` and `shape`; the caller
/// writes the elements' bytes after it. Returns the header's length.
pub fn write_header(w: &mut impl Write, dtype: Dtype, shape: &[usize]) -> std::io::Result<u64> {
    let order = if dtype.size() == 1 { '|' } else { '<' };
    let dims = match shape {
        [d] => format!("{d},"),
        _ => shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
    };
    let mut header = format!(
        "{{'descr': '{order}{}', 'fortran_order': False, 'shape': ({dims}), }}",
        dtype.code()
    );
    // NumPy pads the header with spaces and a newline so the data starts 64-byte aligned.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len())
        .map_err(|_| std::io::Error::other("an .npy header longer than 65535 bytes"))?;
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&header_len.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    Ok(10 + header.len() as u64)
}

/// Writes float32 values as little-endian bytes, a chunk at a time (no copy of the whole array).
pub fn write_f32s(w: &mut impl Write, values: impl IntoIterator<Item = f32>) -> std::io::Result<u64> {
    let mut buf = Vec::with_capacity(CHUNK);
    let mut written = 0;
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
        if buf.len() == CHUNK {
            w.write_all(&buf)?;
            written += buf.len() as u64;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    Ok(written + buf.len() as u64)
}

/// Writes uint32 values as little-endian bytes, a chunk at a time.
pub fn write_u32s(w: &mut impl Write, values: impl IntoIterator<Item = u32>) -> std::io::Result<u64> {
    write_f32s(w, values.into_iter().map(f32::from_bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let header = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn headers_parse_with_any_spacing_and_python_2_longs() {
        let bytes = npy("<i8", "(3L, 4L)", false, &[]);
        let h = read_header(&mut &bytes[..], "x").unwrap();
        assert_eq!(
            (h.dtype, h.shape.clone(), h.len, h.data_bytes),
            (Dtype::I64, vec![3, 4], 12, 96)
        );
        let bytes = npy("|u1", "()", false, &[]);
        assert_eq!(read_header(&mut &bytes[..], "x").unwrap().len, 1);
        let bytes = npy("<c8", "(2,)", false, &[]);
        let err = read_header(&mut &bytes[..], "x").unwrap_err().to_string();
        assert!(err.contains("has dtype \"<c8\""), "{err}");
        let bytes = npy("|O", "(2,)", false, &[]);
        assert!(
            read_header(&mut &bytes[..], "x").is_err(),
            "object arrays are pickles"
        );
    }

    #[test]
    fn a_shape_whose_size_overflows_is_refused() {
        let bytes = npy("<f8", "(4294967296, 4294967296, 4294967296)", false, &[]);
        let err = read_header(&mut &bytes[..], "x").unwrap_err().to_string();
        assert!(err.contains("impossible shape"), "{err}");
    }

    #[test]
    fn fortran_order_arrays_come_out_in_row_major_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let data: Vec<u8> = [1i16, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = npy("<i2", "(2, 3)", true, &data);
        let mut r = &bytes[..];
        let h = read_header(&mut r, "x").unwrap();
        let v: Vec<f32> = read_values(&mut r, &h, "x", "the array").unwrap();
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn big_endian_values_are_swapped() {
        let data: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = npy(">f8", "(2,)", false, &data);
        let mut r = &bytes[..];
        let h = read_header(&mut r, "x").unwrap();
        let v: Vec<f64> = read_values(&mut r, &h, "x", "the array").unwrap();
        assert_eq!(v, [1.5, -2.0]);
    }

    #[test]
    fn written_arrays_read_back_and_numpy_alignment_holds() {
        let mut out = Vec::new();
        write_header(&mut out, Dtype::U8, &[2, 3]).unwrap();
        out.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let mut r = &out[..];
        let h = read_header(&mut r, "x").unwrap();
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!((h.dtype, h.shape.clone()), (Dtype::U8, vec![2, 3]));
        assert_eq!(read_bytes(&mut r, &h, "x", "x").unwrap(), [1, 2, 3, 4, 5, 6]);

        let mut out = Vec::new();
        write_header(&mut out, Dtype::F32, &[3]).unwrap();
        write_f32s(&mut out, [0.5, -1.0, 3.25]).unwrap();
        let mut r = &out[..];
        let h = read_header(&mut r, "y").unwrap();
        assert_eq!(h.shape, [3]);
        let v: Vec<f32> = read_values(&mut r, &h, "y", "y").unwrap();
        assert_eq!(v, [0.5, -1.0, 3.25]);
    }

    #[test]
    fn declared_sizes_are_compared_with_what_is_present() {
        assert!(check_present("x", "a", 10, Present::Exactly(10)).is_ok());
        let short = check_present("x", "the array", 4_000_000_000_000, Present::Exactly(208)).unwrap_err();
        assert!(short.to_string().contains("holds only 208"), "{short}");
        assert!(check_present("x", "a", 10, Present::Exactly(11)).is_err());
        assert!(check_present("x", "a", 1_032_000, Present::Deflated(1000)).is_ok());
        assert!(check_present("x", "a", 10_000_000, Present::Deflated(1000)).is_err());
    }
}
