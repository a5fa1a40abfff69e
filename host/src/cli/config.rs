//! The configuration file and `apiary config show|path`.
//!
//! `~/.config/apiary/config.toml` (`$XDG_CONFIG_HOME/apiary/config.toml`, or the file
//! named by `--config`) holds every `apiary run` flag and every global sandbox flag as a
//! key of the same name without the dashes (`join-ms = 5000`, `listen = ["/ip4/..."]`),
//! the trust policy of `apiary plugins install` (`trusted-authors = ["ed25519:..."]`,
//! `allow-unsigned`, `allow-unknown-authors`), and a `[governor]` table of
//! [`apiary::governor::Rules`]. A value comes from, highest
//! first: the command line, the flag's environment variable, the file, the default.
//! clap says which of the first two set a value ([`ArgMatches::value_source`]), so the
//! file only replaces values clap took from a default ([`Merge::take`]). Relative paths
//! in the file are relative to the file's folder; `~/` is the home folder.
//!
//! A missing default file is no file; a missing `--config` file is an error. Unknown keys
//! and values of the wrong type are errors that name the key: each key is checked on its
//! own against the struct the file deserializes into, so serde's message is about that
//! key alone.

use super::{CliError, to_json};
use apiary::governor::Rules;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The file's name in the `apiary` config folder.
pub const FILE_NAME: &str = "config.toml";

/// What the file may say. Values that clap parses for a flag (addresses, the tensor
/// backend) are kept as text and parsed where the flag's type is known
/// ([`parse_value`]), with the key in the error.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Values {
    // `apiary run`
    pub plugins: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<Vec<String>>,
    pub bootstrap: Option<Vec<String>>,
    pub http: Option<String>,
    pub api_key: Option<String>,
    pub no_mdns: Option<bool>,
    pub join_ms: Option<u64>,
    pub answer_ms: Option<u64>,
    pub judge_ms: Option<u64>,
    pub max_members: Option<usize>,
    pub pairs_per_judge: Option<usize>,
    pub threshold: Option<f32>,
    pub no_clip: Option<bool>,
    pub no_reputation: Option<bool>,
    pub max_rounds: Option<usize>,
    pub queue: Option<usize>,
    pub known_answers: Option<PathBuf>,
    pub known_every: Option<f64>,
    // `apiary plugins install` (and what `list` and `audit` call trusted)
    pub trusted_authors: Option<Vec<String>>,
    pub allow_unsigned: Option<bool>,
    pub allow_unknown_authors: Option<bool>,
    // global flags
    pub cache_dir: Option<PathBuf>,
    pub no_cache: Option<bool>,
    pub max_memory_mib: Option<u64>,
    pub max_answer_ms: Option<u64>,
    pub max_compare_ms: Option<u64>,
    pub max_assess_ms: Option<u64>,
    pub tensor_backend: Option<String>,
    pub log: Option<String>,
    /// `[governor]`: checked key by key against [`Rules`], kept as written so `config
    /// show` can tell which rules the file set.
    pub governor: Option<toml::Table>,
}

/// The configuration file as read: where it is, whether it exists, what it says.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// `None` when there is neither `--config`, `$XDG_CONFIG_HOME` nor `$HOME`.
    pub path: Option<PathBuf>,
    pub found: bool,
    pub values: Values,
    /// The `[governor]` table over the default rules (not yet validated: a `--governor`
    /// flag may still change the mode; see [`ConfigFile::rules`]).
    pub rules: Rules,
}

/// `$XDG_CONFIG_HOME/apiary/config.toml`, else `~/.config/apiary/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    config_home().map(|d| d.join("apiary").join(FILE_NAME))
}

/// `$XDG_CONFIG_HOME`, else `~/.config` (empty values count as unset, as XDG says).
pub fn config_home() -> Option<PathBuf> {
    let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_CONFIG_HOME")
        .and_then(nonempty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(nonempty)
                .map(|h| h.join(".config"))
        })
}

impl ConfigFile {
    /// No file read: defaults, environment and flags only.
    pub fn absent(path: Option<PathBuf>) -> Self {
        ConfigFile {
            path,
            ..Default::default()
        }
    }

