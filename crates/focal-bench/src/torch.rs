//! The PyTorch side of a benchmark: a committed, version-pinned script of this crate that the
//! bench runs itself, after its own measurements, with the same thread count, time budget and
//! shapes, and whose JSON it reads back into its table.
//!
//! Running the script from the bench (rather than reading a file written by hand earlier) keeps
//! the two sides in the same hour and on the same settings, and works on a fresh clone: what
//! the script needs from Focal (the random GPT-2 directory, the generated input files) exists
//! by then. A script that fails, or that finds Focal's results different from PyTorch's, fails
//! the bench: a ratio against a model that computed something else is no figure.
//!
//! Without `--python` the PyTorch column says it was not measured.

use anyhow::{Context, bail};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to run the PyTorch side, and on what settings.
#[derive(Clone, Debug)]
pub struct Torch {
    /// The interpreter with the scripts' pinned packages (`--python`); `None`: not measured.
    pub python: Option<PathBuf>,
    /// Threads for both sides (`--threads`).
    pub threads: usize,
    /// Seconds of repeated runs per measurement (`--budget`), for the scripts that repeat.
    pub budget: f64,
    /// Where the scripts write their JSON (`--out`).
    pub out: PathBuf,
    /// What each script wrote, by its command line: `--backend all` runs it once.
    ran: RefCell<HashMap<Vec<OsString>, Value>>,
}

/// What a table says in the PyTorch column's place when it was not measured.
pub const NOT_MEASURED: &str = "not measured (pass --python PATH: an interpreter with the \
     packages the script pins; the bench runs the script itself)";

impl Torch {
    pub fn new(python: Option<PathBuf>, threads: usize, budget: f64, out: PathBuf) -> Self {
        Self {
            python,
            threads,
            budget,
            out,
            ran: RefCell::default(),
        }
    }

    /// Runs `crates/focal-bench/SCRIPT --threads N --out FILE ARGS…` and reads the
    /// JSON object it writes to FILE (`target/bench/NAME_torch.json`); `None` without
    /// `--python`. The script's output goes to the terminal as it runs.
    pub fn run(
        &self,
        script: &str,
        name: &str,
        args: &[OsString],
    ) -> anyhow::Result<Option<Value>> {
        let Some(python) = &self.python else {
            return Ok(None);
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let key: Vec<OsString> = [script.into(), name.into()]
            .into_iter()
            .chain(args.iter().cloned())
            .collect();
        if let Some(value) = self.ran.borrow().get(&key) {
            return Ok(Some(value.clone()));
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let out = self.out.join(format!("{name}_torch.json"));
        // A figure left by an earlier run must not pass for this one's.
        let _ = std::fs::remove_file(&out);
        eprintln!("running {} {}", python.display(), path.display());
        let status = Command::new(python)
            .arg(&path)
            .arg("--threads")
            .arg(self.threads.to_string())
            .arg("--out")
            .arg(&out)
            .args(args)
            .status()
            .with_context(|| format!("running {}", python.display()))?;
        if !status.success() {
            bail!("the PyTorch side ({}) failed: {status}", path.display());
        }
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("{} did not write {}", path.display(), out.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("reading {}", out.display()))?;
        let threads = value["threads"].as_u64();
        if threads != Some(self.threads as u64) {
            bail!(
                "{} ran on {threads:?} threads, not the {} asked for",
                path.display(),
                self.threads
            );
        }
        self.ran.borrow_mut().insert(key, value.clone());
        Ok(Some(value))
    }

    /// The PyTorch column's source for a table: the script, its versions and when it ran.
    pub fn source(value: Option<&Value>, script: &str) -> String {
        match value {
            Some(v) => {
                let versions: Vec<String> = ["torch", "transformers"]
                    .into_iter()
                    .filter_map(|package| Some(format!("{package} {}", v[package].as_str()?)))
                    .collect();
                format!(
                    "crates/focal-bench/{script} ({}, run {})",
                    versions.join(", "),
                    v["measured"].as_str().unwrap_or("at an unknown time")
                )
            }
            None => NOT_MEASURED.to_string(),
        }
    }
}

/// The median of `values` (sorted in place); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_python_nothing_runs() {
        let torch = Torch::new(None, 2, 1.0, std::env::temp_dir());
        assert!(
            torch
                .run("torch_models.py", "models", &[])
                .unwrap()
                .is_none()
        );
        assert_eq!(Torch::source(None, "torch_models.py"), NOT_MEASURED);
    }

    #[test]
    fn a_failing_script_fails_the_bench() {
        let dir = std::env::temp_dir().join(format!("focal-bench-torch-{}", std::process::id()));
        let torch = Torch::new(Some(PathBuf::from("false")), 2, 1.0, dir.clone());
        let error = torch.run("torch_models.py", "models", &[]).unwrap_err();
        assert!(error.to_string().contains("failed"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_script_on_other_threads_is_refused() {
        let dir = std::env::temp_dir().join(format!("focal-bench-threads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("python");
        std::fs::write(
            &fake,
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=$2; shift; done\n\
             echo '{\"threads\": 1}' > \"$out\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let torch = Torch::new(Some(fake), 2, 1.0, dir.clone());
        let error = torch.run("torch_models.py", "models", &[]).unwrap_err();
        assert!(error.to_string().contains("threads"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_upper_middle() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(&mut []), None);
    }
}
