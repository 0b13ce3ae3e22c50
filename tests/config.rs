//! What popsync makes of a configuration file, pinned: every `tests/config/NAME.toml` is
//! read as if it were `/home/u/.config/popsync/config.toml`, and what comes out — every
//! problem, in order, exactly as the user sees it, or the configuration as popsync
//! understands it — must equal `NAME.expected`. On a difference the output is written to
//! `NAME.failed` beside it. `POPSYNC_BLESS=1` writes the expectations instead (for a new
//! case; a changed one is a changed behaviour, and says so in review).

use std::path::Path;

use popsync::config::Config;

fn outcome(text: &str) -> String {
    let file = Path::new("/home/u/.config/popsync/config.toml");
    match Config::parse(text, file, Some("/tmp/state".into())) {
        Err(e) => format!("{e}\n"),
        Ok(c) => {
            let mut out = format!(
                "state-dir: {}\nlog-level: {:?}\nmax-parallel: {}\nnotify-failure-after: {:?}\n",
                c.state_dir.display(),
                c.log_level,
                c.max_parallel,
                c.notify_failure_after
            );
            for a in &c.accounts {
                out.push_str(&format!("{a:#?}\n"));
            }
            out
        }
    }
}

#[test]
fn every_configuration_is_understood_as_pinned() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config");
    let bless = std::env::var_os("POPSYNC_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} cases found", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let got = outcome(&std::fs::read_to_string(case).unwrap());
        let expected = case.with_extension("expected");
        let failed_path = case.with_extension("failed");
        if bless {
            std::fs::write(&expected, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected)
            .unwrap_or_else(|_| panic!("{} is missing", expected.display()));
        if got == want {
            let _ = std::fs::remove_file(&failed_path);
        } else {
            std::fs::write(&failed_path, &got).unwrap();
            failed.push(case.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "these cases came out differently (see their .failed files): {failed:?}"
    );
}
