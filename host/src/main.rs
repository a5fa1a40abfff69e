//! The `apiary` command line. Each command lives in its own file under `cli/`; this file
//! only parses the command line, reads the configuration file, sets up logging and
//! dispatches.
//!
//! The command line is parsed into clap's matches first and into [`Cli`] second
//! (`FromArgMatches`), because the matches say which values came from a flag or an
//! environment variable: the configuration file fills in only the others.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "apiary",
    version,
    about = "Swarm inference node: sandboxed specialist plugins that answer and rank each other",
    after_help = cli::exit_codes_help()
)]
struct Cli {
    #[command(flatten)]
    sandbox: cli::SandboxArgs,
    /// Log filter (e.g. `info`, `apiary=debug`); also read from RUST_LOG.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "warn")]
    log: String,
    /// Settings file. Default: $XDG_CONFIG_HOME/apiary/config.toml or
    /// ~/.config/apiary/config.toml, read if it exists (`apiary config show`).
    #[arg(long, global = true, env = "APIARY_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: cli::Command,
}

fn main() -> ExitCode {
    let command = Cli::command();
    let matches = command.clone().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &command, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn run(
    mut cli: Cli,
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> Result<ExitCode, cli::CliError> {
    let file = if cli.command.needs_config() {
        cli::config::ConfigFile::load(cli.config.as_deref())?
    } else {
        cli::config::ConfigFile::absent(cli.config.clone().or_else(cli::config::default_path))
    };
    let mut merge = cli::config::Merge::new(command, matches, &file);
    cli.sandbox.configure(&mut merge)?;
    merge.take("log", &mut cli.log, file.values.log.clone(), |l| json!(l));
    let global = merge.settings;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let ctx = cli::Context {
        sandbox: &cli.sandbox,
        config: &file,
        global: &global,
        config_flag: cli.config.as_deref(),
        command,
        matches,
    };
    cli.command.run(&ctx)
}
