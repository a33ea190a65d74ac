//! What the command prints: results on standard output with every write checked (a closed pipe
//! or a full disk is an error, not a panic), and the one line an error becomes.

use std::fmt::Display;
use std::io::{self, Write};

/// The exit status of a command whose standard output was closed by its reader (`| head`): the
/// status a shell reports for a process ended by `SIGPIPE` (128 + 13), as `cat` and `grep` end.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// Inputs are echoed in messages at most this many characters long.
const ECHO_CHARS: usize = 80;

fn stdout_error(err: io::Error) -> anyhow::Error {
    anyhow::Error::new(err).context("writing to standard output")
}

/// An error unless every value a command is about to print is finite: a model whose weights
/// overflow (finite but huge, say 3e38) gives NaN or infinite scores, which are refused in one
/// line naming `what` instead of being printed as results.
pub fn ensure_finite(what: &str, values: impl IntoIterator<Item = f64>) -> anyhow::Result<()> {
    match values.into_iter().find(|v| !v.is_finite()) {
        Some(value) => anyhow::bail!(
            "the model computed a non-finite {what} ({value}): its weights overflow float \
             arithmetic (or are corrupt); no result is printed"
        ),
        None => Ok(()),
    }
}

/// Prints `text` and a newline on standard output.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    writeln!(io::stdout().lock(), "{text}").map_err(stdout_error)
}

/// Prints `text` on standard output and flushes it (streamed output).
pub fn stream(text: impl Display) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Flushes standard output (results are written when the command ends, where a full disk
/// shows).
pub fn flush() -> anyhow::Result<()> {
    io::stdout().lock().flush().map_err(stdout_error)
}

/// Whether the error is a write to a reader that has gone away.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The error as one line: its context and causes joined by `: `, a cause left out when the
/// text so far already says it (errors that print their source and also return it as their
/// source), whitespace collapsed, control characters escaped.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = collapse(&cause.to_string());
        if text.is_empty() || message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// One line: whitespace runs become one space, other control characters are escaped.
fn collapse(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    escape_controls(&words.join(" "))
}

fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A user's input as a message shows it: quoted, control characters escaped, at most
/// [`ECHO_CHARS`] characters with an ellipsis and the full length after longer ones.
pub fn echo(input: &str) -> String {
    let escaped = escape_controls(input);
    let count = escaped.chars().count();
    if count <= ECHO_CHARS {
        format!("\"{escaped}\"")
    } else {
        let head: String = escaped.chars().take(ECHO_CHARS).collect();
        format!("\"{head}…\" ({} characters)", input.chars().count())
    }
}

/// When `XDG_RUNTIME_DIR` is unset or not an absolute path (a headless machine), sets it to a
/// private directory of this user before any graphics library starts: the Wayland client
/// library that Mesa's Vulkan drivers load otherwise prints `XDG_RUNTIME_DIR is invalid or not
/// set` on every run, although nothing is wrong.
pub fn quiet_wayland_probe() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|dir| std::path::Path::new(&dir).is_absolute());
    if valid {
        return;
    }
    let dir = std::env::temp_dir().join("focal-runtime");
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    }
    #[cfg(not(unix))]
    let _ = std::fs::create_dir_all(&dir);
    // Safety: called first thing in `main`, before any other thread exists, so no one reads
    // the environment while it changes.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let io = io::Error::new(
            io::ErrorKind::PermissionDenied,
            "Permission denied (os error 13)",
        );
        // An error that prints its source and also returns it (thiserror's `{path}: {source}`).
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/x/config.json: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Wrapper(io)).context("loading the model");
        assert_eq!(
            error_line(&err),
            "loading the model: /x/config.json: Permission denied (os error 13)"
        );
    }

    #[test]
    fn lines_are_single_and_controls_escaped() {
        let err = anyhow::anyhow!("bad\ninput\u{1b}[31m here\ttoo");
        assert_eq!(error_line(&err), "bad input\\u{1b}[31m here too");
    }

    #[test]
    fn long_inputs_are_cut_when_echoed() {
        assert_eq!(echo("3 1 4"), "\"3 1 4\"");
        let long = "7 ".repeat(100_000);
        let shown = echo(&long);
        assert!(shown.chars().count() < 120, "{shown}");
        assert!(shown.ends_with("(200000 characters)"), "{shown}");
        assert_eq!(echo("a\u{7}b"), "\"a\\u{7}b\"");
    }
}
