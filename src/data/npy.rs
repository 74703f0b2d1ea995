//! NumPy `.npy` pairs (`x`, `y`) and `.npz` archives holding arrays `x` and `y`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{Array2, ArrayD, Ix1, Ix2, IxDyn};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt, ReadNpzError};

use super::{Dataset, Error, RawLabels, TaskHint};

/// Any array as read: floats for features, and labels keeping whether they were integers.
enum AnyArray {
    Float(ArrayD<f64>),
    Int(ArrayD<i64>),
}

enum Fail {
    WrongType,
    Other(String),
}

fn npy_fail(e: ReadNpyError) -> Fail {
    match e {
        ReadNpyError::WrongDescriptor(_) => Fail::WrongType,
        other => Fail::Other(other.to_string()),
    }
}

fn read_npy_file(path: &Path, part: &str) -> Result<AnyArray, Error> {
    macro_rules! one {
        ($t:ty) => {{
            let file = BufReader::new(File::open(path)?);
            match ArrayD::<$t>::read_npy(file).map_err(npy_fail) {
                Ok(a) => Some(a),
                Err(Fail::WrongType) => None,
                Err(Fail::Other(m)) => {
                    return Err(Error::invalid(part, format!("is not a readable .npy file: {m}")));
                }
            }
        }};
    }
    dispatch(part, |t| match t {
        Dtype::F32 => Ok(one!(f32).map(|a| AnyArray::Float(a.mapv(f64::from)))),
        Dtype::F64 => Ok(one!(f64).map(AnyArray::Float)),
        Dtype::U8 => Ok(one!(u8).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I8 => Ok(one!(i8).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::U16 => Ok(one!(u16).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I16 => Ok(one!(i16).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::U32 => Ok(one!(u32).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I32 => Ok(one!(i32).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I64 => Ok(one!(i64).map(AnyArray::Int)),
    })
}

fn read_npz_member(npz: &mut NpzReader<BufReader<File>>, name: &str, part: &str) -> Result<AnyArray, Error> {
    macro_rules! one {
        ($t:ty) => {{
            match npz.by_name::<ndarray::OwnedRepr<$t>, IxDyn>(name) {
                Ok(a) => Some(a),
                Err(ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => None,
                Err(ReadNpzError::Zip(_)) => {
                    return Err(Error::invalid(part, format!("the archive has no array {name:?}")));
                }
                Err(e) => return Err(Error::invalid(part, format!("array {name:?} is unreadable: {e}"))),
            }
        }};
    }
    dispatch(part, |t| match t {
        Dtype::F32 => Ok(one!(f32).map(|a| AnyArray::Float(a.mapv(f64::from)))),
        Dtype::F64 => Ok(one!(f64).map(AnyArray::Float)),
        Dtype::U8 => Ok(one!(u8).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I8 => Ok(one!(i8).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::U16 => Ok(one!(u16).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I16 => Ok(one!(i16).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::U32 => Ok(one!(u32).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I32 => Ok(one!(i32).map(|a| AnyArray::Int(a.mapv(i64::from)))),
        Dtype::I64 => Ok(one!(i64).map(AnyArray::Int)),
    })
}

#[derive(Clone, Copy)]
enum Dtype {
    F32,
    F64,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    I64,
}

fn dispatch(
    part: &str,
    mut f: impl FnMut(Dtype) -> Result<Option<AnyArray>, Error>,
) -> Result<AnyArray, Error> {
    use Dtype::*;
    for t in [F32, F64, U8, I64, I32, U16, I16, I8, U32] {
        if let Some(a) = f(t)? {
            return Ok(a);
        }
    }
    Err(Error::invalid(
        part,
        "has an unsupported dtype; use float32/64 or (u)int8..64",
    ))
}

/// Loads `x` and `y` from two `.npy` files.
pub fn load_pair(
    x: &Path,
    y: &Path,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
) -> Result<Dataset, Error> {
    let xa = read_npy_file(x, "x")?;
    let ya = read_npy_file(y, "y")?;
    assemble(xa, ya, input_shape, task, "x", "y")
}

/// Loads arrays `x` and `y` from an `.npz` archive.
pub fn load_npz(
    path: &Path,
    part: &str,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
) -> Result<Dataset, Error> {
    let mut npz = NpzReader::new(BufReader::new(File::open(path)?))
        .map_err(|e| Error::invalid(part, format!("is not a readable .npz archive: {e}")))?;
    let xa = read_npz_member(&mut npz, "x", part)?;
    let ya = read_npz_member(&mut npz, "y", part)?;
    assemble(xa, ya, input_shape, task, part, part)
}

fn assemble(
    xa: AnyArray,
    ya: AnyArray,
    input_shape: Option<Vec<usize>>,
    task: TaskHint,
    part_x: &str,
    part_y: &str,
) -> Result<Dataset, Error> {
    let x = match xa {
        AnyArray::Float(a) => a.mapv(|v| v as f32),
        AnyArray::Int(a) => a.mapv(|v| v as f32),
    };
    if x.ndim() == 0 {
        return Err(Error::invalid(
            part_x,
            "must have a sample axis first, not be a scalar",
        ));
    }
    let n = x.shape()[0];
    let sample_shape: Vec<usize> = if x.ndim() == 1 {
        vec![1]
    } else {
        x.shape()[1..].to_vec()
    };
    let features: usize = sample_shape.iter().product();
    let flat = x.as_standard_layout().into_owned();
    let x = flat
        .into_shape_with_order((n, features))
        .map_err(|e| Error::invalid(part_x, format!("cannot be flattened per sample: {e}")))?
        .into_dimensionality::<Ix2>()
        .map_err(|e| Error::invalid(part_x, e.to_string()))?;
    let labels = match ya {
        AnyArray::Int(a) => match a.ndim() {
            1 => RawLabels::Ints(a.into_dimensionality::<Ix1>().expect("1-D").to_vec()),
            2 if a.shape()[1] == 1 => RawLabels::Ints(a.iter().copied().collect()),
            _ => RawLabels::Floats(to_2d(a.mapv(|v| v as f64), part_y)?),
        },
        AnyArray::Float(a) => RawLabels::Floats(to_2d(a, part_y)?),
    };
    Dataset::new(
        x,
        input_shape.unwrap_or(sample_shape),
        labels,
        task,
        part_x,
        part_y,
    )
}

fn to_2d(a: ArrayD<f64>, part: &str) -> Result<Array2<f64>, Error> {
    match a.ndim() {
        1 => {
            let n = a.len();
            Ok(a.into_shape_with_order((n, 1))
                .expect("n values")
                .into_dimensionality::<Ix2>()
                .expect("2-D"))
        }
        2 => Ok(a.into_dimensionality::<Ix2>().expect("2-D")),
        d => Err(Error::invalid(
            part,
            format!("labels must be 1- or 2-dimensional, not {d}-dimensional"),
        )),
    }
}
