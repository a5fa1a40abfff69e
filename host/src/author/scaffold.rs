//! `apiary plugins new`: a ready plugin crate from a template.
//!
//! The templates are files in `templates/`, compiled into the binary (`include_str!`), so
//! a released `apiary` can scaffold without a checkout, and each template is a file an
//! editor shows as what it is. Placeholders are `{{key}}`; rendering refuses a template
//! that is left with one it does not know, so a typo in a template fails its unit test,
//! not an author's build. The model kind's network and tokenizer are the `smollm`
//! plugin's own files, included as they are: a new model plugin starts from code that is
//! tested and measured, and cannot drift from it.
//!
//! The crate depends on `apiary-plugin-api` by path (it is not on crates.io): this
//! checkout's by default, found from where the host was built. Its `Cargo.lock` is seeded
//! from the checkout's, so the plugin builds with the dependency versions the checkout was
//! tested with, which a shared `CARGO_TARGET_DIR` has already compiled.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of specialist to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Computes answers by rules (word counts, string reversal) and judges by recomputing.
    Rule,
    /// Runs a GGUF language model on the host's tensor kernels and judges by likelihood.
    Model,
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rule" => Ok(Kind::Rule),
            "model" => Ok(Kind::Model),
            other => Err(format!("unknown kind {other:?}: use `rule` or `model`")),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Rule => "rule",
            Kind::Model => "model",
        })
    }
}

/// The weights file the model template loads (SmolLM2-135M-Instruct, what `smollm` runs).
pub const MODEL_WEIGHTS_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Why a crate could not be made. Each message says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{name:?} is not a valid plugin name: {why}")]
    InvalidName { name: String, why: String },
    #[error(
        "{} already exists; choose another name or --dir, or remove it first (nothing was written)",
        .0.display()
    )]
    Exists(PathBuf),
    #[error(
        "cannot find apiary-plugin-api: {0}. It is not on crates.io; pass --api PATH to the plugin-api folder of an Apiary checkout"
    )]
    NoApi(String),
    #[error("template {template} uses {{{{{key}}}}}, which has no value (a bug in apiary)")]
    Template { template: &'static str, key: String },
    #[error("cannot write {}: {message}", path.display())]
    Io { path: PathBuf, message: String },
}

/// Names no plugin may take: Rust keywords and the crates a plugin links with (a package
/// named like its dependency does not build).
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "apiary-plugin-api",
    "apiary_plugin_api",
    "apiary-tensor",
    "apiary_tensor",
    "wit-bindgen",
    "wit_bindgen",
];

/// Check that `name` can be a crate's name, a plugin's folder and its `.wasm` file:
/// 1–64 characters, lower-case ASCII letters, digits, `-` and `_`, starting with a letter,
/// and not a keyword or a crate a plugin depends on.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let invalid = |why: &str| {
        Err(ScaffoldError::InvalidName {
            name: name.chars().take(80).collect(),
            why: why.to_string(),
        })
    };
    if name.is_empty() || name.len() > 64 {
        return invalid("use 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("start with a lower-case letter (e.g. `word-count`)");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return invalid(&format!(
            "{c:?} is not allowed; use lower-case letters, digits, `-` and `_`"
        ));
    }
    if name.ends_with(['-', '_']) {
        return invalid("end with a letter or digit");
    }
    if RESERVED.contains(&name) {
        return invalid("it is a Rust keyword or the name of a crate plugins depend on");
    }
    Ok(())
}

/// `word-count` → `WordCount`: the specialist's type name.
pub fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Replace every `{{key}}` of `template` by its value. A placeholder without a value is an
/// error naming it (`template` names the file in the message).
pub fn render(
    template_name: &'static str,
    template: &str,
    values: &[(&str, &str)],
) -> Result<String, ScaffoldError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| ScaffoldError::Template {
            template: template_name,
            key: after.chars().take(20).collect(),
        })?;
        let key = &after[..end];
        let value = values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| ScaffoldError::Template {
                template: template_name,
                key: key.to_string(),
            })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One file of a template: where it goes in the crate, and its text.
