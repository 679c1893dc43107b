//! calm's function executors.
