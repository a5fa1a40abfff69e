//! `apiary plugins list|audit|watch`: what a plugins folder holds, everything a reviewer
//! needs about one plugin, and a live view of a folder as plugins come and go.
//!
//! `list` and `audit` say who signed each plugin (the record `plugins install` leaves,
//! [`apiary::package::provenance`]): `list` re-verifies the signature and hashes the
//! manifest and component but compares weights by size, `audit` hashes everything.
//! Trusted means in `trusted-authors` (or `--trust`). Loading does not depend on it.

use super::plugins_pack::{TrustedAuthors, trust_for_display};
use super::{CliError, Context, SandboxArgs, exit, to_json};
use apiary::package::TrustPolicy;
use apiary::package::provenance::{self, Depth, SignerReport};
use apiary::plugins::registry::{Listing, Status};
use apiary::plugins::{Registry, audit};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct PluginsCommand {
    #[command(subcommand)]
    command: PluginsSubcommand,
}

#[derive(Subcommand)]
enum PluginsSubcommand {
    /// Load every plugin in a folder and report each as loaded or refused (with why).
    List(ListArgs),
    /// Everything a reviewer needs about one plugin (folder or .wasm): hash, imports,
    /// exports, manifest, limits, data, and whether it loads.
    Audit(AuditArgs),
    /// Watch a folder and report plugins as they are added, replaced or removed.
    Watch(WatchArgs),
    /// Start a new plugin crate from a template (`--kind rule` or `--kind model`).
    New(super::plugins_new::NewArgs),
    /// Build a plugin crate for wasm32-wasip2 and lay out its plugin folder.
    Build(super::plugins_new::BuildArgs),
    /// Load a plugin as a node would and try every export with a standard set of
    /// requests; non-zero exit on any failure.
    Check(super::plugins_check::CheckArgs),
    /// Pack a plugin folder into one signed file (NAME-VERSION.apiary).
    Pack(super::plugins_pack::PackArgs),
    /// Verify a package's signature and hashes, then unpack it into the plugins folder.
    Install(super::plugins_pack::InstallArgs),
}

impl PluginsCommand {
    pub fn run(self, ctx: &Context) -> Result<ExitCode, CliError> {
        let sandbox = ctx.sandbox;
        match self.command {
            PluginsSubcommand::List(c) => c.run(ctx),
            PluginsSubcommand::Audit(c) => c.run(ctx),
            PluginsSubcommand::Watch(c) => c.run(sandbox),
            PluginsSubcommand::New(c) => c.run(),
            PluginsSubcommand::Build(c) => c.run(),
            PluginsSubcommand::Check(c) => c.run(sandbox),
            PluginsSubcommand::Pack(c) => c.run(sandbox),
            PluginsSubcommand::Install(c) => c.run(ctx),
        }
    }
}

#[derive(Args)]
struct ListArgs {
    #[arg(env = "APIARY_PLUGINS", default_value = "plugins")]
    dir: PathBuf,
    /// Each plugin's JSON has a "signer" object (state, author, trusted, modified).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trusted: TrustedAuthors,
}

impl ListArgs {
    fn run(mut self, ctx: &Context) -> Result<ExitCode, CliError> {
        let trust = trust_for_display(ctx, &mut self.trusted)?;
        let registry = ctx.sandbox.registry(&self.dir)?;
        let listing = registry.listing();
        let signers: Vec<SignerReport> = listing.iter().map(|l| signer(l, &trust)).collect();
        if self.json {
            let mut out = Vec::new();
            for (l, s) in listing.iter().zip(&signers) {
                let mut v = serde_json::to_value(l).map_err(CliError::output)?;
                v["signer"] = serde_json::to_value(s).map_err(CliError::output)?;
                out.push(v);
            }
            println!("{}", to_json(&out)?);
            return Ok(ExitCode::SUCCESS);
        }
        let s = registry.sandbox();
        println!(
            "{} plugins in {} (instances: {}; tensor kernels: {})",
            listing.len(),
            self.dir.display(),
            if s.pooling() {
                "pooling allocator"
            } else {
                "on-demand allocation"
            },
            apiary::tensor::backend_name()
        );
        for (l, s) in listing.iter().zip(&signers) {
            print_listing(&registry, l);
            println!("           {s}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Who signed a listed plugin, by the quick check (weights by size).
fn signer(l: &Listing, trust: &TrustPolicy) -> SignerReport {
    SignerReport::new(provenance::check(&l.path, Depth::Quick), trust)
}

fn print_listing(registry: &Registry, l: &Listing) {
    match &l.status {
        Status::Loaded {
            name,
            version,
            domains,
            sha256,
            quarantined,
        } => {
            // The limits after the operator's ceilings, not what plugin.toml asked for.
            let limits = registry.get(&l.id).map(|p| p.limits).unwrap_or_default();
            println!(
                "  loaded   {:<14} {name} {version}  [{}]  sha256 {}  answer {} ms, {} MiB{}",
                l.id,
                domains.join(", "),
                &sha256[..12],
                limits.answer_ms,
                limits.memory_mib,
                if *quarantined { "  QUARANTINED" } else { "" }
            );
        }
        Status::Refused { reason } => {
            println!("  refused  {:<14} {reason}", l.id);
        }
    }
}

#[derive(Args)]
struct AuditArgs {
    path: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    trusted: TrustedAuthors,
}

impl AuditArgs {
    /// A refusal is the audit's finding, not a failure to audit: the report is printed
    /// either way and the exit code (3) says which. A modified or unsigned plugin that
    /// loads is reported, not refused: the node would load it too.
    fn run(mut self, ctx: &Context) -> Result<ExitCode, CliError> {
        let trust = trust_for_display(ctx, &mut self.trusted)?;
        let sandbox = ctx.sandbox.sandbox()?;
        let report = audit::audit(&sandbox, &self.path, &trust);
        if self.json {
            println!("{}", to_json(&report)?);
        } else {
            print!("{report}");
        }
        Ok(if report.refused.is_none() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::AUDIT_REFUSED)
        })
    }
}

#[derive(Args)]
struct WatchArgs {
    #[arg(env = "APIARY_PLUGINS", default_value = "plugins")]
    dir: PathBuf,
}

impl WatchArgs {
    /// JSON lines on stdout, one per listing and then one per change, for tools to
    /// follow; runs until killed.
    fn run(self, sandbox: &SandboxArgs) -> Result<ExitCode, CliError> {
        let registry = sandbox.registry(&self.dir)?;
        for l in registry.listing() {
            println!("{}", serde_json::to_string(&l).unwrap_or_default());
        }
        let _watch = registry
            .watch(|report| println!("{}", serde_json::to_string(report).unwrap_or_default()))
            .map_err(|e| CliError::Plugins(format!("cannot watch {}: {e}", self.dir.display())))?;
        println!("watching {} (Ctrl-C to stop)", self.dir.display());
        loop {
            std::thread::park();
        }
    }
}
