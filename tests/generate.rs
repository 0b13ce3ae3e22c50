//! `popsync generate man` and `popsync generate completions`: the page renders without a
//! single warning from groff or man and covers every command and option; the bash
//! completions load and complete.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use common::{Home, describe, stdout};

fn popsync(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_popsync"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    out
}

/// Formats a page with groff at its strictest (`-ww`: every warning): nothing on stderr.
fn assert_groff_clean(page: &Path) {
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .expect(
            "groff is needed for this test (Debian package groff-base; scripts/test installs it)",
        );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff on {}: {}",
        page.display(),
        describe(&out)
    );
}

/// The page as `man -l` shows it, 80 columns wide; it must say nothing on stderr.
fn man_text(page: &Path) -> String {
    let out = Command::new("man")
        .args(["-l", "-Tutf8"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .expect("man is needed for this test (Debian package man-db; scripts/test installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "man -l {}: {}",
        page.display(),
        describe(&out)
    );
    // Overstrike bold and underline (c\bc, _\bc), as grotty writes them, to plain text.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
            continue;
        }
        text.push(c);
    }
    text
}

/// Every command and subcommand, as `popsync service install`, with its long options.
fn commands() -> Vec<(String, Vec<String>)> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, Vec<String>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{prefix} {}", sub.get_name());
            let options = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set() && !a.is_global_set())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .filter(|l| l != "--help")
                .collect();
            out.push((name.clone(), options));
            walk(sub, &name, out);
        }
    }
    let mut cmd = popsync::cli::Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, "popsync", &mut out);
    out
}

#[test]
fn the_man_page_renders_without_warnings_and_covers_every_command_and_option() {
    let home = Home::new();
    let page = home.path().join("popsync.1");
    std::fs::write(&page, popsync(&["generate", "man"]).stdout).unwrap();
    assert_groff_clean(&page);
    let text = man_text(&page);
    let all = commands();
    assert!(all.len() >= 10, "{all:?}");
    for (name, options) in &all {
        // The subsection heading of each command, then its options before the next one.
        let heading = format!("\n   {name}\n");
        let at = text
            .find(&heading)
            .unwrap_or_else(|| panic!("no section for `{name}` in the page:\n{text}"));
        let section = &text[at + heading.len()..];
        let section = &section[..section.find("\n   popsync").unwrap_or(section.len())];
        for option in options {
            assert!(
                section.contains(option.as_str()),
                "`{name}` does not describe {option}:\n{section}"
            );
        }
    }
    for needle in ["--config <FILE>", "NOTES", "78  configuration error"] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

#[test]
fn man_dir_writes_a_clean_page_for_every_command() {
    let home = Home::new();
    let dir = home.path().join("man1");
    let out = popsync(&["generate", "man", "--dir", dir.to_str().unwrap()]);
    let mut written: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    written.sort();
    let mut want: Vec<String> = std::iter::once("popsync".to_owned())
        .chain(
            commands()
                .into_iter()
                .map(|(name, _)| name.replace(' ', "-")),
        )
        .map(|n| dir.join(format!("{n}.1")).display().to_string())
        .chain([dir.join("popsync.toml.5").display().to_string()])
        .collect();
    want.sort();
    assert_eq!(written, want);
    for page in &written {
        assert_groff_clean(Path::new(page));
    }
}

/// Every configuration key, from the declarations the configuration reader uses, is in
/// popsync.toml(5) and in popsync(1) with its default; popsync(1) has ENVIRONMENT and FILES.
#[test]
fn the_manual_describes_every_configuration_key_with_its_default() {
    let home = Home::new();
    let dir = home.path().join("man");
    popsync(&["generate", "man", "--dir", dir.to_str().unwrap()]);
    let page = dir.join("popsync.1");
    std::fs::write(&page, popsync(&["generate", "man"]).stdout).unwrap();
    let keys: Vec<&popsync::config::KeyDoc> = popsync::config::top_keys()
        .iter()
        .chain(popsync::config::account_keys())
        .chain(popsync::delivery::imap::section_keys())
        .collect();
    assert!(keys.len() >= 40, "{}", keys.len());
    for page in [dir.join("popsync.toml.5"), page.clone()] {
        let text = man_text(&page);
        // man may hyphenate or break a line anywhere in running text: compare without them.
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for key in &keys {
            let entry = format!("{} = {}", key.name, key.example);
            assert!(flat.contains(&entry), "{}: no {entry:?}", page.display());
            if !key.default.is_empty() {
                let default: String = key.default.split_whitespace().collect::<Vec<_>>().join(" ");
                // In the key's own entry: the first "Type:" after one of its "name = example".
                let typed = |t: &str| format!("Type: {t}. Default: {default}.");
                assert!(
                    flat.match_indices(&entry).any(|(at, _)| {
                        let rest = &flat[at..];
                        rest.find("Type: ").is_some_and(|t| {
                            ["string", "list of strings", "true or false", "whole number"]
                                .iter()
                                .any(|kind| rest[t..].starts_with(&typed(kind)))
                        })
                    }),
                    "{}: no default for {}",
                    page.display(),
                    key.name
                );
            }
        }
    }
    let text = man_text(&page);
    for needle in [
        "ENVIRONMENT",
        "POPSYNC_STATE_DIR",
        "FILES",
        "state.db",
        "NOTES",
        "EXIT STATUS\n         0   success",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

#[test]
fn generate_config_prints_the_example_configuration() {
    let out = popsync(&["generate", "config"]);
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"))
            .unwrap();
    assert_eq!(stdout(&out), example);
}

/// Runs bash's completion for `words` (the last one being completed) with the script
/// `popsync generate completions bash` prints, and returns the candidates.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    bash_complete_with(script, words, &[])
}

/// The same, with these environment variables set for bash (and the popsync it runs).
fn bash_complete_with(script: &Path, words: &[&str], env: &[(&str, String)]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source "$1" || exit 99
complete -p popsync || exit 98
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
_popsync popsync "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("complete -o bashdefault -o default -o nosort -F _popsync popsync"),
        "{text}"
    );
    lines.map(str::to_owned).collect()
}

#[test]
fn bash_completion_loads_and_completes_commands_and_arguments() {
    let home = Home::new();
    let script = home.path().join("popsync.bash");
    std::fs::write(
        &script,
        popsync(&["generate", "completions", "bash"]).stdout,
    )
    .unwrap();
    assert_eq!(bash_complete(&script, &["popsync", "serv"]), ["service"]);
    let mut sub = bash_complete(&script, &["popsync", "service", ""]);
    sub.sort();
    assert!(
        ["install", "status", "uninstall"]
            .iter()
            .all(|w| sub.iter().any(|s| s == w)),
        "{sub:?}"
    );
    let shells = bash_complete(&script, &["popsync", "generate", "completions", ""]);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.iter().any(|s| s == shell), "{shell} in {shells:?}");
    }
    assert_eq!(
        bash_complete(&script, &["popsync", "service", "install", "--dry"]),
        ["--dry-run"]
    );
}

