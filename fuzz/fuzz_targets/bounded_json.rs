#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strike_parse::fuzz::fuzz_entry_bounded_json(data));
