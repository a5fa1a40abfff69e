//! `apiary plugins audit PATH`: everything a security reviewer needs to see first about a
//! plugin — identity (hash), what it imports and whether each import is allowed, what it
//! exports, what it asks for, what it would be granted, what data it ships, and whether
//! the host would load it, and who signed it (the record a package install leaves,
//! re-verified in full: [`crate::package::provenance`]).

use super::loader::{self, LoadError};
use super::safe_read::{FileKind, excerpt};
use crate::package::TrustPolicy;
use crate::package::provenance::{self, Depth, SignerReport};
use crate::sandbox::Sandbox;
use crate::sandbox::limits::{Clamped, Limits, RequestedLimits};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct ImportLine {
    pub name: String,
    pub allowed: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WeightFile {
    pub path: String,
    pub bytes: u64,
    /// Symlinks inside `/weights` can only resolve inside it (cap-std); listed so a
    /// reviewer sees them.
    pub symlink: bool,
    /// Set when it is not a regular file (a FIFO, a device...): the tensor API refuses to
    /// open such a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub special: Option<FileKind>,
}

#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub path: PathBuf,
    pub id: Option<String>,
    pub manifest_file: bool,
    pub wasm_path: Option<PathBuf>,
    pub wasm_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub imports: Vec<ImportLine>,
    pub exports: Vec<String>,
    pub contract: Option<String>,
    pub requested_limits: Option<RequestedLimits>,
    pub granted_limits: Option<Limits>,
    pub clamped: Vec<Clamped>,
    pub ceilings: Limits,
    pub weights: Option<PathBuf>,
    pub weight_files: Vec<WeightFile>,
    pub capabilities: Vec<(&'static str, String)>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub domains: Vec<String>,
    pub description: Option<String>,
    /// `None` if the host would load it; otherwise why not.
    pub refused: Option<String>,
    /// Who signed it and whether it changed since (every file hashed); `trusted` is
    /// against `trust`. Reported only: the host loads a folder signed or not.
    pub signer: SignerReport,
}

pub fn audit(sandbox: &Sandbox, path: &Path, trust: &TrustPolicy) -> AuditReport {
    let policy = sandbox.config();
    let mut r = AuditReport {
        path: path.to_path_buf(),
        id: None,
        manifest_file: false,
        wasm_path: None,
        wasm_bytes: None,
        sha256: None,
        imports: vec![],
        exports: vec![],
        contract: None,
        requested_limits: None,
        granted_limits: None,
        clamped: vec![],
        ceilings: policy.limits.ceilings,
        weights: None,
        weight_files: vec![],
        capabilities: vec![],
        name: None,
        version: None,
        domains: vec![],
        description: None,
        refused: None,
        signer: SignerReport::new(provenance::check(path, Depth::Full), trust),
    };
    let refuse = |r: &mut AuditReport, e: LoadError| {
        r.refused = Some(e.to_string());
    };
    let (source, bytes) = match loader::read_source(path) {
        Ok(x) => x,
        Err(e) => {
            refuse(&mut r, e);
            return r;
        }
    };
    r.id = Some(source.id.clone());
    r.manifest_file = source.has_manifest;
    r.wasm_path = Some(source.wasm_path.clone());
    r.requested_limits = Some(source.manifest.limits);
    let (granted, clamped) = policy.limits.grant(&source.manifest.limits);
    r.granted_limits = Some(granted);
    r.clamped = clamped;
    r.weights = source.weights.clone();
    if let Some(w) = &source.weights {
        list_weights(w, w, &mut r.weight_files);
    }
    r.capabilities = vec![
        (
            "filesystem",
            match &source.weights {
                Some(w) => format!("read-only /weights -> {}", w.display()),
                None => "none".into(),
            },
        ),
        (
            "network",
            "none (no wasi:sockets; TCP, UDP and DNS denied)".into(),
        ),
        (
            "environment",
            "none (no env vars, no args, stdin closed)".into(),
        ),
        (
            "stdout/stderr",
            format!(
                "captured, {} KiB each, then the call faults",
                granted.output_kib
            ),
        ),
        (
            "cpu",
            format!(
                "assess {} ms, answer {} ms, compare {} ms per call",
                granted.assess_ms, granted.answer_ms, granted.compare_ms
            ),
        ),
        (
            "memory",
            format!("{} MiB linear memory per instance", granted.memory_mib),
        ),
        ("answer", format!("at most {} KiB", granted.answer_kib)),
        (
            "tensors",
            format!(
                "{} MiB of host tensor memory; kernels on {}",
                granted.tensor_mib,
                crate::tensor::backend_name()
            ),
        ),
    ];
    let compiled = match loader::compile(sandbox, None, &source.wasm_path, &bytes) {
        Ok(c) => c,
        Err(e) => {
            r.wasm_bytes = Some(bytes.len() as u64);
            refuse(&mut r, e);
            return r;
        }
    };
    r.wasm_bytes = Some(compiled.size);
    r.sha256 = Some(compiled.sha256.clone());
    r.imports = compiled
        .imports
        .iter()
        .map(|name| {
            // Names come from the component: shown short and printable.
            let reason = policy.imports.check(name);
            ImportLine {
                name: excerpt(name, 200),
                allowed: reason.is_none(),
                reason: reason.map(|r| excerpt(&r, 300)),
            }
        })
        .collect();
    r.exports = compiled.exports.iter().map(|e| excerpt(e, 200)).collect();
    match loader::check_contract(sandbox, &compiled) {
        Ok(v) => r.contract = Some(v),
        Err(e) => {
            refuse(&mut r, e);
            return r;
        }
    }
    match loader::load(sandbox, None, path) {
        Ok(p) => {
            r.name = Some(p.name.clone());
            r.version = Some(p.version.clone());
            r.domains = p.domains.clone();
            r.description = Some(p.description.clone());
        }
        Err(e) => refuse(&mut r, e),
    }
    r
}

/// The files under `weights/`, by `lstat` only (nothing is opened, so FIFOs and devices
/// are listed, not read), at most 1,000 of them from at most 10,000 entries looked at.
fn list_weights(root: &Path, dir: &Path, out: &mut Vec<WeightFile>) {
    let mut looked = 0;
    list_weights_within(root, dir, out, &mut looked);
}

fn list_weights_within(root: &Path, dir: &Path, out: &mut Vec<WeightFile>, looked: &mut usize) {
    const MAX_LISTED: usize = 1000;
    const MAX_LOOKED: usize = 10_000;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd
        .flatten()
        .take(MAX_LOOKED - (*looked).min(MAX_LOOKED))
        .collect();
    *looked += entries.len();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= MAX_LISTED {
            return;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = loader::shown(path.strip_prefix(root).unwrap_or(&path));
        if meta.is_dir() {
            list_weights_within(root, &path, out, looked);
        } else {
            let t = meta.file_type();
            out.push(WeightFile {
                path: rel,
                bytes: meta.len(),
                symlink: t.is_symlink(),
                special: FileKind::of_std(&t).filter(|k| *k != FileKind::Symlink),
            });
        }
    }
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(f, "plugin     {}", self.path.display())?;
        writeln!(
            f,
            "verdict    {}",
            match &self.refused {
                None => "LOADS".to_string(),
                Some(why) => format!("REFUSED: {why}"),
            }
        )?;
        writeln!(f, "signer     {}", self.signer)?;
        writeln!(f, "name       {} {}", opt(&self.name), opt(&self.version))?;
        if let Some(d) = &self.description {
            writeln!(f, "about      {d}")?;
        }
        writeln!(f, "domains    {}", self.domains.join(", "))?;
        writeln!(
            f,
            "manifest   {}",
            if self.manifest_file {
                "plugin.toml"
            } else {
                "none (defaults)"
            }
        )?;
        if let Some(w) = &self.wasm_path {
            writeln!(
                f,
                "wasm       {} ({} bytes)",
                w.display(),
                self.wasm_bytes.unwrap_or(0)
            )?;
        }
        writeln!(f, "sha256     {}", opt(&self.sha256))?;
        writeln!(
            f,
            "contract   {}",
            self.contract
                .as_deref()
                .map(|v| format!("apiary:plugin@{v}"))
                .unwrap_or("-".into())
        )?;
        writeln!(f, "imports    ({})", self.imports.len())?;
        for i in &self.imports {
            match &i.reason {
                None => writeln!(f, "  ok       {}", i.name)?,
                Some(why) => writeln!(f, "  DENIED   {} — {why}", i.name)?,
            }
        }
        writeln!(f, "exports    ({})", self.exports.len())?;
        for e in &self.exports {
            writeln!(f, "           {e}")?;
        }
        writeln!(f, "capabilities")?;
        for (k, v) in &self.capabilities {
            writeln!(f, "  {k:<14}{v}")?;
        }
        if let (Some(req), Some(granted)) = (&self.requested_limits, &self.granted_limits) {
            writeln!(f, "limits     requested -> granted (ceiling)")?;
            let rows: [(&str, Option<u64>, u64, u64); 8] = [
                (
                    "assess-ms",
                    req.assess_ms,
                    granted.assess_ms,
                    self.ceilings.assess_ms,
                ),
                (
                    "answer-ms",
                    req.answer_ms,
                    granted.answer_ms,
                    self.ceilings.answer_ms,
                ),
                (
                    "compare-ms",
                    req.compare_ms,
                    granted.compare_ms,
                    self.ceilings.compare_ms,
                ),
                (
                    "memory-mib",
                    req.memory_mib,
                    granted.memory_mib,
                    self.ceilings.memory_mib,
                ),
                (
                    "output-kib",
                    req.output_kib,
                    granted.output_kib,
                    self.ceilings.output_kib,
                ),
                (
                    "answer-kib",
                    req.answer_kib,
                    granted.answer_kib,
                    self.ceilings.answer_kib,
                ),
                (
                    "log-lines",
                    req.log_lines.map(u64::from),
                    u64::from(granted.log_lines),
                    u64::from(self.ceilings.log_lines),
                ),
                (
                    "tensor-mib",
                    req.tensor_mib,
                    granted.tensor_mib,
                    self.ceilings.tensor_mib,
                ),
            ];
            for (name, asked, got, ceiling) in rows {
                let asked = asked
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "default".into());
                writeln!(f, "  {name:<12}{asked:>9} -> {got} ({ceiling})")?;
            }
        }
        match &self.weights {
            None => writeln!(f, "weights    none")?,
            Some(w) => {
                let total: u64 = self.weight_files.iter().map(|x| x.bytes).sum();
                writeln!(
                    f,
                    "weights    {} ({} files, {} bytes)",
                    w.display(),
                    self.weight_files.len(),
                    total
                )?;
                for x in self.weight_files.iter().take(20) {
                    writeln!(
                        f,
                        "           {}{}{} ({} bytes)",
                        x.path,
                        if x.symlink { " [symlink]" } else { "" },
                        x.special.map(|k| format!(" [{k}]")).unwrap_or_default(),
                        x.bytes
                    )?;
                }
            }
        }
        Ok(())
    }
}
