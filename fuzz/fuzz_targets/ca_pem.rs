//! `cargo fuzz run ca_pem`: see [`podcert_fuzz::ca_pem`] for the input and what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| podcert_fuzz::ca_pem(data));
