//! Harness for end-to-end tests: starts real processes.
