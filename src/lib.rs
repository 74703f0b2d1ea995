//! fitd: train Keras-style Sequential models over HTTP, stream their metrics, serve their predictions.
pub mod nn;
