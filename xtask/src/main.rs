//! Project chores.
//!
//! - `cargo xtask test-all`: format check, clippy (warnings denied), tests on ndarray, tests on
//!   wgpu, doc tests, rustdoc (warnings denied). One summary line per step; stops at the first
//!   failure with a non-zero exit code.

use std::process::{Command, ExitCode};
use std::time::Instant;

struct Step {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// Every build step uses the same features, so the test steps share one compilation.
const TEST_ALL: &[Step] = &[
    Step {
        name: "format",
        args: &["fmt", "--all", "--check"],
        env: &[],
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "focal-backend/wgpu",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "tests (ndarray)",
        args: &[
            "test",
            "--workspace",
            "--all-targets",
            "--features",
            "focal-backend/wgpu",
            "--",
            "--skip",
            "wgpu",
        ],
        env: &[],
    },
    Step {
        name: "tests (wgpu)",
        args: &[
            "test",
            "--workspace",
            "--all-targets",
            "--features",
            "focal-backend/wgpu",
            "--",
            "wgpu",
        ],
        env: &[],
    },
    Step {
        name: "doc tests",
        args: &[
            "test",
            "--workspace",
            "--doc",
            "--features",
            "focal-backend/wgpu",
        ],
        env: &[],
    },
    Step {
        name: "rustdoc",
        args: &[
            "doc",
            "--workspace",
            "--no-deps",
            "--features",
            "focal-backend/wgpu",
        ],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test-all") => run_steps(TEST_ALL),
        _ => {
            eprintln!("usage: cargo xtask test-all");
            ExitCode::from(2)
        }
    }
}

fn run_steps(steps: &[Step]) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let started = Instant::now();
    let mut summary = Vec::new();
    for step in steps {
        eprintln!("==> {}: cargo {}", step.name, step.args.join(" "));
        let step_started = Instant::now();
        let status = Command::new(&cargo)
            .args(step.args)
            .envs(step.env.iter().copied())
            .status();
        let seconds = step_started.elapsed().as_secs_f64();
        let ok = matches!(status, Ok(s) if s.success());
        let line = format!(
            "{:<16} {:>4}  {seconds:>7.1} s",
            step.name,
            if ok { "ok" } else { "FAIL" }
        );
        eprintln!("{line}");
        summary.push(line);
        if !ok {
            print_summary(&summary, started);
            eprintln!("test-all failed at step '{}'", step.name);
            return ExitCode::FAILURE;
        }
    }
    print_summary(&summary, started);
    eprintln!("test-all passed");
    ExitCode::SUCCESS
}

fn print_summary(lines: &[String], started: Instant) {
    eprintln!("\nsummary:");
    for line in lines {
        eprintln!("  {line}");
    }
    eprintln!("  total {:.1} s", started.elapsed().as_secs_f64());
}
