//! `.npy` bodies for predictions: a strict reader of the header NumPy writes (`np.save`), whose
//! declared size is checked against the bytes present before anything is allocated, and the writer
//! of float32 answers.

use super::tensor::Dtype;

/// Why a body is not an `.npy` array fitd can read; the message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NpyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, NpyError> {
    Err(NpyError(msg.into()))
}

/// An array whose element bytes are borrowed from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Exactly `shape.product() * dtype.size()` bytes, C order, little-endian.
    pub data: &'a [u8],
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// NumPy itself refuses headers above this size (`numpy.lib.format`'s default `max_header_size`).
const MAX_HEADER: usize = 10_000;

/// Reads an `.npy` file held in memory (format versions 1, 2 and 3).
pub fn parse(bytes: &[u8]) -> Result<NpyArray<'_>, NpyError> {
    if !bytes.starts_with(MAGIC) {
        return err("not an .npy file: it does not start with \\x93NUMPY");
    }
    let (len_at, len_size) = match bytes.get(6) {
        Some(1) => (8, 2),
        Some(2 | 3) => (8, 4),
        Some(v) => return err(format!("unsupported .npy format version {v}")),
        None => return err("not an .npy file: truncated before the version"),
    };
    let Some(len_bytes) = bytes.get(len_at..len_at + len_size) else {
        return err("not an .npy file: truncated before the header length");
    };
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    let start = len_at + len_size;
    if header_len > MAX_HEADER {
        return err(format!(
            "the .npy header declares {header_len} bytes; at most {MAX_HEADER} are accepted"
        ));
    }
    let Some(header) = bytes.get(start..start + header_len) else {
        return err(format!(
            "the .npy header declares {header_len} bytes but the body ends before them"
        ));
    };
    let header = std::str::from_utf8(header).map_err(|_| NpyError("the .npy header is not text".into()))?;
    let dict = Header::parse(header)?;
    let dtype = Dtype::from_npy(&dict.descr).ok_or_else(|| {
        NpyError(format!(
            "dtype {:?} is not accepted; send little-endian float32 ('<f4') or uint8 ('|u1') \
             (also accepted: {})",
            dict.descr,
            super::tensor::ALL.map(Dtype::npy_descr).join(", ")
        ))
    })?;
    if dict.fortran_order {
        return err("Fortran-ordered arrays are not accepted; save np.ascontiguousarray(x)");
    }
    let data = &bytes[start + header_len..];
    let declared = dict
        .shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
    if declared != Some(data.len()) {
        return err(format!(
            "the .npy header declares shape {:?} of {} ({} bytes) but {} bytes of data follow",
            dict.shape,
            dict.descr,
            declared.map_or("more than fit in memory".to_string(), |d| d.to_string()),
            data.len()
        ));
    }
    Ok(NpyArray {
        dtype,
        shape: dict.shape,
        data,
    })
}