#[test]
fn completions_for_every_shell_name_every_command() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = stdout(&popsync(&["generate", "completions", shell]));
        for word in [
            "fetch",
            "daemon",
            "service",
            "uninstall",
            "completions",
            "dry-run",
        ] {
            assert!(script.contains(word), "{shell}: no {word:?} in\n{script}");
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_popsync"))
        .args(["generate", "completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
}

/// After `--account`, the completions offer the configured accounts' names (not file
/// names), from the file popsync would read or the `--config` on the line.
#[test]
fn completion_offers_the_configured_account_names() {
    let home = Home::new();
    let config = home.write_config(
        "[[account]]\nname = \"home\"\nhost = \"h\"\nusername = \"u\"\npassword-command = [\"true\"]\nmaildir = \"m\"\n\n\
         [[account]]\nname = \"work\"\nhost = \"h\"\nusername = \"u\"\npassword-command = [\"true\"]\nmaildir = \"w\"\n",
    );
    let script = home.path().join("popsync.bash");
    std::fs::write(
        &script,
        popsync(&["generate", "completions", "bash"]).stdout,
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_popsync")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("PATH", path.clone()),
        ("POPSYNC_CONFIG", config.display().to_string()),
    ];
    let mut names = bash_complete_with(&script, &["popsync", "fetch", "--account", ""], &env);
    names.sort();
    assert_eq!(names, ["home", "work"]);
    assert_eq!(
        bash_complete_with(&script, &["popsync", "status", "-a", "wo"], &env),
        ["work"]
    );
    // The --config on the line wins over $POPSYNC_CONFIG.
    let other = home.path().join("other.toml");
    std::fs::write(
        &other,
        "[[account]]\nname = \"elsewhere\"\nhost = \"h\"\nusername = \"u\"\npassword-command = [\"true\"]\nmaildir = \"m\"\n",
    )
    .unwrap();
    let other = other.display().to_string();
    assert_eq!(
        bash_complete_with(
            &script,
            &["popsync", "--config", &other, "check", "--account", ""],
            &[("PATH", path.clone())]
        ),
        ["elsewhere"]
    );
    // zsh and fish ask popsync the same way: fish's own completion run, and zsh's helper
    // run with its `_describe` recording what it is given (a zsh completion needs a
    // terminal to run whole).
    let zsh = home.path().join("_popsync");
    std::fs::write(&zsh, popsync(&["generate", "completions", "zsh"]).stdout).unwrap();
    let text = std::fs::read_to_string(&zsh).unwrap();
    assert!(text.contains(":NAME:_popsync_accounts") && !text.contains(":NAME:_default"));
    let shell = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| {
                panic!("{program} is needed for this test (scripts/test installs it): {e}")
            });
        assert!(out.status.success(), "{}", describe(&out));
        let mut lines: Vec<String> = stdout(&out)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_owned())
            .collect();
        lines.sort();
        lines
    };
    let script = format!(
        "compdef() {{ :; }}; source {}; _describe() {{ print -rl -- \"${{(@P)2}}\"; }}; _popsync_accounts",
        zsh.display()
    );
    assert_eq!(shell("zsh", &["-f", "-c", &script]), ["home", "work"]);
    let fish = home.path().join("popsync.fish");
    std::fs::write(&fish, popsync(&["generate", "completions", "fish"]).stdout).unwrap();
    let script = format!(
        "source {}; complete -C 'popsync status --account '",
        fish.display()
    );
    assert_eq!(
        shell("fish", &["--no-config", "-c", &script]),
        ["home", "work"]
    );
    let out = popsync(&["--config", config.to_str().unwrap(), "complete-accounts"]);
    assert_eq!(stdout(&out), "home\nwork\n");
}
