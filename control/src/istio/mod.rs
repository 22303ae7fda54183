//! Istio configuration: parse (with the line of every field), map non-standard spellings with
//! warnings, validate as Istio does, and convert into the native model.

pub mod compat;
pub mod convert;
pub mod destination_rule;
pub mod diag;
pub mod gateway;
pub mod gateway_servers;
pub mod parse;
pub mod routes;
pub mod security;
pub mod service;
pub mod telemetry;
pub mod validate;
pub mod values;
pub mod virtual_service;
pub mod yaml;

pub use diag::{Finding, Mode, Severity};
pub use parse::{
    Kind, Loaded, Resource, Spec, load_paths, load_paths_with, load_str, load_str_with,
};
