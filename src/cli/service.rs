//! `popsync service install|uninstall|status [--dry-run]`: the agent as the user's service
//! (see [`crate::service`] for what is written and run).
//!
//! Exit status: 0 done (or nothing to do); 69 (exit::UNAVAILABLE) the service manager could not
//! be reached or refused, with the steps left to do by hand printed; 73 (exit::CANT_CREATE) a
//! file could not be written or removed; 78 the configuration cannot be used. `status`: 0
//! installed and running, 3 not installed or not running (as `systemctl is-active` says), 69
//! the service manager could not be asked.

use crate::exit;
use std::path::{Path, PathBuf};

use super::Cli;
use crate::config::{self, Config};
use crate::daemon::control::DaemonLock;
use crate::service::{
    self, Action, Cmd, Failed, FailedHow, Platform, Target, launchd, systemd, windows,
};

/// Run the agent as your session's service: a systemd user unit (Linux), a launchd agent
/// (macOS) or a startup entry under the HKCU Run key (Windows)
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    action: ServiceAction,
}

#[derive(Debug, clap::Subcommand)]
enum ServiceAction {
    /// Write the service for this popsync binary and configuration, then enable and start it
    /// (again: rewrites it, restarting the agent only if something changed)
    Install {
        /// Print the files it would write and the commands it would run; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop the service and remove everything `service install` created (the logs stay)
    Uninstall {
        /// Print the commands it would run and the files it would remove; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Whether the service is installed, up to date and running
    Status,
}

pub fn run(cli: &Cli, args: &ServiceArgs) -> u8 {
    let platform = Platform::current();
    match &args.action {
        ServiceAction::Install { dry_run } => install(cli, platform, *dry_run),
        ServiceAction::Uninstall { dry_run } => uninstall(cli, platform, *dry_run),
        ServiceAction::Status => status(cli, platform),
    }
}

fn install(cli: &Cli, platform: Platform, dry_run: bool) -> u8 {
    // A service whose configuration cannot be read would only fail, again and again.
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let target = match target(&config.file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    if !cli.quiet {
        warn_about_surprises(&target);
    }
    let agent = DaemonLock::running(&config.state_dir).map(|d| d.pid);
    let plan = match service::install_plan(
        platform,
        &target,
        |p| std::fs::read_to_string(p).ok(),
        agent,
    ) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("popsync: cannot install the service: {e}");
            return exit::CONFIG;
        }
    };
    if dry_run {
        println!(
            "# popsync service install --dry-run: the steps, in order, that make popsync's agent {}; nothing is written or run",
            platform.describe()
        );
        print!("{}", service::render(&plan));
        return 0;
    }
    if let Err(failed) = service::execute(&plan, &mut progress(cli)) {
        return report_failure(platform, &plan, &failed, Some(&target));
    }
    if !cli.quiet {
        println!();
        print!("{}", installed_text(platform, &target));
    }
    0
}

/// Where the steps are told as they are done: standard output, unless --quiet.
fn progress(cli: &Cli) -> Box<dyn std::io::Write> {
    if cli.quiet {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stdout())
    }
}

fn uninstall(cli: &Cli, platform: Platform, dry_run: bool) -> u8 {
    let config_file = match cli.config_file() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match target(&config_file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    // The agent is found through its state directory, if the configuration can be read.
    let agent = Config::load(&config_file, super::state_override())
        .ok()
        .and_then(|c| DaemonLock::running(&c.state_dir))
        .map(|d| d.pid);
    let plan = service::uninstall_plan(platform, &target, Path::exists, agent);
    if plan.is_empty() {
        if !cli.quiet {
            println!(
                "popsync is not installed as {} ({} is not there): nothing to do",
                platform.describe(),
                service_file(platform, &target).display()
            );
        }
        return 0;
    }
    if dry_run {
        println!(
            "# popsync service uninstall --dry-run: the steps, in order, that remove popsync's agent as {}; nothing is removed or run",
            platform.describe()
        );
        print!("{}", service::render(&plan));
        return 0;
    }
    if let Err(failed) = service::execute(&plan, &mut progress(cli)) {
        return report_failure(platform, &plan, &failed, None);
    }
    if !cli.quiet {
        println!("popsync's agent is no longer {}", platform.describe());
    }
    0
}

/// The paths the service is for: this binary and the configuration, both absolute.
fn target(config_file: &Path) -> Result<Target, u8> {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("popsync: cannot tell where this popsync binary is: {e}");
            return Err(exit::CANT_CREATE);
        }
    };
    let config = std::path::absolute(config_file).unwrap_or_else(|_| config_file.to_owned());
    let Some(dirs) = directories::BaseDirs::new() else {
        eprintln!("popsync: cannot find your home directory");
        return Err(exit::CONFIG);
    };
    Ok(Target {
        exe,
        config,
        home: dirs.home_dir().to_owned(),
        config_home: dirs.config_dir().to_owned(),
        data_home: dirs.data_dir().to_owned(),
        uid: uid(),
    })
}

