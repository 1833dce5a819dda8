//! `cargo fuzz run stub_csr`: see [`podcert_fuzz::stub_csr`] for the input and what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| podcert_fuzz::stub_csr(data));
