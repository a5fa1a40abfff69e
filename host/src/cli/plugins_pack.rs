//! `apiary plugins pack|install`: signed packages ([`apiary::package`]).
//!
//! `pack` signs with the author key (`apiary keys new`); `install` admits a package by the
//! operator's trust policy, whose three settings are config keys like any flag's:
//! `trusted-authors = ["ed25519:..."]` (`--trust`, repeatable, replaces the file's list
//! as every flag replaces its key), `allow-unsigned` and `allow-unknown-authors`. Before
//! an installed plugin is moved into place it is loaded here as the node would load it:
//! a package that would be refused never replaces a plugin that works.

use super::config::{Merge, path_json};
use super::{CliError, Context, SandboxArgs, to_json};
use apiary::package::provenance::SignerReport;
use apiary::package::{
    self, Admission, AuthorKey, Installed, Limits, Packed, Provenance, Signer, TrustPolicy,
};
use apiary::plugins::loader;
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The trust list, for `install` and for what `list` and `audit` call trusted.
#[derive(Args, Clone, Default)]
pub struct TrustedAuthors {
    /// Trust packages signed by this author key (`ed25519:<hex>`, what `apiary keys show`
    /// prints); repeat for several. Replaces the config file's `trusted-authors`.
    #[arg(
        long = "trust",
        id = "trusted_authors",
        value_name = "ed25519:HEX",
        env = "APIARY_TRUSTED_AUTHORS",
        value_delimiter = ','
    )]
    keys: Vec<AuthorKey>,
}

impl TrustedAuthors {
    pub fn configure(&mut self, merge: &mut Merge) -> Result<(), CliError> {
        let file = super::config::parse_list::<AuthorKey>(
            "trusted-authors",
            merge.file,
            &merge.file.values.trusted_authors,
        )?;
        merge.take("trusted-authors", &mut self.keys, file, |k| {
            json!(k.iter().map(ToString::to_string).collect::<Vec<_>>())
        });
        Ok(())
    }

    /// The trust list alone: nothing unsigned or unknown is admitted.
    pub fn policy(&self) -> TrustPolicy {
        TrustPolicy {
            trusted: self.keys.clone(),
            ..Default::default()
        }
    }
}

/// The operator's trust policy for `install` (and `config show`).
#[derive(Args, Clone, Default)]
pub struct TrustArgs {
    #[command(flatten)]
    trusted: TrustedAuthors,
    /// Install packages that are not signed at all (nothing says who made them).
    #[arg(long, env = "APIARY_ALLOW_UNSIGNED")]
    allow_unsigned: bool,
    /// Install packages whose signature is valid but by a key not in the trust list.
    #[arg(
        long = "allow-unknown-author",
        id = "allow_unknown_authors",
        alias = "allow-unknown-authors",
        env = "APIARY_ALLOW_UNKNOWN_AUTHORS"
    )]
    allow_unknown_authors: bool,
}

impl TrustArgs {
    pub fn configure(&mut self, merge: &mut Merge) -> Result<(), CliError> {
        self.trusted.configure(merge)?;
        let v = &merge.file.values;
        let (unsigned, unknown) = (v.allow_unsigned, v.allow_unknown_authors);
        merge.take("allow-unsigned", &mut self.allow_unsigned, unsigned, |b| {
            json!(b)
        });
        merge.take(
            "allow-unknown-authors",
            &mut self.allow_unknown_authors,
            unknown,
            |b| json!(b),
        );
        Ok(())
    }

    pub fn policy(&self) -> TrustPolicy {
        TrustPolicy {
            allow_unsigned: self.allow_unsigned,
            allow_unknown: self.allow_unknown_authors,
            ..self.trusted.policy()
        }
    }
}

/// The trust list for `list` and `audit`: `--trust`, else the environment, else the
/// config file.
pub fn trust_for_display(
    ctx: &Context,
    trusted: &mut TrustedAuthors,
) -> Result<TrustPolicy, CliError> {
    let mut merge = Merge::new(ctx.command, ctx.leaf(), ctx.config);
    trusted.configure(&mut merge)?;
    Ok(trusted.policy())
}

fn package_error(e: package::PackageError) -> CliError {
    CliError::Package(e.to_string())
}

#[derive(Args)]
pub struct PackArgs {
    /// The plugin folder (plugin.toml, the .wasm, weights/).
    dir: PathBuf,
    /// Folder to write NAME-VERSION.apiary into.
    #[arg(long, value_name = "FOLDER", default_value = ".")]
    out: PathBuf,
    /// The author key to sign with. Default: ~/.config/apiary/author.key.
    #[arg(long, env = "APIARY_AUTHOR_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Make an unsigned package (it installs only with --allow-unsigned).
    #[arg(long)]
    unsigned: bool,
    /// Print {"path", "size", "files", "signer", "name", "version"}.
    #[arg(long)]
    json: bool,
}

