//! Principal component analysis: fitting on training inputs, projection and reconstruction.
//!
//! Used both by the `pca` layer (a fixed projection fitted when training starts) and by the server's
//! derived PCA datasets, so it works on plain `ArrayView2<f32>` and knows nothing of models.

use ndarray::{Array1, Array2, ArrayView2, Axis, linalg::general_mat_mul, s};

use super::error::{Error, Result};
use super::spec::PcaSize;

/// A fitted PCA: centre, principal axes and how much variance each explains.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Per-feature mean of the fitting data. Shape `(features,)`.
    pub mean: Array1<f32>,
    /// Principal axes as rows, by decreasing variance. Shape `(k, features)`.
    pub components: Array2<f32>,
    /// Fraction of the total variance explained by each kept component; length `k`.
    /// Over all `features` components it sums to 1.
    pub explained_variance_ratio: Vec<f64>,
}

/// Rows per chunk when accumulating the covariance, so large datasets never get a full f64 copy.
const CHUNK: usize = 1024;

impl Pca {
    /// Fits on the rows of `x`.
    ///
    /// # Shapes
    /// `x`: `(n_samples, features)`, `n_samples >= 2`. The result keeps `k` components, where `k` is
    /// given or is the fewest whose explained-variance ratios reach the requested fraction.
    pub fn fit(x: ArrayView2<f32>, size: PcaSize) -> Result<Pca> {
        let (n, d) = x.dim();
        if n < 2 {
            return Err(Error::Pca(format!("needs at least 2 samples to fit, got {n}")));
        }
        if d == 0 {
            return Err(Error::Pca("inputs have no features".into()));
        }
        match size {
            PcaSize::Components(k) if k == 0 || k > d => {
                return Err(Error::Pca(format!("n_components must be in 1..={d}, got {k}")));
            }
            PcaSize::Variance(v) if !(v.is_finite() && v > 0.0 && v <= 1.0) => {
                return Err(Error::Pca(format!("variance must be in (0, 1], got {v}")));
            }
            _ => {}
        }
        if let Some((pos, _)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "pca inputs",
                row: pos / d,
                col: pos % d,
            });
        }

        // Mean and covariance in f64: f32 sums over tens of thousands of rows lose the small components.
        let mut mean = Array1::<f64>::zeros(d);
        for row in x.rows() {
            mean.zip_mut_with(&row, |m, &v| *m += v as f64);
        }
        mean /= n as f64;
        let mut cov = Array2::<f64>::zeros((d, d));
        let mut chunk = Array2::<f64>::zeros((CHUNK.min(n), d));
        for start in (0..n).step_by(CHUNK) {
            let end = (start + CHUNK).min(n);
            let rows = end - start;
            let mut c = chunk.slice_mut(s![..rows, ..]);
            c.zip_mut_with(&x.slice(s![start..end, ..]), |o, &v| *o = v as f64);
            c -= &mean;
            general_mat_mul(1.0, &c.t(), &c, 1.0, &mut cov);
        }
        cov /= (n - 1) as f64;

        let m = nalgebra::DMatrix::from_row_slice(d, d, cov.as_slice().expect("standard layout"));
        let eig = nalgebra::SymmetricEigen::new(m);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        // Rounding can make null-space eigenvalues slightly negative; they explain no variance.
        let values: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect();
        let total: f64 = values.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return Err(Error::Pca("inputs have zero variance".into()));
        }
        let ratios: Vec<f64> = values.iter().map(|v| v / total).collect();
        let k = match size {
            PcaSize::Components(k) => k,
            PcaSize::Variance(v) => {
                let mut acc = 0.0;
                // Tolerance so that `variance: 1.0` is reached despite rounding in the ratios.
                ratios
                    .iter()
                    .position(|r| {
                        acc += r;
                        acc >= v - 1e-9
                    })
                    .map_or(d, |i| i + 1)
            }
        };
        let mut components = Array2::<f32>::zeros((k, d));
        for (row, &i) in order.iter().take(k).enumerate() {
            let col = eig.eigenvectors.column(i);
            // Eigenvector signs are arbitrary; fix them (largest entry positive, as scikit-learn does)
            // so that a seed and a dataset always give the same projection.
            let big = col
                .iter()
                .copied()
                .fold(0.0f64, |a, v| if v.abs() > a.abs() { v } else { a });
            let sign = if big < 0.0 { -1.0 } else { 1.0 };
            for (j, v) in col.iter().enumerate() {
                components[[row, j]] = (sign * v) as f32;
            }
        }
        Ok(Pca {
            mean: mean.mapv(|v| v as f32),
            components,
            explained_variance_ratio: ratios[..k].to_vec(),
        })
    }

    /// Number of kept components.
    pub fn n_components(&self) -> usize {
        self.components.nrows()
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.components.ncols()
    }

    /// Projects rows onto the principal axes.
    ///
    /// # Shapes
    /// `x`: `(n, features)` -> `(n, k)`. Panics if `x` has another feature count; callers check first
    /// (the `pca` layer does, via the model's input shape).
    pub fn transform(&self, x: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((x.nrows(), self.n_components()));
        self.transform_into(x, &self.shift(), out.view_mut());
        out
    }

    /// `mean . components^T`, subtracted after the projection so the inputs need no centred copy.
    ///
    /// # Shapes
    /// `(k,)`
    pub(crate) fn shift(&self) -> Array1<f32> {
        self.components.dot(&self.mean)
    }

    /// [`Pca::transform`] into a buffer the caller owns, given [`Pca::shift`].
    pub(crate) fn transform_into(
        &self,
        x: ArrayView2<f32>,
        shift: &Array1<f32>,
        mut out: ndarray::ArrayViewMut2<f32>,
    ) {
        general_mat_mul(1.0, &x, &self.components.t(), 0.0, &mut out);
        out -= shift;
    }

    /// Maps projected rows back to the input space (the reconstruction).
    ///
    /// # Shapes
    /// `z`: `(n, k)` -> `(n, features)`
    pub fn inverse_transform(&self, z: ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((z.nrows(), self.n_features()));
        general_mat_mul(1.0, &z, &self.components, 0.0, &mut out);
        out += &self.mean.view().insert_axis(Axis(0));
        out
    }
}
