#![no_main]
//! See `calm_kvs::fuzzing::native_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| calm_kvs::fuzzing::native_request(data));