#[cfg(unix)]
fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(not(unix))]
fn uid() -> u32 {
    0
}

fn warn_about_surprises(target: &Target) {
    if std::env::var_os(config::STATE_DIR_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!(
            "popsync: warning: ${} is set here, but the service will not see it; put `state-dir` in {} instead",
            config::STATE_DIR_ENV,
            target.config.display()
        );
    }
    let exe = target.exe.to_string_lossy();
    let sep = std::path::MAIN_SEPARATOR;
    if [
        format!("{sep}target{sep}debug{sep}"),
        format!("{sep}target{sep}release{sep}"),
    ]
    .iter()
    .any(|d| exe.contains(d.as_str()))
    {
        eprintln!(
            "popsync: warning: the service will run {exe}, inside a cargo build directory; `cargo install --path .` and install from there, so that a rebuild or `cargo clean` does not stop it"
        );
    }
}

fn service_file(platform: Platform, target: &Target) -> PathBuf {
    match platform {
        Platform::Systemd => systemd::unit_path(&target.config_home),
        Platform::Launchd => launchd::plist_path(&target.home),
        Platform::Windows => PathBuf::from(format!("{}\\{}", windows::RUN_KEY, windows::VALUE)),
    }
}

fn installed_text(platform: Platform, target: &Target) -> String {
    match platform {
        Platform::Systemd => {
            "popsync's agent runs as a systemd user service, and starts whenever you log in\n\
             (to have it run without a login: loginctl enable-linger).\n\
             \x20 status:  popsync service status     (or: systemctl --user status popsync)\n\
             \x20 log:     journalctl --user -u popsync\n\
             \x20 remove:  popsync service uninstall\n"
                .to_owned()
        }
        Platform::Launchd => format!(
            "popsync's agent runs as a launchd agent, and starts whenever you log in.\n\
             \x20 status:  popsync service status     (or: launchctl print {})\n\
             \x20 log:     {}\n\
             \x20 remove:  popsync service uninstall\n",
            launchd::service_target(target.uid),
            launchd::log_dir(&target.home).join("popsync.log").display()
        ),
        Platform::Windows => {
            "popsync's agent starts whenever you log on, in a console window of its own (closing\n\
             the window stops it cleanly).\n\
             \x20 status:  popsync service status\n\
             \x20 remove:  popsync service uninstall\n"
                .to_owned()
        }
    }
}

/// Says what failed and why, and prints the steps left to do by hand.
fn report_failure(
    platform: Platform,
    plan: &[Action],
    failed: &Failed,
    installing: Option<&Target>,
) -> u8 {
    // Whether the service manager could not be talked to at all (rather than refusing).
    let unreachable = match &failed.what {
        FailedHow::File { path, source } => {
            eprintln!("popsync: cannot write {}: {source}", path.display());
            return exit::CANT_CREATE;
        }
        FailedHow::NotStarted { cmd, source } => {
            if source.kind() == std::io::ErrorKind::NotFound {
                eprintln!(
                    "popsync: {} is not installed, so the service manager cannot be told ({} is {}'s tool)",
                    cmd.program,
                    cmd.program,
                    manager_name(platform)
                );
            } else {
                eprintln!("popsync: cannot run {}: {source}", cmd.program);
            }
            true
        }
        FailedHow::Status {
            cmd,
            status,
            stderr,
        } => {
            eprintln!("popsync: `{}` failed ({status}): {stderr}", cmd.display());
            let no_bus = platform == Platform::Systemd && no_user_bus(stderr);
            if no_bus {
                eprintln!(
                    "popsync: the systemd user manager is not reachable: this session has no user bus \
                     (logged in over ssh or su without a systemd user session, in a container, or on a \
                     system without systemd)"
                );
            }
            no_bus
        }
    };
    if unreachable {
        eprintln!(
            "To finish by hand, once {} can be reached:",
            manager_name(platform)
        );
    } else {
        eprintln!("To finish by hand, once the cause above is mended:");
    }
    for action in &plan[failed.step..] {
        eprintln!("  {}", service::step_line(action));
    }
    if let Some(target) = installing {
        eprintln!(
            "Until then, the agent runs in a terminal with: {}",
            service::agent_command(target).display()
        );
    }
    exit::UNAVAILABLE
}

