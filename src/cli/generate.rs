//! `popsync generate man|completions`: the manual page and shell completions, made from the
//! command-line definitions themselves so that they never drift from what popsync accepts.

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
    /// The manual page popsync(1), covering every command, as roff on standard output
    /// (`popsync generate man > ~/.local/share/man/man1/popsync.1`); with --dir, one page per
    /// command written into DIR instead (popsync.1, popsync-fetch.1, ...)
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
}

pub fn run(_cli: &Cli, args: &GenerateArgs) -> u8 {
    let result = match &args.what {
        What::Man { dir: None } => {
            man_page().and_then(|page| std::io::stdout().lock().write_all(&page))
        }
        What::Man { dir: Some(dir) } => man_pages(dir),
        What::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "popsync", &mut script);
            std::io::stdout().lock().write_all(&script)
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
    if let Some(notes) = cmd.get_after_help() {
        notes_section(&notes.to_string()).to_writer(&mut page)?;
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// The text after `--help` (configuration, exit status) as a NOTES section: lines that
/// start with white space (the exit status table) as they are, the rest filled.
fn notes_section(text: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["NOTES"]);
    let mut verbatim = false;
    for line in text.lines() {
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
    names.sort();
    for name in names {
        println!("{}", dir.join(name).display());
    }
    Ok(())
}
