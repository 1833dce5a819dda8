//! `cargo fuzz run status_builder`: see [`podcert_fuzz::status_builder`] for the input and what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    podcert_fuzz::status_builder(data);
});