    /// The file `--config` names (which must exist), else the default one (which may not).
    pub fn load(explicit: Option<&Path>) -> Result<Self, CliError> {
        let (path, required) = match explicit {
            Some(p) => (Some(p.to_path_buf()), true),
            None => (default_path(), false),
        };
        let Some(path) = path else {
            return Ok(Self::absent(None));
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Self::absent(Some(path)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError::Config(format!(
                "config file {} does not exist (--config or APIARY_CONFIG names it; \
                 without either, apiary reads {} if it exists)",
                path.display(),
                default_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no file".into())
            ))),
            Err(e) => Err(CliError::Config(format!(
                "cannot read config file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Parse `text` as the file at `path` (for error messages and relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Self, CliError> {
        let name = path.display().to_string();
        let fail = |m: String| CliError::Config(format!("{name}: {m}"));
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(e.to_string().trim_end().to_string()))?;
        for (key, value) in &table {
            if key == "governor" {
                let Some(rules) = value.as_table() else {
                    return Err(fail(format!(
                        "key \"governor\": expected a table (a [governor] section), got {}",
                        show(value)
                    )));
                };
                for (k, v) in rules {
                    check_key::<Rules>(k, &format!("governor.{k}"), v).map_err(fail)?;
                }
            } else {
                check_key::<Values>(key, key, value).map_err(fail)?;
            }
        }
        let mut values: Values = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| fail(e.message().to_string()))?;
        let rules = match &values.governor {
            Some(t) => toml::Value::Table(t.clone())
                .try_into()
                .map_err(|e: toml::de::Error| fail(format!("[governor]: {}", e.message())))?,
            None => Rules::default(),
        };
        // Checked here too, so that every command refuses invalid rules, not only `run`.
        rules.validate().map_err(fail)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut values.plugins,
            &mut values.data_dir,
            &mut values.cache_dir,
            &mut values.known_answers,
        ]
        .into_iter()
        .flatten()
        {
            *p = resolve(base, p);
        }
        let file = ConfigFile {
            path: Some(path.to_path_buf()),
            found: true,
            values,
            rules,
        };
        // Values a flag's own parser reads are checked now too, for every command.
        parse_list::<libp2p::Multiaddr>("listen", &file, &file.values.listen)?;
        parse_list::<libp2p::Multiaddr>("bootstrap", &file, &file.values.bootstrap)?;
        parse_list::<apiary::package::AuthorKey>(
            "trusted-authors",
            &file,
            &file.values.trusted_authors,
        )?;
        if let Some(t) = &file.values.tensor_backend {
            parse_value::<apiary::tensor::backend::Choice>("tensor-backend", &file, t)?;
        }
        Ok(file)
    }

    /// The governor's rules: the file's `[governor]` table, the mode replaced by the
    /// `--governor` flag if one was given, validated.
    pub fn rules(&self, mode: Option<apiary::governor::Mode>) -> Result<Rules, CliError> {
        let mut rules = self.rules.clone();
        if let Some(m) = mode {
            rules.mode = m;
        }
        rules.validate().map_err(|e| {
            CliError::Config(match &self.path {
                Some(p) if self.found => format!("{}: {e}", p.display()),
                _ => format!("governor rules: {e}"),
            })
        })?;
        Ok(rules)
    }

    /// Whether the file's `[governor]` table sets `key`.
    pub fn sets_rule(&self, key: &str) -> bool {
        self.values
            .governor
            .as_ref()
            .is_some_and(|t| t.contains_key(key))
    }

    fn source(&self) -> Source {
        Source::File(self.path.clone().unwrap_or_default())
    }
}

/// `~/x` is in the home folder; a relative path is relative to the file's folder.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

/// Deserialize `{key = value}` alone into `T`, so an error is about that key only.
fn check_key<T: DeserializeOwned>(
    key: &str,
    shown: &str,
    value: &toml::Value,
) -> Result<(), String> {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value.clone());
    match toml::Value::Table(one).try_into::<T>() {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.message();
            if msg.starts_with("unknown field") {
                let known = msg.split_once("expected").map_or("", |(_, k)| k);
                let hint = closest(key, &backticked(known))
                    .map(|k| format!(" (did you mean \"{k}\"?)"))
                    .unwrap_or_else(|| {
                        " (the keys are the flags of `apiary run` without the dashes; \
                         `apiary config show` lists them)"
                            .into()
                    });
                Err(format!("unknown key \"{shown}\"{hint}"))
            } else {
                Err(format!("key \"{shown}\": {}", explain(msg, value)))
            }
        }
    }
}

/// The names between backticks in a serde message (`expected one of `a`, `b``).
fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

