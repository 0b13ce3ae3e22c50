//! `popsync generate man|completions|config`: the manual pages and shell completions, made
//! from the command-line definitions and the configuration keys' own declarations (the ones
//! the configuration reader uses) so that they never drift from what popsync accepts; and the
//! commented example configuration.

use crate::exit;
use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

use super::Cli;

/// Print the manual page or shell completions, made from popsync's own command line
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// The manual page popsync(1), covering every command and every configuration key, as
    /// roff on standard output (`popsync generate man > ~/.local/share/man/man1/popsync.1`);
    /// with --dir, one page per command written into DIR instead (popsync.1,
    /// popsync-fetch.1, ...) and popsync.toml.5, the configuration file's
    Man {
        /// Write one page per command into this directory
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Completions for SHELL on standard output. bash: `popsync generate completions bash >
    /// ~/.local/share/bash-completion/completions/popsync`; zsh: into a file `_popsync` in a
    /// directory on $fpath; fish: `> ~/.config/fish/completions/popsync.fish`; PowerShell:
    /// `popsync generate completions powershell | Out-String | Invoke-Expression` in $PROFILE
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The example configuration, every key explained, on standard output (`popsync generate
    /// config > ~/.config/popsync/config.toml`, then edit it)
    Config,
}

/// The example configuration, as shipped beside the source.
const EXAMPLE_CONFIG: &str = include_str!("../../config.example.toml");

pub fn run(_cli: &Cli, args: &GenerateArgs) -> u8 {
    let result = match &args.what {
        What::Man { dir: None } => {
            man_page().and_then(|page| std::io::stdout().lock().write_all(&page))
        }
        What::Man { dir: Some(dir) } => man_pages(dir),
        What::Config => std::io::stdout()
            .lock()
            .write_all(EXAMPLE_CONFIG.as_bytes()),
        What::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "popsync", &mut script);
            let script = with_account_names(*shell, &String::from_utf8_lossy(&script));
            std::io::stdout().lock().write_all(script.as_bytes())
        }
    };
    match result {
        Ok(()) => 0,
        // `popsync generate man | head`
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("popsync: {e}");
            exit::CANT_CREATE
        }
    }
}

/// `popsync complete-accounts`: the configured accounts' names, one a line, for the shell
/// completions to offer after `--account`. Quiet when there is no usable configuration.
pub fn account_names(cli: &Cli) -> u8 {
    let Ok(file) = cli.config_file() else {
        return 0;
    };
    if let Ok(config) = crate::config::Config::load(&file, None) {
        for a in &config.accounts {
            println!("{}", a.name);
        }
    }
    0
}

