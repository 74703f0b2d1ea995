//! Dataset arrays on disk, the only code that touches their files: one directory per dataset
//! (`datasets/<id>/`) of `.npy` files in the dtype the data came in (`x.npy` uint8 or float32,
//! `y.npy` uint32 classes or float32 targets, extra float32 arrays such as `pca_mean.npy`).
//!
//! A dataset is written to `tmp/<id>.partial/`, synced and renamed into place, so a reader never
//! sees half an array; files written as float32 by earlier versions read the same way.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayD, IxDyn};

use super::Error;
use crate::data::npy::{self, Dtype, Header};
use crate::data::{Dataset, Features, Labels};
use crate::domain::dataset::DatasetKind;

/// The dataset array files under a store's data directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct ArrayFiles {
    datasets: PathBuf,
    tmp: PathBuf,
}

impl ArrayFiles {
    /// The files under `data_dir` (`datasets/` and the scratch directory `tmp/`).
    pub fn new(data_dir: &Path) -> ArrayFiles {
        ArrayFiles {
            datasets: data_dir.join("datasets"),
            tmp: data_dir.join("tmp"),
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.datasets.join(id)
    }

    /// Writes a dataset's arrays (and `extra` float32 arrays, by file stem) and moves them into place;
    /// on failure nothing remains. Returns the bytes written.
    pub fn write(&self, id: &str, data: &Dataset, extra: &[(String, ArrayD<f32>)]) -> Result<u64, Error> {
        let scratch = self.tmp.join(format!("{id}.partial"));
        let result = write_dir(&scratch, data, extra).and_then(|size| {
            std::fs::rename(&scratch, self.dir(id))?;
            Ok(size)
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        result
    }

    /// Removes a dataset's files.
    pub fn remove(&self, id: &str) -> Result<(), Error> {
        Ok(std::fs::remove_dir_all(self.dir(id))?)
    }

    /// Reads the features, each file in one pass, keeping their stored dtype.
    pub fn read_features(&self, id: &str) -> Result<Features, Error> {
        let (mut r, h, name) = open(&self.dir(id), "x")?;
        let [n, f] = as_2d(&h, &name)?;
        match h.dtype {
            Dtype::U8 => {
                let v = npy::read_bytes(&mut r, &h, &name, "the array").map_err(corrupt)?;
                Ok(Features::U8(
                    Array2::from_shape_vec((n, f), v).expect("shape matches count"),
                ))
            }
            Dtype::F32 => {
                let v = npy::read_values::<f32>(&mut r, &h, &name, "the array").map_err(corrupt)?;
                Ok(Features::F32(
                    Array2::from_shape_vec((n, f), v).expect("shape matches count"),
                ))
            }
            other => Err(Error::Corrupt(format!("{name} holds {other:?} values"))),
        }
    }

    /// Reads the labels of a dataset of `kind`.
    pub fn read_labels(&self, id: &str, kind: DatasetKind) -> Result<Labels, Error> {
        let (mut r, h, name) = open(&self.dir(id), "y")?;
        match (kind, h.dtype, h.shape.as_slice()) {
            (DatasetKind::Classification, Dtype::U32, [n]) => {
                let v = npy::read_values::<i64>(&mut r, &h, &name, "the array").map_err(corrupt)?;
                let v = v.into_iter().map(|c| c as u32).collect::<Vec<u32>>();
                debug_assert_eq!(v.len(), *n);
                Ok(Labels::Classes(Array1::from(v)))
            }
            (DatasetKind::Regression, Dtype::F32, [n, t]) => {
                let v = npy::read_values::<f32>(&mut r, &h, &name, "the array").map_err(corrupt)?;
                Ok(Labels::Targets(
                    Array2::from_shape_vec((*n, *t), v).expect("shape matches count"),
                ))
            }
            _ => Err(Error::Corrupt(format!(
                "{name} holds {:?} values of shape {:?}, not {} labels",
                h.dtype,
                h.shape,
                kind.as_str()
            ))),
        }
    }

    /// Reads an extra float32 array stored with a dataset (e.g. `pca_components`).
    pub fn read_extra(&self, id: &str, stem: &str) -> Result<ArrayD<f32>, Error> {
        let (mut r, h, name) = open(&self.dir(id), stem)?;
        if h.dtype != Dtype::F32 {
            return Err(Error::Corrupt(format!("{name} holds {:?} values", h.dtype)));
        }
        let v = npy::read_values::<f32>(&mut r, &h, &name, "the array").map_err(corrupt)?;
        Ok(ArrayD::from_shape_vec(IxDyn(&h.shape), v).expect("shape matches count"))
    }

    /// Row `index` of the features, as float32, read by seeking instead of loading the array.
    pub fn read_feature_row(&self, id: &str, index: usize) -> Result<Vec<f32>, Error> {
        let (mut r, h, name) = open(&self.dir(id), "x")?;
        let [n, f] = as_2d(&h, &name)?;
        if index >= n {
            return Err(Error::NotFound("sample"));
        }
        let size = h.dtype.size() as u64;
        r.seek(SeekFrom::Start(h.data_offset + index as u64 * f as u64 * size))?;
        let row = Header {
            shape: vec![f],
            len: f,
            data_bytes: f as u64 * size,
            ..h
        };
        npy::read_values::<f32>(&mut r.take(row.data_bytes), &row, &name, "the row").map_err(corrupt)
    }

    /// The label of row `index`: a class, or comma-separated regression targets.
    pub fn read_label(&self, id: &str, index: usize) -> Result<String, Error> {
        let (mut r, h, name) = open(&self.dir(id), "y")?;
        let width = h.shape.get(1).copied().unwrap_or(1);
        if h.shape.is_empty() || index >= h.shape[0] {
            return Err(Error::NotFound("sample"));
        }
        let size = h.dtype.size() as u64;
        r.seek(SeekFrom::Start(
            h.data_offset + index as u64 * width as u64 * size,
        ))?;
        let row = Header {
            shape: vec![width],
            len: width,
            data_bytes: width as u64 * size,
            ..h
        };
        let values =
            npy::read_values::<f64>(&mut r.take(row.data_bytes), &row, &name, "the row").map_err(corrupt)?;
        Ok(values
            .iter()
            .map(|&v| match row.dtype {
                Dtype::F32 => (v as f32).to_string(),
                _ => v.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","))
    }
}

/// A stored file that does not read back is corrupt storage, not a client's mistake.
fn corrupt(e: crate::data::Error) -> Error {
    match e {
        crate::data::Error::Invalid { part, message } => Error::Corrupt(format!("{part}: {message}")),
        crate::data::Error::Io(e) => Error::Io(e),
    }
}

/// Opens `<dir>/<stem>.npy` and reads its header, checking it against the file's size.
fn open(dir: &Path, stem: &str) -> Result<(BufReader<File>, Header, String), Error> {
    let name = format!("{stem}.npy");
    let file = File::open(dir.join(&name))?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let h = npy::read_header(&mut r, &name).map_err(corrupt)?;
    if size != h.data_offset + h.data_bytes {
        return Err(Error::Corrupt(format!(
            "{name} is {size} bytes; its header says {}",
            h.data_offset + h.data_bytes
        )));
    }
    Ok((r, h, name))
}

fn as_2d(h: &Header, name: &str) -> Result<[usize; 2], Error> {
    match h.shape.as_slice() {
        [n, f] => Ok([*n, *f]),
        other => Err(Error::Corrupt(format!("{name} has shape {other:?}, not 2-D"))),
    }
}

fn write_dir(dir: &Path, data: &Dataset, extra: &[(String, ArrayD<f32>)]) -> Result<u64, Error> {
    std::fs::create_dir_all(dir)?;
    let mut size = 0;
    let mut file = |stem: &str, f: &mut dyn FnMut(&mut BufWriter<File>) -> std::io::Result<u64>| {
        let mut w = BufWriter::with_capacity(1 << 16, File::create(dir.join(format!("{stem}.npy")))?);
        size += f(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        // The data must be on disk before the row that points at it is committed.
        file.sync_all()?;
        Ok::<(), Error>(())
    };
    let (n, width) = (data.x.nrows(), data.x.ncols());
    match &data.x {
        Features::U8(a) => file("x", &mut |w| {
            let header = npy::write_header(w, Dtype::U8, &[n, width])?;
            w.write_all(a.as_standard_layout().as_slice().expect("standard layout"))?;
            Ok(header + (n * width) as u64)
        })?,
        Features::F32(a) => file("x", &mut |w| {
            Ok(npy::write_header(w, Dtype::F32, &[n, width])? + npy::write_f32s(w, a.iter().copied())?)
        })?,
    }
    match &data.labels {
        Labels::Classes(y) => file("y", &mut |w| {
            Ok(npy::write_header(w, Dtype::U32, &[y.len()])? + npy::write_u32s(w, y.iter().copied())?)
        })?,
        Labels::Targets(y) => file("y", &mut |w| {
            Ok(npy::write_header(w, Dtype::F32, &[y.nrows(), y.ncols()])?
                + npy::write_f32s(w, y.iter().copied())?)
        })?,
    }
    for (stem, array) in extra {
        file(stem, &mut |w| {
            Ok(npy::write_header(w, Dtype::F32, array.shape())? + npy::write_f32s(w, array.iter().copied())?)
        })?;
    }
    Ok(size)
}
