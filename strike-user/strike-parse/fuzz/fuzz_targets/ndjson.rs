fn main() {
    afl::fuzz!(|data: &[u8]| strike_parse::fuzz::fuzz_entry_ndjson(data));
}
