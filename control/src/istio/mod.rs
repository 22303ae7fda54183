//! Istio configuration: parse, map non-standard spellings, validate, and convert to the native model.
pub mod yaml;
