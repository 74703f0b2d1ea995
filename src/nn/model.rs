//! The built network: layers with weights, Glorot initialisation, batched forward/backward into owned
//! buffers, predict, evaluate, and weights as named tensors.

use std::collections::HashMap;

use ndarray::{
    Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, ShapeBuilder, linalg::general_mat_mul, s,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use super::error::{Error, Result};
use super::kernels;
use super::loss::{Loss, Targets, batch_loss};
use super::optim::{Optimizer, OptimizerState, split_slots};
use super::pca::Pca;
use super::pool::{Pool, SendPtr, block};
use super::spec::{Activation, LayerKind, ModelConfig, PcaSize, Summary};

/// One layer at run time; the set is closed, so every `match` names each kind.
#[derive(Debug, Clone)]
pub(crate) enum Layer {
    Flatten,
    Dense {
        /// Shape `(inputs, units)`; `(0, units)` while its input width waits on a `pca` fit.
        kernel: Array2<f32>,
        bias: Option<Array1<f32>>,
        activation: Activation,
    },
    Dropout {
        rate: f32,
    },
    Rescaling {
        scale: f32,
        offset: f32,
    },
    Pca {
        size: PcaSize,
        /// The fitted projection and its precomputed [`Pca::shift`].
        fitted: Option<(Pca, Array1<f32>)>,
    },
}

/// A weight array with its Keras-style name, for saving and loading.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// `<layer name>.kernel`, `.bias`, `.mean`, `.components` or `.explained_variance_ratio`.
    pub name: String,
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Loss and accuracy over a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    /// `None` for regression losses.
    pub accuracy: Option<f64>,
}

/// A Sequential network with its weights. Cheap to share: `Send + Sync`, and `predict` takes `&self`.
#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    names: Vec<String>,
    pub(crate) layers: Vec<Layer>,
    input_dim: usize,
    seed: u64,
}

fn spec_errors(config: &ModelConfig) -> Result<()> {
    config
        .check(u64::MAX, &HashMap::new())
        .map(|_| ())
        .map_err(Error::InvalidSpec)
}

impl Model {
    /// Builds the network, with Glorot-uniform kernels and zero biases drawn from `seed`.
    ///
    /// Dense layers after a `pca` layer with a variance target get their weights once the PCA is
    /// fitted (when training starts), from the same seed.
    pub fn new(config: &ModelConfig, seed: u64) -> Result<Model> {
        spec_errors(config)?;
        let layers = config
            .layers
            .iter()
            .map(|l| match &l.kind {
                LayerKind::Flatten => Layer::Flatten,
                LayerKind::Dense {
                    units,
                    activation,
                    use_bias,
                } => Layer::Dense {
                    kernel: Array2::zeros((0, *units)),
                    bias: use_bias.then(|| Array1::zeros(*units)),
                    activation: *activation,
                },
                LayerKind::Dropout { rate } => Layer::Dropout { rate: *rate },
                LayerKind::Rescaling { scale, offset } => Layer::Rescaling {
                    scale: *scale,
                    offset: *offset,
                },
                LayerKind::Pca { size } => Layer::Pca {
                    size: *size,
                    fitted: None,
                },
            })
            .collect();
        let mut model = Model {
            config: config.clone(),
            names: config.layer_names(),
            layers,
            input_dim: config.input_shape.iter().product(),
            seed,
        };
        model.init_weights();
        Ok(model)
    }

    /// (Re)draws every dense layer whose input width is known, in layer order, from the model seed,
    /// so the weights depend only on the seed, not on when a `pca` fit made a width known.
    fn init_weights(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut width = Some(self.input_dim);
        for layer in &mut self.layers {
            match layer {
                Layer::Dense { kernel, bias, .. } => {
                    let units = kernel.ncols();
                    let Some(inputs) = width else { return };
                    let limit = (6.0 / (inputs + units) as f64).sqrt() as f32;
                    *kernel = Array2::from_shape_simple_fn((inputs, units), || {
                        let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
                        (2.0 * u - 1.0) * limit
                    });
                    if let Some(b) = bias {
                        b.fill(0.0);
                    }
                    width = Some(units);
                }
                Layer::Pca { size, fitted } => {
                    width = match (fitted, size) {
                        (Some((p, _)), _) => Some(p.n_components()),
                        (None, PcaSize::Components(k)) => Some(*k),
                        (None, PcaSize::Variance(_)) => None,
                    };
                }
                Layer::Flatten | Layer::Dropout { .. } | Layer::Rescaling { .. } => {}
            }
        }
    }

    /// The architecture this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Layer names as Keras gives them (`dense`, `dense_1`, ...).
    pub fn layer_names(&self) -> &[String] {
        &self.names
    }

    /// Features per input sample: the product of the input shape.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Output width, if known (it is not before a variance-target `pca` layer is fitted).
    pub fn output_dim(&self) -> Option<usize> {
        let mut width = Some(self.input_dim);
        for layer in &self.layers {
            width = match layer {
                Layer::Dense { kernel, .. } => Some(kernel.ncols()),
                Layer::Pca {
                    fitted: Some((p, _)), ..
                } => Some(p.n_components()),
                Layer::Pca {
                    size: PcaSize::Components(k),
                    ..
                } => Some(*k),
                Layer::Pca { .. } => None,
                Layer::Flatten | Layer::Dropout { .. } | Layer::Rescaling { .. } => width,
            };
        }
        width
    }

    /// The fitted projection of the `pca` layer called `name`.
    pub fn pca(&self, name: &str) -> Option<&Pca> {
        self.names.iter().zip(&self.layers).find_map(|(n, l)| match l {
            Layer::Pca {
                fitted: Some((p, _)), ..
            } if n == name => Some(p),
            _ => None,
        })
    }