struct File {
    path: &'static str,
    template: &'static str,
    /// Rendered (placeholders filled) or copied as it is (Rust sources of other crates).
    render: bool,
}

const fn rendered(path: &'static str, template: &'static str) -> File {
    File {
        path,
        template,
        render: true,
    }
}

const fn copied(path: &'static str, template: &'static str) -> File {
    File {
        path,
        template,
        render: false,
    }
}

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");
const GITIGNORE: &str = include_str!("templates/gitignore.in");

fn files(kind: Kind) -> Vec<File> {
    let common = [
        rendered("Cargo.toml", CARGO_TOML),
        rendered(".gitignore", GITIGNORE),
    ];
    let own = match kind {
        Kind::Rule => vec![
            rendered("src/lib.rs", include_str!("templates/rule/lib.rs.in")),
            rendered("plugin.toml", include_str!("templates/rule/plugin.toml.in")),
            rendered("README.md", include_str!("templates/rule/README.md.in")),
        ],
        Kind::Model => vec![
            rendered("src/lib.rs", include_str!("templates/model/lib.rs.in")),
            copied(
                "src/model.rs",
                include_str!("../../../plugins/smollm/src/model.rs"),
            ),
            copied(
                "src/tokenizer.rs",
                include_str!("../../../plugins/smollm/src/tokenizer.rs"),
            ),
            rendered(
                "plugin.toml",
                include_str!("templates/model/plugin.toml.in"),
            ),
            rendered("README.md", include_str!("templates/model/README.md.in")),
            rendered(
                "weights/README.md",
                include_str!("templates/model/weights-README.md.in"),
            ),
        ],
    };
    common.into_iter().chain(own).collect()
}

/// What to make.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    pub name: String,
    pub kind: Kind,
    /// The folder the crate's folder is made in.
    pub parent: PathBuf,
    /// The `plugin-api` folder to depend on; `None`: this checkout's.
    pub api: Option<PathBuf>,
}

/// What was made.
#[derive(Debug, Clone)]
pub struct Made {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub api: PathBuf,
    /// Whether `Cargo.lock` was seeded from the checkout's.
    pub lock_seeded: bool,
}

/// This checkout's `plugin-api`, found from where the host was built.
pub fn checkout_api() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api")
}

/// The `plugin-api` folder to depend on, absolute, checked to be that crate.
pub fn find_api(given: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    let (dir, source) = match given {
        Some(p) => (p.to_path_buf(), "--api"),
        None => (checkout_api(), "this apiary's checkout"),
    };
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        ScaffoldError::NoApi(format!(
            "{} (from {source}) has no readable Cargo.toml ({e})",
            dir.display()
        ))
    })?;
    if !text.contains("name = \"apiary-plugin-api\"") {
        return Err(ScaffoldError::NoApi(format!(
            "{} (from {source}) is not the apiary-plugin-api crate",
            dir.display()
        )));
    }
    dir.canonicalize()
        .map_err(|e| ScaffoldError::NoApi(format!("{}: {e}", dir.display())))
}