/// A known key within two edits of `key`, or that `key` is a prefix of.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2 || k.starts_with(key))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// serde's `invalid type: string "soon", expected u64` in words an operator reads:
/// `expected an integer, got "soon"`.
fn explain(msg: &str, value: &toml::Value) -> String {
    let got = show(value);
    let Some((head, expected)) = msg.rsplit_once(", expected ") else {
        return msg.to_string();
    };
    let unsigned = matches!(expected, "u8" | "u16" | "u32" | "u64" | "usize");
    let wanted = match expected {
        _ if unsigned && head.starts_with("invalid value: integer") => {
            if got.starts_with('-') {
                "a non-negative integer".to_string()
            } else {
                let max = match expected {
                    "u8" => u8::MAX as u64,
                    "u16" => u16::MAX as u64,
                    "u32" => u32::MAX as u64,
                    _ => u64::MAX,
                };
                format!("an integer from 0 to {max}")
            }
        }
        _ if unsigned => "an integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "path string" | "a borrowed string" => "a string".into(),
        "a sequence" => "an array".into(),
        other => other.to_string(),
    };
    format!("expected {wanted}, got {got}")
}

/// A value as it is written in TOML, on one line, shortened.
fn show(value: &toml::Value) -> String {
    let text = match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Table(_) => "a table".to_string(),
        other => other.to_string().replace('\n', " "),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// A file value that a flag's own parser reads (an address, the tensor backend).
pub fn parse_value<T>(key: &str, file: &ConfigFile, text: &str) -> Result<T, CliError>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    text.parse().map_err(|e| {
        CliError::Config(format!(
            "{}: key \"{key}\": {text:?} is not valid: {e}",
            file.path
                .as_deref()
                .unwrap_or(Path::new(FILE_NAME))
                .display()
        ))
    })
}

/// Each of a file's texts parsed as a flag's values.
pub fn parse_list<T>(
    key: &str,
    file: &ConfigFile,
    texts: &Option<Vec<String>>,
) -> Result<Option<Vec<T>>, CliError>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    texts
        .as_ref()
        .map(|v| v.iter().map(|t| parse_value(key, file, t)).collect())
        .transpose()
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag => write!(f, "flag"),
        }
    }
}

impl Source {
    fn to_json(&self) -> Value {
        match self {
            Source::Default => json!({"source": "default"}),
            Source::File(p) => json!({"source": "file", "file": p.display().to_string()}),
            Source::Env(v) => json!({"source": "env", "var": v}),
            Source::Flag => json!({"source": "flag"}),
        }
    }
}

/// One effective setting, for `config show`.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The file's key (`governor.mode` for a rule).
    pub key: String,
    /// The value in effect; `null` for an unset option.
    pub value: Value,
    pub source: Source,
}

/// Merges the file into what clap parsed, one setting at a time, and records where each
/// value came from.
pub struct Merge<'a> {
    command: &'a clap::Command,
    matches: &'a ArgMatches,
    pub file: &'a ConfigFile,
    pub settings: Vec<Setting>,
}

impl<'a> Merge<'a> {
    /// `matches` are the matches that hold the flags being merged (the top level's for
    /// global flags, the subcommand's for its own); `command` is the whole CLI, where
    /// the flags' environment variable names are looked up.
    pub fn new(command: &'a clap::Command, matches: &'a ArgMatches, file: &'a ConfigFile) -> Self {
        Merge {
            command,
            matches,
            file,
            settings: Vec::new(),
        }
    }

    /// Where the value of the flag for `key` comes from, given whether the file sets it.
    pub fn source_of(&self, key: &str, in_file: bool) -> Source {
        let id = key.replace('-', "_");
        let source = match self.matches.try_contains_id(&id) {
            Ok(_) => self.matches.value_source(&id),
            Err(_) => None,
        };
        match source {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => {
                Source::Env(env_var(self.command, &id).unwrap_or_else(|| "?".into()))
            }
            _ if in_file => self.file.source(),
            _ => Source::Default,
        }
    }

    /// The setting `key`: `slot` holds what clap parsed; the file's value replaces it
    /// unless a flag or an environment variable set it. `show` renders the value in
    /// effect for `config show`.
    pub fn take<T>(
        &mut self,
        key: &str,
        slot: &mut T,
        from_file: Option<T>,
        show: impl FnOnce(&T) -> Value,
    ) {
        let source = self.source_of(key, from_file.is_some());
        if let (Source::File(_), Some(v)) = (&source, from_file) {
            *slot = v;
        }
        let value = show(slot);
        self.record(key, value, source);
    }