/// The completion script for `shell`, offering the configured accounts' names (from
/// `popsync complete-accounts`, with the `--config` of the command line being completed,
/// where the shell makes that easy) after `--account`/`-a`, where clap offers file names.
fn with_account_names(shell: clap_complete::Shell, script: &str) -> String {
    use clap_complete::Shell;
    match shell {
        Shell::Bash => {
            let mut out = String::with_capacity(script.len() + 1024);
            let mut account_case = false;
            for line in script.lines() {
                let trimmed = line.trim();
                if trimmed == "--account)" || trimmed == "-a)" {
                    account_case = true;
                } else if account_case && trimmed.starts_with("COMPREPLY=($(compgen -f") {
                    out.push_str(&line.replace(
                        "compgen -f \"${cur}\"",
                        "compgen -W \"$(_popsync_accounts)\" -- \"${cur}\"",
                    ));
                    out.push('\n');
                    account_case = false;
                    continue;
                } else if trimmed.ends_with(')') {
                    account_case = false;
                }
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(
                "\n# The configured accounts (with the --config of the line being completed).\n\
                 _popsync_accounts() {\n\
                 \x20   local i config=()\n\
                 \x20   for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do\n\
                 \x20       case ${COMP_WORDS[i]} in\n\
                 \x20           -c | --config) config=(--config \"${COMP_WORDS[i + 1]}\") ;;\n\
                 \x20       esac\n\
                 \x20   done\n\
                 \x20   popsync \"${config[@]}\" complete-accounts 2>/dev/null\n\
                 }\n",
            );
            out
        }
        Shell::Zsh => {
            let script = script.replace(":NAME:_default", ":NAME:_popsync_accounts");
            let helper = "\n# The configured accounts.\n\
                 (( $+functions[_popsync_accounts] )) ||\n\
                 _popsync_accounts() {\n\
                 \x20   local -a names\n\
                 \x20   names=(${(f)\"$(popsync complete-accounts 2>/dev/null)\"})\n\
                 \x20   _describe 'account' names\n\
                 }\n";
            // After the `#compdef` line, before the function that uses it.
            match script.split_once('\n') {
                Some((first, rest)) => format!("{first}\n{helper}{rest}"),
                None => script,
            }
        }
        Shell::Fish => {
            script
                .lines()
                .map(|line| {
                    if line.contains(" -l account ") && line.ends_with(" -r") {
                        format!("{line} -f -a \"(popsync complete-accounts 2>/dev/null)\"")
                    } else {
                        line.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        _ => script.to_owned(),
    }
}

fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// One page: the synopsis, description and global options of popsync, then every command
/// (subcommands included) with its own synopsis, description and options, then the notes
/// (configuration, exit status).
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let cmd = command();
    let man = Man::new(cmd.clone()).manual("popsync manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in visible_subcommands(&cmd) {
        render_command(&sub, &mut page)?;
    }
    configuration_section("CONFIGURATION").to_writer(&mut page)?;
    environment_and_files().to_writer(&mut page)?;
    if let Some(notes) = cmd.get_after_help() {
        notes_section(&notes.to_string()).to_writer(&mut page)?;
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// popsync.toml(5): the configuration file, every key.
pub fn config_page() -> std::io::Result<Vec<u8>> {
    let mut roff = Roff::new();
    roff.control("TH", ["POPSYNC.TOML", "5", "", "popsync", "popsync manual"]);
    roff.control("SH", ["NAME"]);
    roff.text([roman("popsync.toml - the configuration of popsync")]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "popsync reads one TOML file: --config FILE, else $POPSYNC_CONFIG, else \
         ~/.config/popsync/config.toml (the platform's configuration directory). It holds a \
         few keys of its own, a [defaults] table whose keys every account takes unless it \
         sets them itself, one [[account]] table per account, and one [[imap]] table per \
         IMAP mailbox that accounts deliver into (imap-destination). `popsync generate config` \
         prints a commented example; `popsync check` reads the file and names every problem \
         with its line, account and key.",
    )]);
    let mut page = Vec::new();
    roff.to_writer(&mut page)?;
    configuration_section("KEYS").to_writer(&mut page)?;
    let mut see = Roff::new();
    see.control("SH", ["SEE ALSO"]);
    see.text([roman("popsync(1)")]);
    see.to_writer(&mut page)?;
    Ok(page)
}

/// Every configuration key, from the declarations the configuration reader uses: its
/// name, an example value, what it does and its default.
fn configuration_section(title: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", [title]);
    // Values are to be copied as they are: never hyphenated.
    roff.control("nh", []);
    let groups: [(&str, Vec<&crate::config::KeyDoc>); 3] = [
        (
            "Outside any account",
            crate::config::top_keys().iter().collect(),
        ),
        (
            "In an [[account]] (or [defaults], for every account)",
            crate::config::account_keys(),
        ),
        (
            "In an [[imap]] section (an IMAP mailbox accounts deliver into with imap-destination; [defaults] does not apply)",
            crate::delivery::imap::section_keys(),
        ),
    ];
    for (heading, keys) in groups {
        roff.control("SS", [heading]);
        for key in keys {
            roff.control("TP", []);
            roff.text([
                clap_mangen::roff::bold(key.name),
                roman(format!(" = {}", key.example)),
            ]);
            let default = if key.default.is_empty() {
                "none".to_owned()
            } else {
                key.default.to_owned()
            };
            roff.text([roman(format!(
                "{} Type: {}. Default: {default}.",
                key.doc.trim(),
                type_of(key.example)
            ))]);
        }
    }
    roff.control("hy", []);
    roff
}

/// A key's type, as its example value shows it.
fn type_of(example: &str) -> &'static str {
    match example.trim() {
        e if e.starts_with('"') => "string",
        e if e.starts_with('[') => "list of strings",
        "true" | "false" => "true or false",
        e if e.chars().all(|c| c.is_ascii_digit()) => "whole number",
        _ => "see the description",
    }
}

/// The environment variables popsync reads, and the files it uses.
fn environment_and_files() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, what) in [
        (
            "POPSYNC_CONFIG",
            "The configuration file, unless --config is given.",
        ),
        (
            "POPSYNC_STATE_DIR",
            "The state directory (the state database, locks, spools, OAuth2 token files), \
             before state-dir in the file.",
        ),
        (
            "RUST_LOG",
            "What is logged, in tracing's filter syntax (before log-level and -v).",
        ),
        (
            "SSL_CERT_FILE, SSL_CERT_DIR",
            "Certificate authorities OpenSSL trusts, instead of the system's.",
        ),
        (
            "DBUS_SESSION_BUS_ADDRESS",
            "The session bus of desktop notifications and the Secret Service keyring.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC, STATE_DIRECTORY",
            "Set by systemd for the agent: readiness, the watchdog, the state directory.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([clap_mangen::roff::bold(name)]);
        roff.text([roman(what)]);
    }
    roff.control("SH", ["FILES"]);
    for (name, what) in [
        (
            "~/.config/popsync/config.toml",
            "The configuration (on Linux; the platform's configuration directory elsewhere). \
             See popsync.toml(5).",
        ),
        (
            "~/.local/state/popsync/state.db",
            "The state database: what popsync knows of every message (SQLite).",
        ),
        (
            "~/.local/state/popsync/locks/",
            "One lock per account (the agent's is daemon.lock, beside state.db).",
        ),
        (
            "~/.local/state/popsync/oauth2/NAME.token",
            "An account's OAuth2 refresh token, with oauth2-token-store = \"file\" \
             (an [[imap]] section's is imap=NAME.token).",
        ),
        (
            "~/.local/state/popsync/spool/NAME/",
            "Messages on their way to an mbox, an MDA or an IMAP mailbox.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([clap_mangen::roff::bold(name)]);
        roff.text([roman(what)]);
    }
    roff
}

/// The text after `--help` (configuration, exit status) as NOTES and EXIT STATUS sections:
/// lines that start with white space (the exit status table) as they are, the rest filled.
fn notes_section(text: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["NOTES"]);
    let mut verbatim = false;
    for line in text.lines() {
        // The exit status table is a section of its own.
        if line.trim() == "Exit status:" {
            if verbatim {
                roff.control("fi", []);
                verbatim = false;
            }
            roff.control("SH", ["EXIT STATUS"]);
            continue;
        }
        let indented = line.starts_with(' ');
        if indented != verbatim {
            roff.control(if indented { "nf" } else { "fi" }, []);
            verbatim = indented;
        }
        if line.trim().is_empty() {
            roff.control("PP", []);
        } else {
            roff.text([roman(line)]);
        }
    }
    if verbatim {
        roff.control("fi", []);
    }
    roff
}

/// Every subcommand, depth first, in the order `--help` lists them.
fn visible_subcommands(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut all = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        all.push(sub.clone());
        all.extend(visible_subcommands(sub));
    }
    all
}

/// A subsection for one command: its synopsis, description and own options (the global
/// ones are described once, above).
fn render_command(sub: &clap::Command, page: &mut Vec<u8>) -> std::io::Result<()> {
    let name = sub
        .get_bin_name()
        .unwrap_or_else(|| sub.get_name())
        .to_owned();
    let own = sub
        .clone()
        .mut_args(|a| if a.is_global_set() { a.hide(true) } else { a })
        .mut_arg("help", |a| a.hide(true));
    let man = Man::new(own.clone());
    let mut section = Vec::new();
    man.render_synopsis_section(&mut section)?;
    man.render_description_section(&mut section)?;
    if own.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut section)?;
    }
    writeln!(page, ".SS \"{name}\"")?;
    // The sections' own headings would end the COMMANDS section: paragraphs instead.
    for line in String::from_utf8_lossy(&section).lines() {
        if line.starts_with(".SH") {
            page.extend_from_slice(b".PP\n");
        } else {
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
    }
    Ok(())
}

/// popsync.1 and one page per command (popsync-fetch.1, popsync-service-install.1, ...).
fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("popsync") && n.ends_with(".1"))
        .collect();
    std::fs::write(dir.join("popsync.toml.5"), config_page()?)?;
    names.push("popsync.toml.5".to_owned());
    names.sort();
    for name in names {
        println!("{}", dir.join(name).display());
    }
    Ok(())
}
