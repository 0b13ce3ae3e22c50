//! See `popsync::pop3::fuzz::responses`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| popsync::pop3::fuzz::responses(data));