    pub fn record(&mut self, key: &str, value: Value, source: Source) {
        self.settings.push(Setting {
            key: key.to_string(),
            value,
            source,
        });
    }

    /// The governor's rules, each recorded with its source; the mode may come from the
    /// `--governor` flag.
    pub fn rules(&mut self, flag: Option<apiary::governor::Mode>) -> Result<Rules, CliError> {
        let rules = self.file.rules(flag)?;
        let shown = serde_json::to_value(&rules).unwrap_or(Value::Null);
        let mut keys: Vec<(String, Value)> = match shown {
            Value::Object(m) => m.into_iter().collect(),
            _ => Vec::new(),
        };
        // Unset options are left out of the serialization; list them as unset.
        if !keys.iter().any(|(k, _)| k == "idle-minutes") {
            keys.push(("idle-minutes".into(), Value::Null));
        }
        // serde_json's map is sorted; `mode` first reads better.
        keys.sort_by(|(a, _), (b, _)| (a != "mode", a).cmp(&(b != "mode", b)));
        for (k, v) in keys {
            let source = if k == "mode" && flag.is_some() {
                Source::Flag
            } else if self.file.sets_rule(&k) {
                self.file.source()
            } else {
                Source::Default
            };
            self.record(&format!("governor.{k}"), v, source);
        }
        Ok(rules)
    }
}

/// The environment variable of the flag with id `id`, wherever it is in the CLI.
fn env_var(command: &clap::Command, id: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_id() == id)
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|s| env_var(s, id)))
}

/// JSON of a path.
pub fn path_json(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

// ---------------------------------------------------------------------------------------
// `apiary config`

#[derive(Args)]
pub struct ConfigCommand {
    #[command(subcommand)]
    command: ConfigSubcommand,
}

// Parsed once per process: the size of `run`'s flags in `show` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ConfigSubcommand {
    /// The settings `apiary run` would use, each with where it comes from (default, file
    /// PATH, env VAR, flag). Takes every `apiary run` flag, to see what one would change.
    Show(ShowArgs),
    /// The path of the configuration file (whether or not it exists yet).
    Path,
}

#[derive(Args)]
struct ShowArgs {
    /// Print JSON: {"file": ..., "settings": {KEY: {"value": ..., "source": ...}}}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: super::run::RunCommand,
    /// `plugins install`'s trust policy (`--trust`, `--allow-unsigned`,
    /// `--allow-unknown-author`), shown as its config keys.
    #[command(flatten)]
    trust: super::plugins_pack::TrustArgs,
}

impl ConfigCommand {
    /// `config path` must work with a broken file: it is how one finds the file to fix.
    pub fn needs_file(&self) -> bool {
        !matches!(self.command, ConfigSubcommand::Path)
    }