    /// Keras's `model.summary()`, with the fitted sizes of `pca` layers.
    pub fn summary(&self) -> Summary {
        let fitted: HashMap<usize, usize> = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Layer::Pca {
                    fitted: Some((p, _)), ..
                } => Some((i, p.n_components())),
                _ => None,
            })
            .collect();
        self.config
            .check(u64::MAX, &fitted)
            .expect("the config was checked in Model::new and fitted sizes are within bounds")
    }

    /// Units and activation of the last layer if it is dense.
    pub(crate) fn last_dense(&self) -> Option<(usize, Activation)> {
        match self.layers.last() {
            Some(Layer::Dense {
                kernel, activation, ..
            }) => Some((kernel.ncols(), *activation)),
            _ => None,
        }
    }

    pub(crate) fn has_trainable(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::Dense { .. }))
    }

    fn check_ready(&self) -> Result<()> {
        for (name, layer) in self.names.iter().zip(&self.layers) {
            if let Layer::Pca { fitted: None, .. } = layer {
                return Err(Error::PcaNotFitted(name.clone()));
            }
        }
        Ok(())
    }

    /// Fits every not yet fitted `pca` layer on what reaches it when `x` is fed through the layers
    /// before it (inference mode), then draws the weights that were waiting on its width.
    ///
    /// # Shapes
    /// `x`: `(n_samples, input_dim)`
    pub(crate) fn fit_pcas(&mut self, x: ArrayView2<f32>) -> Result<()> {
        let mut refit = false;
        let mut cur: Option<Array2<f32>> = None;
        for i in 0..self.layers.len() {
            if let Layer::Pca { size, fitted: None } = &self.layers[i] {
                let input = cur.as_ref().map_or(x, |c| c.view());
                let p = Pca::fit(input, *size).map_err(|e| match e {
                    Error::Pca(m) => Error::Pca(format!("layer {}: {m}", self.names[i])),
                    other => other,
                })?;
                let shift = p.shift();
                if let Layer::Pca { fitted, .. } = &mut self.layers[i] {
                    *fitted = Some((p, shift));
                }
                refit = true;
                // Later layers' weights may have depended on this width.
                self.init_weights();
            }
            if self.layers[i + 1..]
                .iter()
                .any(|l| matches!(l, Layer::Pca { fitted: None, .. }))
            {
                let input = cur.as_ref().map_or(x, |c| c.view());
                cur = Some(self.layer_forward_alloc(i, input));
            } else {
                break;
            }
        }
        if refit {
            self.init_weights();
        }
        Ok(())
    }

    /// One layer in inference mode, allocating its output (used outside hot loops).
    fn layer_forward_alloc(&self, i: usize, x: ArrayView2<f32>) -> Array2<f32> {
        match &self.layers[i] {
            Layer::Flatten | Layer::Dropout { .. } => x.to_owned(),
            Layer::Rescaling { scale, offset } => x.mapv(|v| v * scale + offset),
            Layer::Pca { fitted, .. } => {
                let (p, shift) = fitted.as_ref().expect("fitted before use");
                let mut out = Array2::zeros((x.nrows(), p.n_components()));
                p.transform_into(x, shift, out.view_mut());
                out
            }
            Layer::Dense {
                kernel,
                bias,
                activation,
            } => {
                let mut out = Array2::zeros((x.nrows(), kernel.ncols()));
                dense_forward(
                    x,
                    kernel.view(),
                    bias.as_ref().map(|b| b.view()),
                    *activation,
                    out.view_mut(),
                );
                out
            }
        }
    }

    /// Checks that `x` has the model's width and only finite values.
    pub(crate) fn check_inputs(&self, x: ArrayView2<f32>, what: &'static str) -> Result<()> {
        self.check_width(x.ncols(), what)?;
        for (r, row) in x.rows().into_iter().enumerate() {
            if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite { what, row: r, col: c });
            }
        }
        Ok(())
    }

    /// Checks that inputs have the model's width.
    pub(crate) fn check_width(&self, cols: usize, what: &'static str) -> Result<()> {
        if cols != self.input_dim {
            return Err(Error::InputShape {
                what,
                expected: self.input_dim,
                got: cols,
            });
        }
        Ok(())
    }

    /// The network's outputs (dropout off). One row takes a path that skips zero inputs and never
    /// repacks the weights; more rows go through the batched GEMM path, 256 at a time.
    ///
    /// # Shapes
    /// `x`: `(n, input_dim)` -> `(n, output_units)`
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        self.check_ready()?;
        self.check_inputs(x, "inputs")?;
        let out_dim = self.output_dim().expect("known once every pca layer is fitted");
        if x.nrows() == 1 {
            let row = x.row(0);
            let out = match row.as_slice() {
                Some(r) => self.predict_row(r),
                None => self.predict_row(&row.to_vec()),
            };
            return Ok(Array2::from_shape_vec((1, out_dim), out).expect("output width"));
        }
        let mut result = Array2::zeros((x.nrows(), out_dim));
        let mut ws = Workspace::new(self, x.nrows().clamp(1, 256), false);
        for start in (0..x.nrows()).step_by(ws.cap) {
            let end = (start + ws.cap).min(x.nrows());
            let xb = x.slice(s![start..end, ..]);
            self.forward(xb, &mut ws, None, &Pool::serial(), None);
            result.slice_mut(s![start..end, ..]).assign(&ws.output(xb));
        }
        Ok(result)
    }

    fn predict_row(&self, x: &[f32]) -> Vec<f32> {
        let mut cur = x.to_vec();
        for layer in &self.layers {
            match layer {
                Layer::Flatten | Layer::Dropout { .. } => {}
                Layer::Rescaling { scale, offset } => cur.iter_mut().for_each(|v| *v = *v * scale + offset),
                Layer::Pca { fitted, .. } => {
                    let (p, shift) = fitted.as_ref().expect("checked by check_ready");
                    cur = p
                        .components
                        .rows()
                        .into_iter()
                        .zip(shift)
                        .map(|(c, s)| c.iter().zip(&cur).map(|(a, b)| a * b).sum::<f32>() - s)
                        .collect();
                }
                Layer::Dense {
                    kernel,
                    bias,
                    activation,
                } => {
                    let mut out = match bias {
                        Some(b) => b.to_vec(),
                        None => vec![0.0; kernel.ncols()],
                    };
                    let w = kernel.as_slice().expect("kernels are standard layout");
                    let units = kernel.ncols();
                    // Image inputs are mostly zeros after the first layer's relu or in the raw
                    // pixels; skipping them is where the single-row speed comes from.
                    for (i, &v) in cur.iter().enumerate() {
                        if v != 0.0 {
                            kernels::axpy(&mut out, v, &w[i * units..(i + 1) * units]);
                        }
                    }
                    activate_row(&mut out, *activation);
                    cur = out;
                }
            }
        }
        cur
    }

    /// Loss and accuracy over a data set (dropout off), `batch_size` rows at a time.
    ///
    /// # Shapes
    /// `x`: `(n, input_dim)`; `y`: `n` targets.
    pub fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &Targets,
        loss: Loss,
        batch_size: usize,
    ) -> Result<Evaluation> {
        self.check_ready()?;
        self.check_inputs(x, "inputs")?;
        self.check_targets(x, y, loss, "evaluation data")?;
        if batch_size == 0 {
            return Err(Error::TrainOption {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        let mut ws = Workspace::new(self, batch_size.min(x.nrows()), false);
        Ok(self.evaluate_with(x, y, loss, &mut ws, &Pool::serial()))
    }

    pub(crate) fn check_targets(
        &self,
        x: ArrayView2<f32>,
        y: &Targets,
        loss: Loss,
        what: &'static str,
    ) -> Result<()> {
        if x.nrows() == 0 {
            return Err(Error::Empty(what));
        }
        if x.nrows() != y.len() {
            return Err(Error::SampleCount {
                what,
                inputs: x.nrows(),
                targets: y.len(),
            });
        }
        loss.check_output(self.last_dense())?;
        y.check(loss, self.output_dim().expect("known once fitted"), what)
    }

    /// Evaluation with caller-owned buffers (the trainer reuses them every epoch).
    pub(crate) fn evaluate_with(
        &self,
        x: ArrayView2<f32>,
        y: &Targets,
        loss: Loss,
        ws: &mut Workspace,
        pool: &Pool,
    ) -> Evaluation {
        let mut total = super::loss::BatchStats::default();
        for start in (0..x.nrows()).step_by(ws.cap) {
            let end = (start + ws.cap).min(x.nrows());
            let xb = x.slice(s![start..end, ..]);
            self.forward(xb, ws, None, pool, None);
            let st = batch_loss(loss, ws.output(xb), y, |r| start + r, None);
            total.loss += st.loss;
            total.correct += st.correct;
        }
        let n = x.nrows() as f64;
        Evaluation {
            loss: total.loss / n,
            accuracy: loss.has_accuracy().then_some(total.correct / n),
        }
    }

    /// Forward pass of `x` (at most `ws.cap` rows) through every layer into `ws`; dropout is active
    /// when an RNG is given. [`Workspace::par`]'s layer is split by rows across `pool`; `gather`
    /// (only when [`Workspace::gathers_in_par`]) fills `x`'s buffer inside that split.
    pub(crate) fn forward(
        &self,
        x: ArrayView2<f32>,
        ws: &mut Workspace,
        mut rng: Option<&mut ChaCha8Rng>,
        pool: &Pool,
        gather: Option<Gather<'_>>,
    ) {
        let n = x.nrows();
        let par = ws.par;
        for (i, layer) in self.layers.iter().enumerate() {
            let (ib, ob) = (ws.in_buf[i], ws.out_buf[i]);
            if ib == ob {
                continue;
            }
            let (lo, hi) = ws.outs.split_at_mut(ob);
            let input = if ib == 0 { x } else { lo[ib].slice(s![..n, ..]) };
            let mut out = hi[0].slice_mut(s![..n, ..]);
            match layer {
                Layer::Flatten => unreachable!("flatten shares its input buffer"),
                Layer::Dense {
                    kernel,
                    bias,
                    activation,
                } => {
                    let bias = bias.as_ref().map(|b| b.view());
                    if par == Some(i) && pool.threads() > 1 {
                        let g = gather.filter(|_| ib == 0);
                        dense_forward_par(pool, input, kernel.view(), bias, *activation, out, g);
                    } else {
                        dense_forward(input, kernel.view(), bias, *activation, out);
                    }
                }
                Layer::Dropout { rate } => match rng.as_deref_mut() {
                    Some(rng) if *rate > 0.0 => {
                        let mask = &mut ws.masks[i];
                        let len = n * mask.ncols();
                        let mask = &mut mask.as_slice_mut().expect("owned buffer")[..len];
                        let keep = 1.0 / (1.0 - rate);
                        for m in mask.iter_mut() {
                            let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
                            *m = if u < *rate { 0.0 } else { keep };
                        }
                        kernels::mul_into(
                            out.as_slice_mut().expect("owned buffer"),
                            input.as_slice().expect("contiguous input"),
                            mask,
                        );
                    }
                    _ => {
                        if let Some(m) = ws.masks.get_mut(i).filter(|m| !m.is_empty()) {
                            m.fill(1.0);
                        }
                        out.assign(&input)
                    }
                },
                Layer::Rescaling { scale, offset } => {
                    ndarray::Zip::from(&mut out)
                        .and(&input)
                        .for_each(|o, &v| *o = v * scale + offset);
                }
                Layer::Pca { fitted, .. } => {
                    let (p, shift) = fitted.as_ref().expect("fitted before use");
                    p.transform_into(input, shift, out);
                }
            }
        }
    }

    /// Backward pass after [`Model::forward`] in training mode; `ws.grads` at the output buffer holds
    /// the loss gradient (w.r.t. the pre-activation when `fused`). Leaves weight gradients in
    /// `ws.dkernel` / `ws.dbias`; with `update`, also applies one optimizer step to each dense layer
    /// as soon as its gradients (and its input gradient, which needs the old weights) are known.
    /// [`Workspace::par`]'s layer is split by units across `pool`, each block fusing its weight
    /// gradient with its update while both are in cache.
    pub(crate) fn backward(
        &mut self,
        x: ArrayView2<f32>,
        ws: &mut Workspace,
        fused: bool,
        pool: &Pool,
        mut update: Option<(&mut OptimizerState, &Optimizer)>,
    ) {
        let n = x.nrows();
        let last = self.layers.len() - 1;
        let step = update.as_ref().map(|(st, opt)| st.step(opt));
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            let (ib, ob) = (ws.in_buf[i], ws.out_buf[i]);
            if ib == ob {
                continue;
            }
            let need_in = ws.need_grad_in[i];
            if ws.par == Some(i)
                && !need_in
                && let Layer::Dense {
                    kernel,
                    bias,
                    activation,
                } = layer
            {
                let slots = update.as_mut().map(|(st, _)| &mut st.slots[..]);
                dense_backward_par(
                    pool,
                    x,
                    ws,
                    i,
                    (kernel, bias.as_mut(), *activation),
                    fused && i == last,
                    step.as_ref().zip(slots),
                );
                continue;
            }
            let (glo, ghi) = ws.grads.split_at_mut(ob);
            let gout = &mut ghi[0];
            let gin = &mut glo[ib];
            match layer {
                Layer::Flatten => unreachable!("flatten shares its input buffer"),
                Layer::Dense {
                    kernel,
                    bias,
                    activation,
                } => {
                    let mut dz = gout.slice_mut(s![..n, ..]);
                    if !(fused && i == last) {
                        activation_backward(*activation, dz.view_mut(), ws.outs[ob].slice(s![..n, ..]));
                    }
                    let input = if ib == 0 {
                        x
                    } else {
                        ws.outs[ib].slice(s![..n, ..])
                    };
                    general_mat_mul(1.0, &input.t(), &dz, 0.0, &mut ws.dkernel[i]);
                    if bias.is_some() {
                        let db = ws.dbias[i].as_slice_mut().expect("owned buffer");
                        db.fill(0.0);
                        for row in dz.rows() {
                            kernels::add(db, row.as_slice().expect("owned buffer"));
                        }
                    }
                    if need_in {
                        general_mat_mul(1.0, &dz, &kernel.t(), 0.0, &mut gin.slice_mut(s![..n, ..]));
                    }
                    if let (Some(step), Some((st, _))) = (&step, update.as_mut()) {
                        let p = ws.param_idx[i];
                        let (s0, s1) = split_slots(&mut st.slots[p]);
                        step.apply(
                            kernel.as_slice_mut().expect("standard layout"),
                            ws.dkernel[i].as_slice().expect("owned"),
                            s0,
                            s1,
                        );
                        if let Some(b) = bias {
                            let (s0, s1) = split_slots(&mut st.slots[p + 1]);
                            step.apply(
                                b.as_slice_mut().expect("standard layout"),
                                ws.dbias[i].as_slice().expect("owned"),
                                s0,
                                s1,
                            );
                        }
                    }
                }
                Layer::Dropout { .. } => {
                    if need_in {
                        let d = gin.ncols();
                        kernels::mul_into(
                            &mut gin.as_slice_mut().expect("owned buffer")[..n * d],
                            &gout.as_slice().expect("owned buffer")[..n * d],
                            &ws.masks[i].as_slice().expect("owned buffer")[..n * d],
                        );
                    }
                }
                Layer::Rescaling { scale, .. } => {
                    if need_in {
                        ndarray::Zip::from(gin.slice_mut(s![..n, ..]))
                            .and(gout.slice(s![..n, ..]))
                            .for_each(|a, &b| *a = b * *scale);
                    }
                }
                Layer::Pca { fitted, .. } => {
                    if need_in {
                        let (p, _) = fitted.as_ref().expect("fitted before use");
                        general_mat_mul(
                            1.0,
                            &gout.slice(s![..n, ..]),
                            &p.components,
                            0.0,
                            &mut gin.slice_mut(s![..n, ..]),
                        );
                    }
                }
            }
        }
    }

    /// Loss of one training step on `(x, y)` and the gradient of every trainable tensor, with dropout
    /// masks drawn from `seed`. Meant for gradient checking and diagnostics, not for training.
    ///
    /// # Shapes
    /// `x`: `(n, input_dim)`; the gradients have the shapes of [`Model::tensors`]' kernels and biases.
    pub fn loss_and_gradients(
        &self,
        x: ArrayView2<f32>,
        y: &Targets,
        loss: Loss,
        seed: u64,
    ) -> Result<(f64, Vec<NamedTensor>)> {
        self.check_ready()?;
        self.check_inputs(x, "inputs")?;
        self.check_targets(x, y, loss, "targets")?;
        let mut ws = Workspace::new(self, x.nrows(), true);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pool = Pool::serial();
        self.forward(x, &mut ws, Some(&mut rng), &pool, None);
        let ob = *ws.out_buf.last().expect("at least one layer");
        let (outs, grads) = (&ws.outs, &mut ws.grads);
        let st = batch_loss(loss, outs[ob].view(), y, |r| r, Some(grads[ob].view_mut()));
        // Backward takes `&mut self` for its fused updates; none is applied here.
        self.clone().backward(x, &mut ws, loss.fused(), &pool, None);
        let mut out = Vec::new();
        for (i, (layer, name)) in self.layers.iter().zip(&self.names).enumerate() {
            if let Layer::Dense { kernel, bias, .. } = layer {
                out.push(NamedTensor {
                    name: format!("{name}.kernel"),
                    shape: kernel.shape().to_vec(),
                    data: ws.dkernel[i].iter().copied().collect(),
                });
                if bias.is_some() {
                    out.push(NamedTensor {
                        name: format!("{name}.bias"),
                        shape: vec![kernel.ncols()],
                        data: ws.dbias[i].to_vec(),
                    });
                }
            }
        }
        Ok((st.loss / x.nrows() as f64, out))
    }

    /// Every weight array, in layer order: dense kernels `(inputs, units)` and biases `(units,)`;
    /// fitted `pca` means `(features,)`, components `(k, features)` and explained-variance ratios `(k,)`.
    pub fn tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (layer, name) in self.layers.iter().zip(&self.names) {
            match layer {
                Layer::Dense { kernel, bias, .. } => {
                    out.push(NamedTensor {
                        name: format!("{name}.kernel"),
                        shape: kernel.shape().to_vec(),
                        data: kernel.iter().copied().collect(),
                    });
                    if let Some(b) = bias {
                        out.push(NamedTensor {
                            name: format!("{name}.bias"),
                            shape: vec![b.len()],
                            data: b.to_vec(),
                        });
                    }
                }
                Layer::Pca {
                    fitted: Some((p, _)), ..
                } => {
                    out.push(NamedTensor {
                        name: format!("{name}.mean"),
                        shape: vec![p.n_features()],
                        data: p.mean.to_vec(),
                    });
                    out.push(NamedTensor {
                        name: format!("{name}.components"),
                        shape: p.components.shape().to_vec(),
                        data: p.components.iter().copied().collect(),
                    });
                    out.push(NamedTensor {
                        name: format!("{name}.explained_variance_ratio"),
                        shape: vec![p.n_components()],
                        data: p.explained_variance_ratio.iter().map(|&v| v as f32).collect(),
                    });
                }
                Layer::Pca { fitted: None, .. }
                | Layer::Flatten
                | Layer::Dropout { .. }
                | Layer::Rescaling { .. } => {}
            }
        }
        out
    }

    /// Replaces the weights with `tensors` (as produced by [`Model::tensors`]); all or nothing.
    ///
    /// `pca` layers take their fitted projection from the tensors (the explained-variance ratios are
    /// optional). Every problem is reported, one message per tensor.
    pub fn load_tensors(&mut self, tensors: &[NamedTensor]) -> Result<()> {
        let mut by_name: HashMap<&str, &NamedTensor> = HashMap::new();
        let mut errors = Vec::new();
        for t in tensors {
            if by_name.insert(t.name.as_str(), t).is_some() {
                errors.push(format!("{}: given more than once", t.name));
            }
            if t.shape.iter().product::<usize>() != t.data.len() {
                errors.push(format!(
                    "{}: shape {:?} does not hold {} values",
                    t.name,
                    t.shape,
                    t.data.len()
                ));
            } else if t.data.iter().any(|v| !v.is_finite()) {
                errors.push(format!("{}: contains NaN or infinity", t.name));
            }
        }
        if !errors.is_empty() {
            return Err(Error::WeightMismatch(errors));
        }
        let mut used = std::collections::HashSet::new();
        let mut new_layers = self.layers.clone();
        let mut width = Some(self.input_dim);
        fn take<'t>(
            by_name: &HashMap<&str, &'t NamedTensor>,
            used: &mut std::collections::HashSet<String>,
            key: String,
            expected: Option<&[usize]>,
            errors: &mut Vec<String>,
        ) -> Option<&'t NamedTensor> {
            match by_name.get(key.as_str()) {
                None => {
                    errors.push(format!("{key}: missing"));
                    None
                }
                Some(t) => {
                    used.insert(key.clone());
                    match expected {
                        Some(shape) if t.shape != shape => {
                            errors.push(format!("{key}: expected shape {shape:?}, got {:?}", t.shape));
                            None
                        }
                        _ => Some(*t),
                    }
                }
            }
        }
        let take = |key: String,
                    expected: Option<&[usize]>,
                    errors: &mut Vec<String>,
                    used: &mut std::collections::HashSet<String>| {
            take(&by_name, used, key, expected, errors)
        };
        for (layer, name) in new_layers.iter_mut().zip(&self.names) {
            match layer {
                Layer::Dense { kernel, bias, .. } => {
                    let units = kernel.ncols();
                    match width {
                        Some(w) => {
                            if let Some(t) = take(
                                format!("{name}.kernel"),
                                Some(&[w, units]),
                                &mut errors,
                                &mut used,
                            ) {
                                *kernel = Array2::from_shape_vec((w, units), t.data.clone())
                                    .expect("checked shape");
                            }
                        }
                        None => {
                            take(format!("{name}.kernel"), None, &mut errors, &mut used);
                        }
                    }
                    if let Some(b) = bias
                        && let Some(t) = take(format!("{name}.bias"), Some(&[units]), &mut errors, &mut used)
                    {
                        *b = Array1::from(t.data.clone());
                    }
                    width = Some(units);
                }
                Layer::Pca { size, fitted } => {
                    let Some(f) = width else {
                        width = None;
                        continue;
                    };
                    let mean = take(format!("{name}.mean"), Some(&[f]), &mut errors, &mut used);
                    let comps = take(format!("{name}.components"), None, &mut errors, &mut used);
                    let k = match (comps, *size) {
                        (Some(c), PcaSize::Components(k)) if c.shape == [k, f] => Some(k),
                        (Some(c), PcaSize::Variance(_))
                            if c.shape.len() == 2 && c.shape[1] == f && (1..=f).contains(&c.shape[0]) =>
                        {
                            Some(c.shape[0])
                        }
                        (Some(c), _) => {
                            let want = match size {
                                PcaSize::Components(k) => format!("[{k}, {f}]"),
                                PcaSize::Variance(_) => format!("[k, {f}] with 1 <= k <= {f}"),
                            };
                            errors.push(format!(
                                "{name}.components: expected shape {want}, got {:?}",
                                c.shape
                            ));
                            None
                        }
                        (None, _) => None,
                    };
                    let ratio_key = format!("{name}.explained_variance_ratio");
                    let ratios = match (by_name.get(ratio_key.as_str()), k) {
                        (Some(t), Some(k)) => {
                            used.insert(ratio_key.clone());
                            if t.shape != [k] {
                                errors.push(format!("{ratio_key}: expected shape [{k}], got {:?}", t.shape));
                            }
                            t.data.iter().map(|&v| v as f64).collect()
                        }
                        (Some(_), None) => {
                            used.insert(ratio_key);
                            Vec::new()
                        }
                        (None, _) => Vec::new(),
                    };
                    if let (Some(m), Some(c), Some(k)) = (mean, comps, k) {
                        let p = Pca {
                            mean: Array1::from(m.data.clone()),
                            components: Array2::from_shape_vec((k, f), c.data.clone())
                                .expect("checked shape"),
                            explained_variance_ratio: ratios,
                        };
                        let shift = p.shift();
                        *fitted = Some((p, shift));
                    }
                    width = k;
                }
                Layer::Flatten | Layer::Dropout { .. } | Layer::Rescaling { .. } => {}
            }
        }
        for t in tensors {
            if !used.contains(&t.name) {
                errors.push(format!("{}: not a weight of this model", t.name));
            }
        }
        if !errors.is_empty() {
            return Err(Error::WeightMismatch(errors));
        }
        self.layers = new_layers;
        Ok(())
    }

    /// Lengths of the trainable tensors, in optimizer-slot order (per dense layer: kernel, then bias).
    pub(crate) fn param_lens(&self) -> Vec<usize> {
        let mut lens = Vec::new();
        for layer in &self.layers {
            if let Layer::Dense { kernel, bias, .. } = layer {
                lens.push(kernel.len());
                if let Some(b) = bias {
                    lens.push(b.len());
                }
            }
        }
        lens
    }

    /// Names of the trainable tensors, in optimizer-slot order (per dense layer: kernel, then bias).
    pub(crate) fn param_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (layer, name) in self.layers.iter().zip(&self.names) {
            if let Layer::Dense { bias, .. } = layer {
                names.push(format!("{name}.kernel"));
                if bias.is_some() {
                    names.push(format!("{name}.bias"));
                }
            }
        }
        names
    }
}

