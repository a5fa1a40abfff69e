//! `apiary keys new|show`: the author key that signs plugin packages.
//!
//! One key per author, kept like the node key ([`apiary::keyfile`]: 32 secret bytes,
//! mode 0600, written whole) at `~/.config/apiary/author.key` beside the config file, or
//! wherever `--key FILE` / `APIARY_AUTHOR_KEY` say. What an author hands out is the public
//! half as `keys show` prints it, `ed25519:<64 hex>`: operators paste exactly that into
//! `trusted-authors`. `keys new` never replaces a key without `--force`: every package
//! signed with the old key would then be from an unknown author.

use super::{CliError, to_json};
use apiary::package::{AuthorSigner, KeyError};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The key file's name in the `apiary` config folder.
pub const KEY_FILE: &str = "author.key";

#[derive(Args)]
pub struct KeysCommand {
    /// The author key file. Default: ~/.config/apiary/author.key ($XDG_CONFIG_HOME/apiary).
    #[arg(long, global = true, env = "APIARY_AUTHOR_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: KeysSubcommand,
}

#[derive(Subcommand)]
enum KeysSubcommand {
    /// Create the author key (refuses to replace one without --force).
    New(NewArgs),
    /// Print the author key's public half, `ed25519:<hex>`: what operators trust.
    Show(ShowArgs),
}

#[derive(Args)]
struct NewArgs {
    /// Replace an existing key. Packages signed with the old one will show as from an
    /// unknown author wherever only the old key is trusted.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ShowArgs {
    /// Print {"key": "ed25519:...", "file": PATH}.
    #[arg(long)]
    json: bool,
}

/// `--key FILE`, else `~/.config/apiary/author.key`.
pub fn key_path(flag: Option<&Path>) -> Result<PathBuf, CliError> {
    match flag {
        Some(p) => Ok(p.to_path_buf()),
        None => super::config::config_home()
            .map(|d| d.join("apiary").join(KEY_FILE))
            .ok_or_else(|| {
                CliError::Package(
                    "no place for the author key: set XDG_CONFIG_HOME or HOME, or pass --key FILE"
                        .into(),
                )
            }),
    }
}

/// The author key at `--key FILE` (or the default place), for signing.
pub fn load(flag: Option<&Path>) -> Result<AuthorSigner, CliError> {
    AuthorSigner::load(&key_path(flag)?).map_err(key_error)
}

pub fn key_error(e: KeyError) -> CliError {
    CliError::Package(e.to_string())
}

impl KeysCommand {
    pub fn run(self, _ctx: &super::Context) -> Result<ExitCode, CliError> {
        let path = key_path(self.key.as_deref())?;
        match self.command {
            KeysSubcommand::New(a) => {
                let key = AuthorSigner::create(&path, a.force).map_err(key_error)?;
                println!("{}", key.public());
                eprintln!(
                    "created author key {} (keep it secret; back it up). Operators who trust your \
                     packages add the public key above to `trusted-authors` in their config file, \
                     or pass --trust {} to `apiary plugins install`.",
                    path.display(),
                    key.public()
                );
            }
            KeysSubcommand::Show(a) => {
                let key = AuthorSigner::load(&path).map_err(key_error)?;
                if a.json {
                    println!(
                        "{}",
                        to_json(&json!({
                            "key": key.public().to_string(),
                            "file": path.display().to_string(),
                        }))?
                    );
                } else {
                    println!("{}", key.public());
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