fn manager_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Systemd => "the systemd user manager",
        Platform::Launchd => "launchd",
        Platform::Windows => "the registry",
    }
}

/// Whether systemctl's complaint means there is no user manager to talk to.
fn no_user_bus(stderr: &str) -> bool {
    [
        "Failed to connect to bus",
        "No medium found",
        "$DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

fn status(cli: &Cli, platform: Platform) -> u8 {
    let config_file = match cli.config_file() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match target(&config_file) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let file = service_file(platform, &target);
    println!("service:  {}", platform.describe());
    let (installed, running) = match platform {
        Platform::Systemd | Platform::Launchd => {
            let expected = match platform {
                Platform::Systemd => systemd::unit(&target.exe, &target.config),
                _ => launchd::plist(&target.exe, &target.config, &target.home),
            };
            let installed = match std::fs::read_to_string(&file) {
                Err(_) => {
                    println!("file:     {} (not installed)", file.display());
                    false
                }
                Ok(text) => {
                    let state = match &expected {
                        Ok(e) if *e == text => "up to date".to_owned(),
                        _ => format!(
                            "not what `popsync service install` would write now for {} and {}: run it again to update",
                            target.exe.display(),
                            target.config.display()
                        ),
                    };
                    println!("file:     {} ({state})", file.display());
                    true
                }
            };
            let answer = if platform == Platform::Systemd {
                systemd_state()
            } else {
                launchd_state(target.uid)
            };
            match answer {
                Ok((enabled, active)) => {
                    println!("enabled:  {enabled}");
                    println!("running:  {active}");
                    (installed, active == "active" || active == "running")
                }
                Err(e) => {
                    println!("running:  unknown ({e})");
                    return exit::UNAVAILABLE;
                }
            }
        }
        Platform::Windows => {
            let query = windows::reg(&["query", windows::RUN_KEY, "/v", windows::VALUE]);
            let installed = query.run().is_ok_and(|o| o.status.success());
            println!(
                "entry:    {} ({})",
                file.display(),
                if installed { "there" } else { "not installed" }
            );
            (installed, false)
        }
    };
    let agent = agent_pid(&config_file);
    match agent {
        Some(pid) => println!("agent:    process {pid}"),
        None => println!("agent:    not running for {}", config_file.display()),
    }
    // Windows has no service manager to ask: the agent's own lock tells.
    let running = running || (platform == Platform::Windows && agent.is_some());
    if installed && running {
        exit::OK
    } else {
        exit::NOT_RUNNING
    }
}

fn agent_pid(config_file: &Path) -> Option<u32> {
    Config::load(config_file, super::state_override())
        .ok()
        .and_then(|c| DaemonLock::running(&c.state_dir))
        .map(|d| d.pid)
}

/// (`is-enabled`, `is-active`) as systemctl answers them.
fn systemd_state() -> Result<(String, String), String> {
    let ask = |what: &str| {
        let cmd = systemd::systemctl(&[what, systemd::UNIT]);
        let out = cmd
            .run()
            .map_err(|e| format!("cannot run systemctl: {e}"))?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if no_user_bus(&err) {
            return Err(format!("`{}`: {err}", cmd.display()));
        }
        // A unit systemd does not know: `is-enabled` says so on stderr only.
        Ok(if answer.is_empty() {
            format!("no ({err})")
        } else {
            answer
        })
    };
    Ok((ask("is-enabled")?, ask("is-active")?))
}

/// ("loaded" or "not loaded", the job's state) as `launchctl print` tells them.
fn launchd_state(uid: u32) -> Result<(String, String), String> {
    let cmd: Cmd = launchd::launchctl(&["print", &launchd::service_target(uid)]);
    let out = cmd
        .run()
        .map_err(|e| format!("cannot run launchctl: {e}"))?;
    if !out.status.success() {
        return Ok(("not loaded".to_owned(), "no".to_owned()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let state = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("state = "))
        .unwrap_or("unknown")
        .to_owned();
    Ok(("loaded".to_owned(), state))
}