/// `out = act(x W + b)`.
///
/// # Shapes
/// `x`: `(n, inputs)`, `kernel`: `(inputs, units)`, `out`: `(n, units)`
fn dense_forward(
    x: ArrayView2<f32>,
    kernel: ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
    activation: Activation,
    mut out: ArrayViewMut2<f32>,
) {
    general_mat_mul(1.0, &x, &kernel, 0.0, &mut out);
    for mut row in out.rows_mut() {
        let row = row.as_slice_mut().expect("contiguous rows");
        if let Some(b) = bias {
            kernels::add(row, b.as_slice().expect("owned"));
        }
        if activation != Activation::Relu {
            activate_row(row, activation);
        }
    }
    if activation == Activation::Relu {
        match out.as_slice_mut() {
            Some(all) => kernels::relu(all),
            None => out
                .rows_mut()
                .into_iter()
                .for_each(|mut r| kernels::relu(r.as_slice_mut().expect("rows"))),
        }
    }
}

/// Training rows to copy into the input buffer inside the parallel forward pass: `rows[r]` of `src`
/// goes to row `r` at `dst` (row stride = `src` width).
#[derive(Clone, Copy)]
pub(crate) struct Gather<'a> {
    pub src: ArrayView2<'a, f32>,
    pub rows: &'a [usize],
    pub dst: SendPtr,
}

