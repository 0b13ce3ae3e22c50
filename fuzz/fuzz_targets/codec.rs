//! See `popsync::pop3::fuzz::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| popsync::pop3::fuzz::codec(data));
