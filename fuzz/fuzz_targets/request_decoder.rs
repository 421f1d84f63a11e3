#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strike::fuzz::fuzz_entry_request(data));
