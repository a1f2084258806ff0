#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kl_testkit::fuzz::ndjson_line(data));
