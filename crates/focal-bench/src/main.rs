//! Focal's benchmarks. Run through `cargo xtask bench NAME` (a release build); each prints a
//! markdown table and writes it, with the raw figures as JSON, under `target/bench/`.
//!
//! Timings on shared machines are noisy, so every table compares each row with a baseline
//! measured in the same process, and reports that ratio next to the absolute figures.

mod attention;
mod measure;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use focal::backend::BackendKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Focal's benchmarks")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// Backend to measure on.
    #[arg(long, global = true, default_value = "ndarray")]
    backend: BackendKind,
    /// Seconds of repeated runs per measurement (after the first run).
    #[arg(long, global = true, default_value_t = 2.0)]
    budget: f64,
    /// Folder for the markdown table and the JSON figures.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Bench {
    /// Scaled dot-product attention: plain vs memory-efficient vs burn's own, time and memory.
    Attention {
        /// Sequence lengths (l = s), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "512,2048,8192")]
        lengths: Vec<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let budget = Duration::from_secs_f64(cli.budget);
    match cli.bench {
        Bench::Attention { lengths } => {
            let rows = match cli.backend {
                #[cfg(feature = "ndarray")]
                BackendKind::NdArray => {
                    attention::run::<focal::backend::NdArray>(&lengths, budget, &Default::default())
                }
                #[cfg(feature = "wgpu")]
                BackendKind::Wgpu => {
                    focal::backend::wgpu_adapter_info()?;
                    attention::run::<focal::backend::Wgpu>(&lengths, budget, &Default::default())
                }
                #[allow(unreachable_patterns)]
                other => bail!("backend '{other}' is not enabled in this build"),
            };
            let memory_counted = cli.backend == BackendKind::NdArray;
            let table = attention::markdown(&rows, cli.backend.name(), memory_counted);
            write(&cli.out, "attention", &table, &rows)?;
            println!("{table}");
        }
    }
    Ok(())
}

/// Writes `NAME.md` and `NAME.json` under `dir`, each atomically.
fn write(dir: &Path, name: &str, table: &str, rows: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(rows)?;
    for (file, contents) in [
        (format!("{name}.md"), table),
        (format!("{name}.json"), &json),
    ] {
        let path = dir.join(file);
        focal::train::write_atomic(&path, contents.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
