//! See `popsync::pop3::fuzz::certificate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| popsync::pop3::fuzz::certificate(data));