impl Gather<'_> {
    /// Copies rows `lo..hi` of the batch.
    fn copy(&self, lo: usize, hi: usize) {
        let d = self.src.ncols();
        for (r, &i) in self.rows[lo..hi].iter().enumerate() {
            // SAFETY: the destination buffer holds at least `rows.len()` rows of width `d`, and
            // callers copy disjoint row ranges.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.dst.at((lo + r) * d), d) };
            let src = self.src.row(i);
            match src.as_slice() {
                Some(s) => dst.copy_from_slice(s),
                None => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s),
            }
        }
    }

    /// The whole batch, on the calling thread.
    pub(crate) fn copy_all(&self) {
        self.copy(0, self.rows.len());
    }
}

/// [`dense_forward`] with the batch rows split into one block per pool thread, each an independent
/// GEMM against the whole kernel (packing half the inputs beats packing the whole input twice); with
/// `gather`, each block first copies its own training rows into the input buffer `x` points to.
fn dense_forward_par(
    pool: &Pool,
    x: ArrayView2<f32>,
    kernel: ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
    activation: Activation,
    mut out: ArrayViewMut2<f32>,
    gather: Option<Gather<'_>>,
) {
    let (n, units) = out.dim();
    let rs = out.strides()[0] as usize;
    let out_ptr = SendPtr(out.as_mut_ptr());
    let parts = pool.threads().min(n);
    pool.run(&|k| {
        if k >= parts {
            return;
        }
        let (lo, hi) = block(n, parts, k);
        if let Some(g) = &gather {
            g.copy(lo, hi);
        }
        // SAFETY: blocks are disjoint row ranges of `out`, which outlives `run`.
        let o =
            unsafe { ArrayViewMut2::from_shape_ptr((hi - lo, units).strides((rs, 1)), out_ptr.at(lo * rs)) };
        dense_forward(x.slice(s![lo..hi, ..]), kernel, bias, activation, o);
    });
}

