//! Reload triggers.