/// A float32 `.npy` file (format 1.0) of `shape` holding `values` in C order.
pub fn encode_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // The data starts at a multiple of 64 bytes, and the header ends with a newline, as NumPy writes.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The header dictionary: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl Header {
    fn parse(text: &str) -> Result<Header, NpyError> {
        let mut p = Scanner {
            s: text.as_bytes(),
            i: 0,
        };
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        p.ws();
        p.eat(b'{')?;
        loop {
            p.ws();
            if p.peek() == Some(b'}') {
                p.i += 1;
                break;
            }
            let key = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            match key.as_str() {
                "descr" => descr = Some(p.string()?),
                "fortran_order" => fortran = Some(p.boolean()?),
                "shape" => shape = Some(p.tuple()?),
                other => return err(format!("the .npy header has an unknown key {other:?}")),
            }
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {}
                _ => return p.fail(),
            }
        }
        p.ws();
        if p.i != p.s.len() {
            return p.fail();
        }
        match (descr, fortran, shape) {
            (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
                descr,
                fortran_order,
                shape,
            }),
            _ => err("the .npy header lacks one of 'descr', 'fortran_order' and 'shape'"),
        }
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn fail<T>(&self) -> Result<T, NpyError> {
        err(format!(
            "the .npy header is not a dictionary NumPy writes (at byte {})",
            self.i
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), NpyError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.fail()
        }
    }

    fn string(&mut self) -> Result<String, NpyError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return self.fail(),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == quote {
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(s);
            }
            if c == b'\\' {
                return self.fail();
            }
            self.i += 1;
        }
        self.fail()
    }

    fn boolean(&mut self) -> Result<bool, NpyError> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        self.fail()
    }

    fn tuple(&mut self) -> Result<Vec<usize>, NpyError> {
        self.eat(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(b')') => {
                    self.i += 1;
                    return Ok(dims);
                }
                Some(b'0'..=b'9') => {
                    let mut v: usize = 0;
                    while let Some(c @ b'0'..=b'9') = self.peek() {
                        v = v
                            .checked_mul(10)
                            .and_then(|v| v.checked_add((c - b'0') as usize))
                            .ok_or_else(|| NpyError("an .npy dimension is too large".into()))?;
                        self.i += 1;
                    }
                    // Python writes `3L` for longs in format 1.0 files from Python 2.
                    if self.peek() == Some(b'L') {
                        self.i += 1;
                    }
                    dims.push(v);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b')') => {}
                        _ => return self.fail(),
                    }
                }
                _ => return self.fail(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn what_numpy_writes_is_read_back() {
        let bytes = encode_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!((bytes.len() - 24) % 64, 0, "data aligned to 64 bytes");
        let a = parse(&bytes).unwrap();
        assert_eq!(a.dtype, Dtype::F32);
        assert_eq!(a.shape, vec![2, 3]);
        let mut v = [0.0f32; 6];
        a.dtype.decode_into(a.data, &mut v);
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let one = encode_f32(&[3], &[1.0, 2.0, 3.0]);
        assert_eq!(parse(&one).unwrap().shape, vec![3]);

        let u8s = file(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2), }\n",
            &[0, 1, 2, 3, 4, 5, 6, 255],
        );
        let a = parse(&u8s).unwrap();
        assert_eq!(
            (a.dtype, a.shape.clone(), a.data.len()),
            (Dtype::U8, vec![2, 2, 2], 8)
        );
        let scalar = file("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", &[0; 4]);
        assert_eq!(parse(&scalar).unwrap().shape, Vec::<usize>::new());
    }

    #[test]
    fn sizes_that_disagree_with_the_data_are_refused_before_allocating() {
        let huge = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }",
            &[0; 16],
        );
        let e = parse(&huge).unwrap_err().0;
        assert!(e.contains("(4000000000000 bytes) but 16 bytes"), "{e}");
        let overflow = file(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[],
        );
        assert!(parse(&overflow).unwrap_err().0.contains("more than fit"));
        let long_header = {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[2, 0]);
            b.extend_from_slice(&u32::MAX.to_le_bytes());
            b
        };
        assert!(parse(&long_header).unwrap_err().0.contains("at most 10000"));
        let cut = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        assert!(parse(&cut[..20]).unwrap_err().0.contains("ends before"));
    }

    #[test]
    fn other_layouts_and_malformed_headers_are_named() {
        let cases = [
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                "'<f4'",
            ),
            (
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                "not accepted",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }",
                "Fortran",
            ),
            ("{'descr': '<f4', 'shape': (1,), }", "lacks"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                "unknown key",
            ),
            (
                "{'descr': '<f4', 'fortran_order': Nope, 'shape': (1,), }",
                "not a dictionary",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                "not a dictionary",
            ),
            ("['<f4']", "not a dictionary"),
        ];
        for (header, needle) in cases {
            let e = parse(&file(header, &[0; 4])).unwrap_err().0;
            assert!(e.contains(needle), "{header}: {e}");
        }
        assert!(parse(b"PK\x03\x04").unwrap_err().0.contains("not an .npy"));
        assert!(parse(b"\x93NUMPY\x07\x00").unwrap_err().0.contains("version 7"));
    }
}
