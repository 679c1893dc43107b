#![no_main]
//! See `calm_kvs::fuzzing::peer_message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| calm_kvs::fuzzing::peer_message(data));