/// The backward pass of dense layer `i` (whose input gradient is not needed): the activation
/// derivative, bias gradient and bias update on the calling thread, then the kernel split into one
/// block of input rows per pool thread, each computing its rows of the kernel gradient and applying
/// `update` to them (contiguous in the kernel and its optimizer slots) while they are in cache.
fn dense_backward_par(
    pool: &Pool,
    x: ArrayView2<f32>,
    ws: &mut Workspace,
    i: usize,
    (kernel, bias, activation): (&mut Array2<f32>, Option<&mut Array1<f32>>, Activation),
    skip_activation: bool,
    mut update: Option<(&super::optim::Step, &mut [Vec<Vec<f32>>])>,
) {
    let n = x.nrows();
    let (ib, ob) = (ws.in_buf[i], ws.out_buf[i]);
    let (inputs, units) = kernel.dim();
    let p = ws.param_idx[i];
    if !skip_activation {
        let dz = ws.grads[ob].slice_mut(s![..n, ..]);
        activation_backward(activation, dz, ws.outs[ob].slice(s![..n, ..]));
    }
    let dz = ws.grads[ob].slice(s![..n, ..]);
    if let Some(b) = bias {
        let db = ws.dbias[i].as_slice_mut().expect("owned buffer");
        db.fill(0.0);
        for row in dz.rows() {
            kernels::add(db, row.as_slice().expect("owned buffer"));
        }
        if let Some((step, slots)) = update.as_mut() {
            let (s0, s1) = split_slots(&mut slots[p + 1]);
            step.apply(b.as_slice_mut().expect("standard layout"), db, s0, s1);
        }
    }
    let dk_ptr = SendPtr(ws.dkernel[i].as_mut_ptr());
    let w_ptr = SendPtr(kernel.as_mut_ptr());
    let (step, ks) = match update {
        Some((step, slots)) => {
            let mut ptr = |s: usize| slots[p].get_mut(s).map(|v| SendPtr(v.as_mut_ptr()));
            (Some(*step), [ptr(0), ptr(1)])
        }
        None => (None, [None, None]),
    };
    let input = if ib == 0 {
        x
    } else {
        ws.outs[ib].slice(s![..n, ..])
    };
    let parts = pool.threads().min(inputs);
    pool.run(&|k| {
        if k >= parts {
            return;
        }
        let (lo, hi) = block(inputs, parts, k);
        let (off, len) = (lo * units, (hi - lo) * units);
        // SAFETY (every view and slice below): each block owns kernel rows lo..hi of the gradient
        // buffer, the kernel and its optimizer slots; all outlive `run`, and the caller holds them
        // mutably for its duration.
        let mut dk = unsafe { ArrayViewMut2::from_shape_ptr((hi - lo, units), dk_ptr.at(off)) };
        general_mat_mul(1.0, &input.slice(s![.., lo..hi]).t(), &dz, 0.0, &mut dk);
        if let Some(step) = &step {
            let (w, g) = unsafe { (seg(Some(w_ptr), off, len), seg(Some(dk_ptr), off, len)) };
            let (s0, s1) = unsafe { (seg(ks[0], off, len), seg(ks[1], off, len)) };
            step.apply(w, g, s0, s1);
        }
    });
}

