//! `cargo fuzz run pkix`: see [`podcert_fuzz::pkix`] for the input and what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| podcert_fuzz::pkix(data));
