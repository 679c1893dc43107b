#![no_main]
//! See `calm_kvs::fuzzing::resp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| calm_kvs::fuzzing::resp(data));