/// `len` floats at `off` from `p`, or an empty slice for a slot the optimizer does not have.
///
/// # Safety
/// `p..p + off + len` must lie in one live buffer that nothing else touches while the slice lives.
unsafe fn seg<'a>(p: Option<SendPtr>, off: usize, len: usize) -> &'a mut [f32] {
    match p {
        // SAFETY: guaranteed by the caller.
        Some(p) => unsafe { std::slice::from_raw_parts_mut(p.at(off), len) },
        None => &mut [],
    }
}

fn activate_row(row: &mut [f32], activation: Activation) {
    match activation {
        Activation::Linear => {}
        Activation::Relu => kernels::relu(row),
        Activation::Sigmoid => row.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        Activation::Tanh => row.iter_mut().for_each(|v| *v = v.tanh()),
        Activation::Softmax => {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// `dy` (w.r.t. the activation's output `y`) becomes the gradient w.r.t. its input.
fn activation_backward(activation: Activation, mut dy: ArrayViewMut2<f32>, y: ArrayView2<f32>) {
    match activation {
        Activation::Linear => {}
        Activation::Relu => {
            for (mut d, y) in dy.rows_mut().into_iter().zip(y.rows()) {
                kernels::relu_backward(d.as_slice_mut().expect("rows"), y.as_slice().expect("rows"));
            }
        }
        Activation::Sigmoid => ndarray::Zip::from(&mut dy)
            .and(&y)
            .for_each(|d, &y| *d *= y * (1.0 - y)),
        Activation::Tanh => ndarray::Zip::from(&mut dy)
            .and(&y)
            .for_each(|d, &y| *d *= 1.0 - y * y),
        Activation::Softmax => {
            for (mut d, y) in dy.rows_mut().into_iter().zip(y.rows()) {
                let dot: f32 = d.iter().zip(y).map(|(a, b)| a * b).sum();
                d.zip_mut_with(&y, |d, &y| *d = y * (*d - dot));
            }
        }
    }
}

/// Buffers for a batch of up to `cap` rows, sized once so the batch loop never allocates.
/// Buffer 0 is the caller's input; flatten layers share their input's buffer.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub cap: usize,
    /// Gathered (shuffled) training rows. Shape `(cap, input_dim)`; empty for inference.
    pub input: Array2<f32>,
    pub in_buf: Vec<usize>,
    pub out_buf: Vec<usize>,
    /// Layer outputs by buffer, `(cap, width)`.
    pub outs: Vec<Array2<f32>>,
    /// Loss gradients w.r.t. each buffer; empty for inference.
    pub grads: Vec<Array2<f32>>,
    /// Dropout masks (0 or 1/(1 - rate)) by layer.
    pub masks: Vec<Array2<f32>>,
    pub dkernel: Vec<Array2<f32>>,
    pub dbias: Vec<Array1<f32>>,
    /// Whether a trainable layer lies before layer i, so its input gradient is needed.
    pub need_grad_in: Vec<bool>,
    /// The layer whose work is split across worker threads: the first dense layer, which carries most
    /// of an MLP's work on images, when its activation is element-wise (not softmax).
    pub par: Option<usize>,
    /// Optimizer-slot index of each dense layer's kernel (its bias follows); 0 for other layers.
    pub param_idx: Vec<usize>,
}

impl Workspace {
    /// Requires every `pca` layer to be fitted.
    pub fn new(model: &Model, cap: usize, training: bool) -> Workspace {
        let cap = cap.max(1);
        let mut in_buf = Vec::new();
        let mut out_buf = Vec::new();
        let mut widths = vec![model.input_dim];
        let mut need_grad_in = Vec::new();
        let mut seen_dense = false;
        let mut masks = Vec::new();
        let mut dkernel = Vec::new();
        let mut dbias = Vec::new();
        let mut cur = 0;
        let mut par = None;
        let mut param_idx = Vec::new();
        let mut n_params = 0;
        for (i, layer) in model.layers.iter().enumerate() {
            param_idx.push(n_params);
            if let Layer::Dense { bias, activation, .. } = layer {
                n_params += 1 + usize::from(bias.is_some());
                if !seen_dense && *activation != Activation::Softmax {
                    par = Some(i);
                }
            }
            let w_in = widths[cur];
            in_buf.push(cur);
            need_grad_in.push(seen_dense);
            let w_out = match layer {
                Layer::Flatten => None,
                Layer::Dense { kernel, .. } => Some(kernel.ncols()),
                Layer::Pca { fitted, .. } => Some(fitted.as_ref().expect("fitted").0.n_components()),
                Layer::Dropout { .. } | Layer::Rescaling { .. } => Some(w_in),
            };
            if let Some(w) = w_out {
                widths.push(w);
                cur = widths.len() - 1;
            }
            out_buf.push(cur);
            let is_dropout = matches!(layer, Layer::Dropout { .. });
            masks.push(if is_dropout && training {
                Array2::zeros((cap, w_in))
            } else {
                Array2::zeros((0, 0))
            });
            match layer {
                Layer::Dense { kernel, bias, .. } if training => {
                    seen_dense = true;
                    dkernel.push(Array2::zeros(kernel.dim()));
                    dbias.push(Array1::zeros(if bias.is_some() { kernel.ncols() } else { 0 }));
                }
                _ => {
                    seen_dense |= matches!(layer, Layer::Dense { .. });
                    dkernel.push(Array2::zeros((0, 0)));
                    dbias.push(Array1::zeros(0));
                }
            }
        }
        let bufs = |skip_first: bool| -> Vec<Array2<f32>> {
            widths
                .iter()
                .enumerate()
                .map(|(k, &w)| {
                    if k == 0 && skip_first {
                        Array2::zeros((0, 0))
                    } else {
                        Array2::zeros((cap, w))
                    }
                })
                .collect()
        };
        Workspace {
            cap,
            input: if training {
                Array2::zeros((cap, model.input_dim))
            } else {
                Array2::zeros((0, 0))
            },
            in_buf,
            out_buf,
            outs: bufs(true),
            grads: if training { bufs(false) } else { Vec::new() },
            masks,
            dkernel,
            dbias,
            need_grad_in,
            par,
            param_idx,
        }
    }

    /// Whether the parallel layer reads the raw input, so the forward pass can gather the training
    /// rows itself, in parallel.
    pub fn gathers_in_par(&self, pool: &Pool) -> bool {
        pool.threads() > 1 && self.par.is_some_and(|p| self.in_buf[p] == 0)
    }

    /// The network output for the last forward pass of `x`.
    pub fn output<'a>(&'a self, x: ArrayView2<'a, f32>) -> ArrayView2<'a, f32> {
        let ob = *self.out_buf.last().expect("at least one layer");
        if ob == 0 {
            x
        } else {
            self.outs[ob].slice(s![..x.nrows(), ..])
        }
    }
}
