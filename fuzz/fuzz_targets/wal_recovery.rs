#![no_main]
//! See `calm_kvs::fuzzing::wal_recovery`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| calm_kvs::fuzzing::wal_recovery(data));