    pub fn run(self, ctx: &super::Context) -> Result<ExitCode, CliError> {
        match self.command {
            ConfigSubcommand::Path => {
                let path = ctx.config.path.clone().ok_or_else(|| {
                    CliError::Config(
                        "no config path: set XDG_CONFIG_HOME or HOME, or pass --config PATH".into(),
                    )
                })?;
                println!("{}", path.display());
                Ok(ExitCode::SUCCESS)
            }
            ConfigSubcommand::Show(mut args) => {
                let mut merge = Merge::new(ctx.command, ctx.leaf(), ctx.config);
                args.run.configure(&mut merge)?;
                args.trust.configure(&mut merge)?;
                let mut settings = ctx.global.to_vec();
                settings.extend(merge.settings);
                if args.json {
                    println!("{}", to_json(&show_json(ctx.config, &settings))?);
                } else {
                    print!("{}", show_text(ctx.config, &settings));
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn file_line(file: &ConfigFile) -> String {
    match (&file.path, file.found) {
        (Some(p), true) => format!("# config file {}", p.display()),
        (Some(p), false) => format!("# config file {} (not found: none is read)", p.display()),
        (None, _) => "# no config file (neither XDG_CONFIG_HOME nor HOME is set)".into(),
    }
}

/// The settings as TOML one could paste into the file, each line with its source.
pub fn show_text(file: &ConfigFile, settings: &[Setting]) -> String {
    let mut out = file_line(file) + "\n";
    let mut in_governor = false;
    for s in settings {
        let key = match s.key.strip_prefix("governor.") {
            Some(k) => {
                if !in_governor {
                    out.push_str("\n[governor]\n");
                    in_governor = true;
                }
                k
            }
            None => &s.key,
        };
        let line = match toml_literal(&s.value) {
            Some(v) => format!("{key} = {v}"),
            None => format!("# {key} (unset)"),
        };
        out.push_str(&format!("{line:<48} # {}\n", s.source));
    }
    out
}

pub fn show_json(file: &ConfigFile, settings: &[Setting]) -> Value {
    let mut map = serde_json::Map::new();
    for s in settings {
        let mut entry = s.source.to_json();
        entry["value"] = s.value.clone();
        map.insert(s.key.clone(), entry);
    }
    json!({
        "file": {
            "path": file.path.as_deref().map(path_json),
            "found": file.found,
        },
        "settings": map,
    })
}

/// A JSON value in TOML syntax; `None` for null (TOML has no null).
fn toml_literal(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::String(s) => toml::Value::String(s.clone()).to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .filter_map(toml_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    /// A stand-in CLI with flags shaped like `apiary run`'s: one with a default, one with
    /// an environment variable, one optional, one boolean.
    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, default_value_t = 3_000)]
        join_ms: u64,
        #[arg(
            long,
            env = "APIARY_TEST_CONFIG_HTTP",
            default_value = "127.0.0.1:8080"
        )]
        http: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        no_mdns: bool,
    }

    fn file(text: &str) -> Result<ConfigFile, CliError> {
        ConfigFile::parse(Path::new("/etc/x/config.toml"), text)
    }

    /// Held by every [`merged`]: tests run on parallel threads, and a test building its
    /// command while another has the variable set saw `env` where it expected `default`
    /// (a CI failure of `show_prints_toml_with_sources`).
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn merged(args: &[&str], env: Option<&str>, cfg: &ConfigFile) -> (Cli, Vec<Setting>) {
        let _env = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // clap reads a flag's variable when the command is built.
        let command = match env {
            Some(v) => {
                // SAFETY: only these tests set or read this variable, each holding `ENV`.
                unsafe { std::env::set_var("APIARY_TEST_CONFIG_HTTP", v) };
                let c = Cli::command();
                // SAFETY: as above.
                unsafe { std::env::remove_var("APIARY_TEST_CONFIG_HTTP") };
                c
            }
            None => Cli::command(),
        };
        let matches = command.clone().try_get_matches_from(args).unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let mut m = Merge::new(&command, &matches, cfg);
        m.take("join-ms", &mut cli.join_ms, cfg.values.join_ms, |v| {
            json!(v)
        });
        m.take("http", &mut cli.http, cfg.values.http.clone(), |v| json!(v));
        m.take(
            "data-dir",
            &mut cli.data_dir,
            cfg.values.data_dir.clone().map(Some),
            |v| json!(v),
        );
        m.take("no-mdns", &mut cli.no_mdns, cfg.values.no_mdns, |v| {
            json!(v)
        });
        (cli, m.settings)
    }

    fn source<'a>(settings: &'a [Setting], key: &str) -> &'a Source {
        &settings.iter().find(|s| s.key == key).unwrap().source
    }

    #[test]
    fn file_beats_default_env_beats_file_flag_beats_both() {
        let cfg =
            file("join-ms = 5000\nhttp = \"0.0.0.0:9000\"\ndata-dir = \"data\"\nno-mdns = true\n")
                .unwrap();
        let from_file = Source::File("/etc/x/config.toml".into());

        let (cli, s) = merged(&["t"], None, &cfg);
        assert_eq!(cli.join_ms, 5000);
        assert_eq!(cli.http, "0.0.0.0:9000");
        assert_eq!(
            cli.data_dir.as_deref(),
            Some(Path::new("/etc/x/data")),
            "relative to the file"
        );
        assert!(cli.no_mdns);
        assert_eq!(source(&s, "join-ms"), &from_file);
        assert_eq!(source(&s, "http"), &from_file);

        let (cli, s) = merged(&["t"], Some("10.0.0.1:1"), &cfg);
        assert_eq!(cli.http, "10.0.0.1:1");
        assert_eq!(
            source(&s, "http"),
            &Source::Env("APIARY_TEST_CONFIG_HTTP".into())
        );

        let (cli, s) = merged(
            &["t", "--http", "1.2.3.4:5", "--join-ms", "7"],
            Some("10.0.0.1:1"),
            &cfg,
        );
        assert_eq!(cli.http, "1.2.3.4:5");
        assert_eq!(cli.join_ms, 7);
        assert_eq!(source(&s, "http"), &Source::Flag);
        assert_eq!(source(&s, "join-ms"), &Source::Flag);

        let (cli, s) = merged(&["t"], None, &file("").unwrap());
        assert_eq!(cli.join_ms, 3000);
        assert_eq!(cli.data_dir, None);
        assert!(!cli.no_mdns);
        assert_eq!(source(&s, "join-ms"), &Source::Default);
        assert_eq!(source(&s, "data-dir"), &Source::Default);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = file("join-ms = 1\nmax-round = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/x/config.toml: unknown key \"max-round\""),
            "{e}"
        );
        assert!(e.contains("did you mean \"max-rounds\""), "{e}");
        let e = file("[governor]\npause-above = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"governor.pause-above\""), "{e}");
        let e = file("[network]\nx = 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown key \"network\""), "{e}");
    }

    #[test]
    fn a_bad_value_is_named_with_what_was_expected() {
        let e = file("join-ms = \"soon\"\n").unwrap_err().to_string();
        assert!(
            e.ends_with("config.toml: key \"join-ms\": expected an integer, got \"soon\""),
            "{e}"
        );
        let e = file("no-mdns = \"yes\"\n").unwrap_err().to_string();
        assert!(
            e.contains("key \"no-mdns\": expected true or false, got \"yes\""),
            "{e}"
        );
        let e = file("listen = \"/ip4/0.0.0.0/tcp/1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key \"listen\": expected an array"), "{e}");
        let e = file("max-rounds = -1\n").unwrap_err().to_string();
        assert!(
            e.contains("key \"max-rounds\": expected a non-negative integer, got -1"),
            "{e}"
        );
        let e = file("[governor]\nmode = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key \"governor.mode\""), "{e}");
        assert!(e.contains("sometimes"), "{e}");
        let e = file("governor = 3\n").unwrap_err().to_string();
        assert!(e.contains("key \"governor\": expected a table"), "{e}");
        // A syntax error says where.
        let e = file("join-ms = \n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_file_value_for_a_parsed_flag_names_the_key() {
        let e = file("listen = [\"not an address\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key \"listen\": \"not an address\" is not valid"),
            "{e}"
        );
        let e = file("tensor-backend = \"tpu\"\n").unwrap_err().to_string();
        assert!(e.contains("key \"tensor-backend\""), "{e}");
    }

    #[test]
    fn the_governor_table_parses_validates_and_the_flag_wins() {
        use apiary::governor::Mode;
        let cfg = file("[governor]\nmode = \"never\"\npause-above-percent = 90.0\n").unwrap();
        assert_eq!(cfg.rules.mode.to_string(), Mode::Never.to_string());
        assert_eq!(cfg.rules.pause_above_percent, 90.0);
        let rules = cfg.rules(None).unwrap();
        assert_eq!(rules.mode.to_string(), "never");
        let rules = cfg.rules(Some(Mode::Always)).unwrap();
        assert_eq!(rules.mode.to_string(), "always");
        // Defaults are valid; the table's keys are the rules' own.
        file("").unwrap().rules(None).unwrap();
        // An invalid combination is refused by `Rules::validate`, with the file named.
        let bad = file("[governor]\npause-above-percent = 150.0\n");
        let e = match bad {
            Err(e) => e.to_string(),
            Ok(cfg) => cfg.rules(None).unwrap_err().to_string(),
        };
        assert!(e.contains("config.toml"), "{e}");
    }

    #[test]
    fn show_prints_toml_with_sources() {
        let cfg = file("join-ms = 5000\n").unwrap();
        let (_, s) = merged(&["t", "--no-mdns"], None, &cfg);
        let text = show_text(&cfg, &s);
        assert!(text.contains("join-ms = 5000"), "{text}");
        assert!(text.contains("# file /etc/x/config.toml"), "{text}");
        assert!(text.contains("# data-dir (unset)"), "{text}");
        let line = text.lines().find(|l| l.starts_with("no-mdns")).unwrap();
        assert!(line.ends_with("# flag"), "{text}");
        let j = show_json(&cfg, &s);
        assert_eq!(j["settings"]["join-ms"]["value"], 5000);
        assert_eq!(j["settings"]["join-ms"]["source"], "file");
        assert_eq!(j["settings"]["http"]["source"], "default");
    }
}
