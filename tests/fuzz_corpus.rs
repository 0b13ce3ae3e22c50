//! The fuzz corpus, replayed on the stable compiler: every input `scripts/fuzz` kept (and
//! every one written by hand) goes through the same entry points the fuzzer drives, so what
//! was found once stays tested without a nightly compiler.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails", path.display());
        n += 1;
    }
    assert!(n >= 5, "only {n} inputs in {}", dir.display());
}

#[test]
fn the_codec_corpus_passes() {
    replay("codec", popsync::pop3::fuzz::codec);
}

#[test]
fn the_response_parser_corpus_passes() {
    replay("responses", popsync::pop3::fuzz::responses);
}

#[test]
fn the_certificate_reader_corpus_passes() {
    replay("certificate", popsync::pop3::fuzz::certificate);
}
