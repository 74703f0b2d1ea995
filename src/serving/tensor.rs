//! Element types of the binary tensors predictions accept (KServe v2 `datatype`s, NumPy `descr`s)
//! and their conversion from little-endian bytes into the `f32` values the engine computes with.

/// A numeric element type; every one converts to `f32` (integers above 2^24 round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
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

/// Every type, for error messages listing what is accepted.
pub const ALL: [Dtype; 10] = [
    Dtype::F32,
    Dtype::F64,
    Dtype::U8,
    Dtype::I8,
    Dtype::U16,
    Dtype::I16,
    Dtype::U32,
    Dtype::I32,
    Dtype::U64,
    Dtype::I64,
];

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The Open Inference Protocol name (`FP32`, `UINT8`, ...).
    pub fn kserve_name(self) -> &'static str {
        match self {
            Dtype::U8 => "UINT8",
            Dtype::I8 => "INT8",
            Dtype::U16 => "UINT16",
            Dtype::I16 => "INT16",
            Dtype::U32 => "UINT32",
            Dtype::I32 => "INT32",
            Dtype::U64 => "UINT64",
            Dtype::I64 => "INT64",
            Dtype::F32 => "FP32",
            Dtype::F64 => "FP64",
        }
    }

    pub fn from_kserve(name: &str) -> Option<Dtype> {
        ALL.into_iter().find(|d| d.kserve_name() == name)
    }

    /// The NumPy type string for little-endian data (`<f4`, `|u1`, ...).
    pub fn npy_descr(self) -> &'static str {
        match self {
            Dtype::U8 => "|u1",
            Dtype::I8 => "|i1",
            Dtype::U16 => "<u2",
            Dtype::I16 => "<i2",
            Dtype::U32 => "<u4",
            Dtype::I32 => "<i4",
            Dtype::U64 => "<u8",
            Dtype::I64 => "<i8",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }

    /// Reads a NumPy `descr`; one-byte types may carry `|`, `<` or no byte order, wider ones must
    /// be little-endian (`<`).
    pub fn from_npy(descr: &str) -> Option<Dtype> {
        ALL.into_iter().find(|d| {
            let want = d.npy_descr();
            descr == want || (d.size() == 1 && (descr == &want[1..] || descr == format!("<{}", &want[1..])))
        })
    }

    /// Whether the type holds whole numbers only (JSON values for it must be integers in range).
    pub fn is_integer(self) -> bool {
        !matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// The range of an integer type, as `f64` bounds (exact for every type up to 32 bits).
    pub fn integer_range(self) -> Option<(f64, f64)> {
        Some(match self {
            Dtype::U8 => (0.0, u8::MAX as f64),
            Dtype::I8 => (i8::MIN as f64, i8::MAX as f64),
            Dtype::U16 => (0.0, u16::MAX as f64),
            Dtype::I16 => (i16::MIN as f64, i16::MAX as f64),
            Dtype::U32 => (0.0, u32::MAX as f64),
            Dtype::I32 => (i32::MIN as f64, i32::MAX as f64),
            Dtype::U64 => (0.0, u64::MAX as f64),
            Dtype::I64 => (i64::MIN as f64, i64::MAX as f64),
            Dtype::F32 | Dtype::F64 => return None,
        })
    }

    /// Converts little-endian elements into `out`.
    ///
    /// # Shapes
    /// `bytes.len() == out.len() * self.size()`; panics otherwise (callers check sizes first).
    pub fn decode_into(self, bytes: &[u8], out: &mut [f32]) {
        assert_eq!(bytes.len(), out.len() * self.size(), "element count");
        macro_rules! conv {
            ($t:ty, $n:literal) => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                    *o = <$t>::from_le_bytes(c.try_into().expect("chunk size")) as f32;
                }
            };
        }
        match self {
            Dtype::U8 => out.iter_mut().zip(bytes).for_each(|(o, &b)| *o = b as f32),
            Dtype::I8 => out.iter_mut().zip(bytes).for_each(|(o, &b)| *o = b as i8 as f32),
            Dtype::U16 => conv!(u16, 2),
            Dtype::I16 => conv!(i16, 2),
            Dtype::U32 => conv!(u32, 4),
            Dtype::I32 => conv!(i32, 4),
            Dtype::U64 => conv!(u64, 8),
            Dtype::I64 => conv!(i64, 8),
            Dtype::F32 => conv!(f32, 4),
            Dtype::F64 => conv!(f64, 8),
        }
    }
}

/// Every accepted type's protocol name, for error messages.
pub fn kserve_names() -> String {
    ALL.map(Dtype::kserve_name).join(", ")
}

/// `f32` values as little-endian bytes.
pub fn f32_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_decodes_its_little_endian_bytes() {
        let mut out = [0.0f32; 2];
        Dtype::U8.decode_into(&[0, 255], &mut out);
        assert_eq!(out, [0.0, 255.0]);
        Dtype::I8.decode_into(&[0x80, 0x7f], &mut out);
        assert_eq!(out, [-128.0, 127.0]);
        Dtype::I16.decode_into(&[0x00, 0x80, 0x01, 0x00], &mut out);
        assert_eq!(out, [-32768.0, 1.0]);
        let f: Vec<u8> = [1.5f32, -0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
        Dtype::F32.decode_into(&f, &mut out);
        assert_eq!(out, [1.5, -0.25]);
        let d: Vec<u8> = [1e300f64, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        Dtype::F64.decode_into(&d, &mut out);
        assert_eq!(out, [f32::INFINITY, 2.5]);
        let i: Vec<u8> = [-3i64, 1 << 40].iter().flat_map(|v| v.to_le_bytes()).collect();
        Dtype::I64.decode_into(&i, &mut out);
        assert_eq!(out, [-3.0, (1u64 << 40) as f32]);
    }

    #[test]
    fn names_round_trip_and_byte_orders_are_checked() {
        for d in ALL {
            assert_eq!(Dtype::from_kserve(d.kserve_name()), Some(d));
            assert_eq!(Dtype::from_npy(d.npy_descr()), Some(d));
        }
        assert_eq!(Dtype::from_npy("u1"), Some(Dtype::U8));
        assert_eq!(Dtype::from_npy("<u1"), Some(Dtype::U8));
        assert_eq!(Dtype::from_npy(">f4"), None);
        assert_eq!(Dtype::from_npy("<f2"), None);
        assert_eq!(Dtype::from_kserve("FP16"), None);
        assert_eq!(f32_le_bytes(&[1.0]), 1.0f32.to_le_bytes());
    }
}
