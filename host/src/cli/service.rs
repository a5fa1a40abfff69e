//! `apiary service install|uninstall`: run the node in the background as this user, at
//! low priority, restarted if it fails. On Linux that is a systemd user unit,
//! `$XDG_CONFIG_HOME/systemd/user/apiary.service` (`~/.config/systemd/user`), enabled and
//! started with `systemctl --user`. Where systemctl is missing or refuses (a container, no
//! user session bus) the unit is still written and the commands to run are printed.
//! Other platforms are not automated: the command says what to set up by hand.

use super::{CliError, Context};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The unit's name.
pub const UNIT: &str = "apiary.service";

#[derive(Args)]
pub struct ServiceCommand {
    #[command(subcommand)]
    command: ServiceSubcommand,
}

#[derive(Subcommand)]
enum ServiceSubcommand {
    /// Write the service (with `run --config PATH` if --config is given), enable it at
    /// login and start it now.
    Install(InstallArgs),
    /// Stop and disable the service and remove its file.
    Uninstall(UninstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// Only write the unit file: do not enable or start it.
    #[arg(long)]
    no_start: bool,
}

#[derive(Args)]
struct UninstallArgs {
    /// Only remove the unit file: do not call systemctl to stop and disable it.
    #[arg(long)]
    no_stop: bool,
}

impl ServiceCommand {
    /// Uninstalling must work whatever state the config file is in.
    pub fn needs_file(&self) -> bool {
        matches!(self.command, ServiceSubcommand::Install(_))
    }

    pub fn run(self, ctx: &Context) -> Result<ExitCode, CliError> {
        match self.command {
            ServiceSubcommand::Install(a) => install(ctx, &a),
            ServiceSubcommand::Uninstall(a) => uninstall(&a),
        }
    }
}

/// `$XDG_CONFIG_HOME/systemd/user/apiary.service`, else `~/.config/systemd/user/...`.
pub fn unit_path() -> Result<PathBuf, CliError> {
    super::config::config_home()
        .map(|d| d.join("systemd").join("user").join(UNIT))
        .ok_or_else(|| {
            CliError::Service(
                "neither XDG_CONFIG_HOME nor HOME is set: no place for the unit".into(),
            )
        })
}

/// The command line the service runs: this executable, `run`, and `--config` made
/// absolute (the service does not start in this folder).
fn exec_args(ctx: &Context) -> Result<Vec<String>, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Service(format!("cannot tell where this apiary binary is: {e}")))?;
    let mut args = vec![exe.display().to_string(), "run".to_string()];
    if let Some(c) = ctx.config_flag {
        let abs = std::path::absolute(c).unwrap_or_else(|_| c.to_path_buf());
        args.push("--config".into());
        args.push(abs.display().to_string());
    }
    Ok(args)
}

/// One word of `ExecStart=`: quoted when it has to be; `%` and `$` doubled (systemd
/// expands specifiers and variables there).
fn unit_word(w: &str) -> String {
    let escaped = w.replace('%', "%%").replace('$', "$$");
    if !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\' | ';'))
    {
        escaped
    } else {
        let inner = escaped.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{inner}\"")
    }
}

/// The unit file's text.
pub fn unit_text(args: &[String]) -> String {
    let exec: Vec<String> = args.iter().map(|a| unit_word(a)).collect();
    format!(
        "# Written by `apiary service install`; `apiary service uninstall` removes it.\n\
         [Unit]\n\
         Description=Apiary swarm-inference node (apiary run)\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         # A guest on this computer: lowest CPU and disk priority.\n\
         Nice=10\n\
         IOSchedulingClass=idle\n\
         CPUSchedulingPolicy=batch\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec.join(" ")
    )
}

/// `systemctl` on PATH, if there is one.
fn systemctl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("systemctl"))
        .find(|p| p.is_file())
}

/// Run `systemctl --user ARGS`; the error says what it printed.
fn run_systemctl(exe: &Path, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(exe)
        .arg("--user")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if said.is_empty() {
            format!("exited with {}", out.status)
        } else {
            said
        })
    }
}

const START: &[&[&str]] = &[&["daemon-reload"], &["enable", "--now", UNIT]];
const STOP: &[&[&str]] = &[&["disable", "--now", UNIT]];
const RELOAD: &[&[&str]] = &[&["daemon-reload"]];

