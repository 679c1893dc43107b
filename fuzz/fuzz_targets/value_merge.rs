#![no_main]
//! See `calm_kvs::fuzzing::value_merge`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| calm_kvs::fuzzing::value_merge(data));
