//! `apiary plugins new|build`: a plugin crate from a template, and its plugin folder.
//! The work is in `apiary::author`; this file holds the flags and what is printed.

use super::CliError;
use apiary::author::build::{self, BuildError};
use apiary::author::scaffold::{self, Kind, NewPlugin, ScaffoldError};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct NewArgs {
    /// The plugin's name, which is also its crate's: lower-case letters, digits, `-` and
    /// `_`, starting with a letter.
    name: String,
    /// `rule`: computes its answers and judges by recomputing them. `model`: runs a GGUF
    /// language model (SmolLM2) on the host's tensor kernels and judges by likelihood.
    #[arg(long, default_value = "rule", value_name = "rule|model")]
    kind: Kind,
    /// The folder to make the crate's folder in.
    #[arg(long, value_name = "PARENT", default_value = ".")]
    dir: PathBuf,
    /// The `plugin-api` folder of an Apiary checkout to depend on (it is not on
    /// crates.io). Default: the checkout this apiary was built from.
    #[arg(long, value_name = "PATH")]
    api: Option<PathBuf>,
}

impl NewArgs {
    pub fn run(self) -> Result<ExitCode, CliError> {
        let made = scaffold::create(&NewPlugin {
            name: self.name.clone(),
            kind: self.kind,
            parent: self.dir,
            api: self.api,
        })
        .map_err(scaffold_error)?;
        let dir = made.dir.display();
        println!(
            "created {} plugin `{}` in {dir} (apiary-plugin-api from {})",
            self.kind,
            self.name,
            made.api.display()
        );
        for f in &made.files {
            println!("  {}", f.strip_prefix(&made.dir).unwrap_or(f).display());
        }
        println!("next:");
        if self.kind == Kind::Model {
            println!(
                "  put {} in {dir}/weights/ (weights/README.md says where to get it)",
                scaffold::MODEL_WEIGHTS_FILE
            );
        }
        println!("  (cd {dir} && cargo test --release)");
        println!("  apiary plugins build {dir}");
        println!("  apiary plugins check {dir}");
        Ok(ExitCode::SUCCESS)
    }
}

fn scaffold_error(e: ScaffoldError) -> CliError {
    match e {
        ScaffoldError::Io { .. } | ScaffoldError::Template { .. } => {
            CliError::Output(e.to_string())
        }
        _ => CliError::Usage(e.to_string()),
    }
}

#[derive(Args)]
pub struct BuildArgs {
    /// The plugin crate (the folder `apiary plugins new` made).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to lay out the plugin folder: FOLDER/NAME/{plugin.toml, NAME.wasm, weights/}.
    /// A node's plugins folder works: the plugin appears there complete. Default:
    /// DIR/target/plugin.
    #[arg(long, value_name = "FOLDER")]
    out: Option<PathBuf>,
}

impl BuildArgs {
    /// cargo's progress and diagnostics go to stderr; stdout is the folder's path alone,
    /// for scripts.
    pub fn run(self) -> Result<ExitCode, CliError> {
        let built = build::build(&self.dir, self.out.as_deref()).map_err(build_error)?;
        eprintln!(
            "built {} in {:.1} s: {} ({} KiB of wasm{})",
            built.name,
            built.cargo_time.as_secs_f64(),
            built.folder.display(),
            built.wasm_bytes.div_ceil(1024),
            match built.weight_files {
                0 => String::new(),
                n => format!(", {n} files in weights/"),
            }
        );
        println!("{}", shown(&built.folder));
        Ok(ExitCode::SUCCESS)
    }
}

/// A path as the user would type it next: absolute when it can be.
fn shown(p: &Path) -> String {
    p.canonicalize()
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

fn build_error(e: BuildError) -> CliError {
    match e {
        BuildError::NotACrate(_) | BuildError::OutTaken(_) => CliError::Usage(e.to_string()),
        _ => CliError::Build(e.to_string()),
    }
}