impl PackArgs {
    pub fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        let signer = if self.unsigned {
            None
        } else {
            Some(super::keys::load(self.key.as_deref())?)
        };
        // Only a plugin.toml without a name or version needs the plugin loaded.
        let dir = self.dir.clone();
        let mut describe = || {
            let s = sandbox.sandbox().map_err(|e| e.to_string())?;
            let cache = sandbox.cache(&s);
            loader::load(&s, cache.as_ref(), &dir)
                .map(|p| (p.name, p.version))
                .map_err(|e| e.to_string())
        };
        let packed = package::pack(
            &self.dir,
            signer.as_ref(),
            &self.out,
            &Limits::default(),
            &mut describe,
        )
        .map_err(package_error)?;
        if self.json {
            println!("{}", to_json(&packed_json(&packed))?);
        } else {
            print_packed(&packed);
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn packed_json(p: &Packed) -> serde_json::Value {
    json!({
        "path": path_json(&p.path),
        "name": p.index.name,
        "version": p.index.version,
        "size": p.size,
        "files": p.index.files.len(),
        "signer": p.signer.map(|k| k.to_string()),
    })
}

fn print_packed(p: &Packed) {
    println!("packed {}", p.path.display());
    println!("  plugin   {} {}", p.index.name, p.index.version);
    println!("  size     {} bytes ({})", p.size, human_bytes(p.size));
    println!("  files    {}", p.index.files.len());
    match p.signer {
        Some(k) => println!("  signer   {k}"),
        None => println!("  signer   none (unsigned: installs only with --allow-unsigned)"),
    }
}

/// Bytes in binary units, one decimal.
fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[derive(Args)]
pub struct InstallArgs {
    /// The package file (NAME-VERSION.apiary).
    file: PathBuf,
    /// The node's plugins folder. Default: the config file's `plugins`, else ./plugins.
    #[arg(long, env = "APIARY_PLUGINS", default_value = "plugins")]
    plugins: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Most files a package may hold.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_files)]
    max_files: usize,
    /// Most bytes a package's files may add up to (default 8 GiB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_bytes)]
    max_bytes: u64,
    /// Print {"name", "version", "path", "replaced", "files", "bytes", "signer", "took_ms"}.
    #[arg(long)]
    json: bool,
}

impl InstallArgs {
    pub fn run(mut self, ctx: &Context) -> Result<ExitCode, CliError> {
        let started = Instant::now();
        let mut merge = Merge::new(ctx.command, ctx.leaf(), ctx.config);
        let from_file = ctx.config.values.plugins.clone();
        merge.take("plugins", &mut self.plugins, from_file, |p| path_json(p));
        self.trust.configure(&mut merge)?;
        let policy = self.trust.policy();
        let limits = Limits {
            max_files: self.max_files,
            max_bytes: self.max_bytes,
        };
        let sandbox = ctx.sandbox;
        // The unpacked plugin must load as the node would load it before it goes in.
        let check = |staged: &Path| -> Result<(), String> {
            let s = sandbox.sandbox().map_err(|e| e.to_string())?;
            let cache = sandbox.cache(&s);
            loader::load(&s, cache.as_ref(), staged)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let done = package::install(&self.file, &self.plugins, &policy, &limits, Some(&check))
            .map_err(package_error)?;
        let took = started.elapsed();
        let signer = signer_report(&done, &policy);
        if self.json {
            let v = json!({
                "name": done.name,
                "version": done.version,
                "path": path_json(&done.path),
                "replaced": done.replaced,
                "files": done.files,
                "bytes": done.bytes,
                "admission": done.admission,
                "signer": signer,
                "took_ms": took.as_millis() as u64,
            });
            println!("{}", to_json(&v)?);
        } else {
            print_installed(&done, &signer, took);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The signer as `list` shows it, from what `install` just verified.
fn signer_report(done: &Installed, policy: &TrustPolicy) -> SignerReport {
    let (name, version) = (done.name.clone(), done.version.clone());
    let checked = package::Depth::Full;
    let provenance = match done.signer {
        Signer::Unsigned => Provenance::Unsigned {
            name,
            version,
            checked,
            modified: vec![],
        },
        Signer::Signed(author) => Provenance::Signed {
            author,
            name,
            version,
            checked,
            modified: vec![],
        },
    };
    SignerReport::new(provenance, policy)
}

fn print_installed(done: &Installed, signer: &SignerReport, took: std::time::Duration) {
    println!(
        "installed {} {} in {}{}",
        done.name,
        done.version,
        done.path.display(),
        if done.replaced {
            " (replaced the previous version)"
        } else {
            ""
        }
    );
    println!("  signer   {signer}");
    if done.admission == Admission::UnknownAuthor {
        println!("           admitted by --allow-unknown-author / allow-unknown-authors");
    }
    println!(
        "  files    {} ({} bytes, {}), every sha256 checked",
        done.files,
        done.bytes,
        human_bytes(done.bytes)
    );
    println!("  took     {:.2} s", took.as_secs_f64());
}
