//! Dataset parsing.