/// Make the crate. Refuses an invalid name and an existing folder before writing anything;
/// if writing fails halfway, what was written is removed.
pub fn create(new: &NewPlugin) -> Result<Made, ScaffoldError> {
    validate_name(&new.name)?;
    let api = find_api(new.api.as_deref())?;
    let dir = new.parent.join(&new.name);
    if std::fs::symlink_metadata(&dir).is_ok() {
        return Err(ScaffoldError::Exists(dir));
    }
    let io = |path: &Path, e: std::io::Error| ScaffoldError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&new.parent).map_err(|e| io(&new.parent, e))?;
    // create_dir, not create_dir_all: if the folder appeared meanwhile, stop.
    std::fs::create_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(dir.clone()),
        _ => io(&dir, e),
    })?;
    match write_files(new, &api, &dir) {
        Ok(made) => Ok(made),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn write_files(new: &NewPlugin, api: &Path, dir: &Path) -> Result<Made, ScaffoldError> {
    let api_path = api.to_string_lossy().replace('\\', "/");
    let type_name = type_name(&new.name);
    let description = match new.kind {
        Kind::Rule => "Counts words and reverses text".to_string(),
        Kind::Model => {
            "A small language model (SmolLM2-135M-Instruct) on the host's tensor kernels"
                .to_string()
        }
    };
    let values = [
        ("name", new.name.as_str()),
        ("type_name", type_name.as_str()),
        ("description", description.as_str()),
        ("api_path", api_path.as_str()),
        ("weights_file", MODEL_WEIGHTS_FILE),
    ];
    let mut written = Vec::new();
    for f in files(new.kind) {
        let text = if f.render {
            render(f.path, f.template, &values)?
        } else {
            f.template.to_string()
        };
        let path = dir.join(f.path);
        write(&path, &text)?;
        written.push(path);
    }
    let lock_seeded = seed_lock(api, dir)?;
    if lock_seeded {
        written.push(dir.join("Cargo.lock"));
    }
    Ok(Made {
        dir: dir.to_path_buf(),
        files: written,
        api: api.to_path_buf(),
        lock_seeded,
    })
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    let io = |e: std::io::Error| ScaffoldError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

/// Copy the lock file of the workspace `api` belongs to, if it has one: cargo keeps the
/// versions it needs from it and drops the rest.
fn seed_lock(api: &Path, dir: &Path) -> Result<bool, ScaffoldError> {
    let Some(lock) = api.parent().map(|w| w.join("Cargo.lock")) else {
        return Ok(false);
    };
    if !lock.is_file() {
        return Ok(false);
    }
    let dest = dir.join("Cargo.lock");
    std::fs::copy(&lock, &dest).map_err(|e| ScaffoldError::Io {
        path: dest,
        message: e.to_string(),
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_crate_names() {
        for ok in ["words", "word-count", "w2v", "my_plugin", "a"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let why = |n: &str| validate_name(n).unwrap_err().to_string();
        assert!(why("").contains("1 to 64"), "{}", why(""));
        assert!(why(&"a".repeat(65)).contains("1 to 64"));
        assert!(why("2fast").contains("start with a lower-case letter"));
        assert!(why("Words").contains("start with a lower-case letter"));
        assert!(why("-x").contains("start with"));
        assert!(
            why("word count").contains("' ' is not allowed"),
            "{}",
            why("word count")
        );
        assert!(why("a/b").contains("'/' is not allowed"));
        assert!(why("../x").contains("start with"));
        assert!(why("é").contains("start with"));
        assert!(why("trailing-").contains("end with"));
        assert!(why("self").contains("keyword"));
        assert!(why("apiary-plugin-api").contains("crate plugins depend on"));
        assert!(why("test").contains("keyword"));
        // Control characters reach the message escaped, never as they are.
        assert!(!why("a\u{1b}[2J").contains('\u{1b}'));
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("word-count"), "WordCount");
        assert_eq!(type_name("my_plugin2"), "MyPlugin2");
        assert_eq!(type_name("a"), "A");
        assert_eq!(type_name("a--b"), "AB");
    }

    #[test]
    fn rendering_fills_every_placeholder_or_says_which_is_missing() {
        let out = render("t", "name = \"{{name}}\" {{name}}!", &[("name", "x")]).unwrap();
        assert_eq!(out, "name = \"x\" x!");
        assert_eq!(
            render("t", "no placeholders", &[]).unwrap(),
            "no placeholders"
        );
        let e = render("t", "a {{nope}} b", &[("name", "x")]).unwrap_err();
        assert!(e.to_string().contains("{{nope}}"), "{e}");
        assert!(render("t", "a {{open", &[]).is_err());
    }

    /// Every template renders with the values `create` gives, leaving no placeholder,
    /// and the copied Rust sources need none.
    #[test]
    fn every_template_renders_completely() {
        let values = [
            ("name", "demo"),
            ("type_name", "Demo"),
            ("description", "d"),
            ("api_path", "/x/plugin-api"),
            ("weights_file", MODEL_WEIGHTS_FILE),
        ];
        for kind in [Kind::Rule, Kind::Model] {
            let files = files(kind);
            for f in &files {
                if f.render {
                    let out = render(f.path, f.template, &values).unwrap();
                    assert!(!out.contains("{{"), "{kind} {}: {out}", f.path);
                }
            }
            let paths: Vec<&str> = files.iter().map(|f| f.path).collect();
            for must in ["Cargo.toml", "src/lib.rs", "plugin.toml", "README.md"] {
                assert!(paths.contains(&must), "{kind} lacks {must}");
            }
            assert_eq!(paths.contains(&"weights/README.md"), kind == Kind::Model);
        }
        let cargo = render("Cargo.toml", CARGO_TOML, &values).unwrap();
        assert!(cargo.contains("crate-type = [\"cdylib\"]"));
        assert!(cargo.contains("apiary-plugin-api = { path = \"/x/plugin-api\" }"));
        assert!(cargo.contains("\n[workspace]\n"), "{cargo}");
        let manifest = render(
            "plugin.toml",
            include_str!("templates/rule/plugin.toml.in"),
            &values,
        )
        .unwrap();
        let parsed = crate::plugins::manifest::PluginManifest::parse(&manifest).unwrap();
        assert_eq!(parsed.wasm.as_deref(), Some("demo.wasm"));
        let model = render(
            "plugin.toml",
            include_str!("templates/model/plugin.toml.in"),
            &values,
        )
        .unwrap();
        assert!(crate::plugins::manifest::PluginManifest::parse(&model).is_ok());
    }

    #[test]
    fn kinds_parse_and_print() {
        assert_eq!("rule".parse::<Kind>(), Ok(Kind::Rule));
        assert_eq!("model".parse::<Kind>(), Ok(Kind::Model));
        assert!(
            "llm"
                .parse::<Kind>()
                .unwrap_err()
                .contains("`rule` or `model`")
        );
        assert_eq!(Kind::Model.to_string(), "model");
    }

    #[test]
    fn refuses_existing_folders_and_bad_names_before_writing() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("taken")).unwrap();
        std::fs::write(parent.path().join("taken/keep.txt"), "mine").unwrap();
        let new = |name: &str| NewPlugin {
            name: name.into(),
            kind: Kind::Rule,
            parent: parent.path().to_path_buf(),
            api: None,
        };
        let e = create(&new("taken")).unwrap_err();
        assert!(matches!(e, ScaffoldError::Exists(_)), "{e}");
        assert_eq!(
            std::fs::read_to_string(parent.path().join("taken/keep.txt")).unwrap(),
            "mine"
        );
        assert!(matches!(
            create(&new("Bad Name")),
            Err(ScaffoldError::InvalidName { .. })
        ));
        assert!(!parent.path().join("Bad Name").exists());
        let e = create(&NewPlugin {
            api: Some(parent.path().to_path_buf()),
            ..new("fresh")
        })
        .unwrap_err();
        assert!(e.to_string().contains("pass --api PATH"), "{e}");
        assert!(!parent.path().join("fresh").exists());
    }

    #[test]
    fn makes_a_rule_crate_against_this_checkout() {
        let parent = tempfile::tempdir().unwrap();
        let made = create(&NewPlugin {
            name: "word-count".into(),
            kind: Kind::Rule,
            parent: parent.path().to_path_buf(),
            api: None,
        })
        .unwrap();
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct WordCount;"));
        assert!(lib.contains("export_specialist!(WordCount);"));
        let cargo = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains(&format!("path = \"{}\"", made.api.display())));
        assert!(made.api.join("src/lib.rs").is_file());
        assert!(made.lock_seeded && made.dir.join("Cargo.lock").is_file());
        assert!(!made.dir.join("weights").exists());
    }
}
