//! The `apiary` command line. Each command lives in its own file under `cli/`; this file
//! only parses the command line, sets up logging and dispatches.

mod cli;

use clap::Parser;
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
    #[command(subcommand)]
    command: cli::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command.run(&cli.sandbox) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