fn commands_text(steps: &[&[&str]]) -> String {
    steps
        .iter()
        .map(|s| format!("  systemctl --user {}", s.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run each step, stopping at the first failure; false (with the commands printed) if
/// systemctl is missing or a step failed.
fn systemctl_steps(steps: &[&[&str]]) -> bool {
    let Some(exe) = systemctl() else {
        println!(
            "systemctl is not on PATH; run these where systemd is:\n{}",
            commands_text(steps)
        );
        return false;
    };
    for step in steps {
        if let Err(e) = run_systemctl(&exe, step) {
            println!(
                "`systemctl --user {}` failed: {e}\nrun these yourself (in your login session):\n{}",
                step.join(" "),
                commands_text(steps)
            );
            return false;
        }
    }
    true
}

fn install(ctx: &Context, a: &InstallArgs) -> Result<ExitCode, CliError> {
    if !cfg!(target_os = "linux") {
        return not_automated(ctx);
    }
    let path = unit_path()?;
    let text = unit_text(&exec_args(ctx)?);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Service(format!("cannot create {}: {e}", dir.display())))?;
    let existed = path.exists();
    std::fs::write(&path, &text)
        .map_err(|e| CliError::Service(format!("cannot write {}: {e}", path.display())))?;
    println!(
        "{} {}",
        if existed { "replaced" } else { "wrote" },
        path.display()
    );
    if a.no_start {
        println!(
            "not started (--no-start); to start it now and at every login:\n{}",
            commands_text(START)
        );
    } else if systemctl_steps(START) {
        println!("enabled and started {UNIT}: it starts at every login and restarts if it fails");
        println!("state: systemctl --user status apiary");
    }
    println!("logs:  journalctl --user -u apiary -f");
    println!("node:  apiary status");
    println!(
        "to keep it running while you are logged out: loginctl enable-linger {}",
        std::env::var("USER").unwrap_or_else(|_| "$USER".into())
    );
    Ok(ExitCode::SUCCESS)
}

fn uninstall(a: &UninstallArgs) -> Result<ExitCode, CliError> {
    if !cfg!(target_os = "linux") {
        return Err(CliError::Service(
            "`apiary service` is not automated on this platform: remove the launchd agent or \
             scheduled task you set up"
                .into(),
        ));
    }
    let path = unit_path()?;
    if !a.no_stop {
        // Best effort: a unit that was never started, or no systemd, is not a failure.
        if let Some(exe) = systemctl() {
            match run_systemctl(&exe, STOP[0]) {
                Ok(()) => println!("stopped and disabled {UNIT}"),
                Err(e) => println!("(systemctl --user disable --now {UNIT}: {e})"),
            }
        } else {
            println!(
                "systemctl is not on PATH; if the service runs, stop it with:\n{}",
                commands_text(STOP)
            );
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} does not exist: nothing to remove", path.display())
        }
        Err(e) => {
            return Err(CliError::Service(format!(
                "cannot remove {}: {e}",
                path.display()
            )));
        }
    }
    if !a.no_stop && systemctl().is_some() {
        let _ = systemctl().map(|exe| run_systemctl(&exe, RELOAD[0]));
    }
    Ok(ExitCode::SUCCESS)
}

/// macOS and Windows: what to set up by hand, and an error saying so.
fn not_automated(ctx: &Context) -> Result<ExitCode, CliError> {
    let args = exec_args(ctx)?;
    if cfg!(target_os = "macos") {
        let program: String = args
            .iter()
            .map(|a| format!("      <string>{a}</string>\n"))
            .collect();
        println!(
            "Write ~/Library/LaunchAgents/org.apiary.node.plist:\n\n\
             <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\"><dict>\n\
             \x20   <key>Label</key><string>org.apiary.node</string>\n\
             \x20   <key>ProgramArguments</key><array>\n{program}\
             \x20   </array>\n\
             \x20   <key>RunAtLoad</key><true/>\n\
             \x20   <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
             \x20   <key>ProcessType</key><string>Background</string>\n\
             \x20   <key>Nice</key><integer>10</integer>\n\
             \x20   <key>LowPriorityIO</key><true/>\n\
             </dict></plist>\n\n\
             then: launchctl load -w ~/Library/LaunchAgents/org.apiary.node.plist"
        );
    } else {
        println!(
            "Create a scheduled task that starts at logon, e.g.:\n  \
             schtasks /Create /SC ONLOGON /RL LIMITED /TN Apiary /TR \"{}\"\n\
             and set its priority to below normal in Task Scheduler.",
            args.join(" ")
        );
    }
    Err(CliError::Service(
        "`apiary service install` is automated only on Linux (systemd); set it up as shown above"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(unit_word("/usr/bin/apiary"), "/usr/bin/apiary");
        assert_eq!(unit_word("/home/a b/apiary"), "\"/home/a b/apiary\"");
        assert_eq!(unit_word("/x/100%"), "/x/100%%");
        assert_eq!(unit_word("/x/$HOME"), "/x/$$HOME");
        assert_eq!(unit_word("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn the_unit_runs_at_low_priority() {
        let t = unit_text(&["/bin/apiary".into(), "run".into()]);
        for line in [
            "ExecStart=/bin/apiary run",
            "Nice=10",
            "IOSchedulingClass=idle",
            "CPUSchedulingPolicy=batch",
            "Restart=on-failure",
            "RestartSec=10",
            "WantedBy=default.target",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing from\n{t}");
        }
    }
}
