//! fitd: train Keras-style Sequential models over HTTP, stream their metrics, serve their predictions.
pub mod auth;
pub mod config;
pub mod data;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod nn;
pub mod search;
pub mod serving;
pub mod startup;
pub mod store;
