//! jalin-tests: shared harness for the end-to-end suites (real processes on loopback).
