//! Training data from files: CSV / TSV / JSON Lines rows of texts and labels, and CoNLL-style
//! tagged sentences. Every malformed row is an error naming the file, the line and what is wrong.

use focal_backend::ConfigError;
use focal_pretrained::PretrainedError;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Why fine-tuning could not run.
#[derive(Debug, thiserror::Error)]
pub enum FineTuneError {
    /// A data file is missing, malformed, or has a row that cannot be used.
    #[error("{path}, line {line}: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// The line (1 = the first line of the file, a CSV header included).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A question of a SQuAD file cannot be used.
    #[error("{path}, question {id}: {reason}")]
    Question {
        /// The file.
        path: PathBuf,
        /// The question's `id`.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A CSV / TSV header lacks a column.
    #[error("{path}, line 1: no column \"{column}\" in the header ({})", header.join(", "))]
    Column {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The header's columns.
        header: Vec<String>,
    },
    /// A data file cannot be read at all.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model directory cannot be read or written.
    #[error(transparent)]
    Model(#[from] PretrainedError),
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A picture of the run could not be drawn.
    #[error(transparent)]
    Plot(#[from] crate::plots::PlotError),
    /// `resume` found nothing to continue, or a run with other settings.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The run failed after it had saved checkpoints, which are kept for `--resume`.
    #[error(
        "{cause} (the run's checkpoints are kept in {}: run the same command again with \
         --resume to continue from its last saved epoch)",
        dir.display()
    )]
    CheckpointsKept {
        /// Why the run failed (a [`FineTuneError`], or the reverse task's `TrainError`).
        cause: Box<dyn std::error::Error + Send + Sync>,
        /// The run's working directory.
        dir: PathBuf,
    },
}

/// Which columns (CSV / TSV header names) or fields (JSON Lines) hold the texts and labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Columns {
    /// The text. Default `text`.
    pub text: String,
    /// The second text of a pair (`None`: single texts). Default none.
    pub pair: Option<String>,
    /// The label. Default `label`.
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            text: "text".to_string(),
            pair: None,
            label: "label".to_string(),
        }
    }
}

/// What to do with a malformed row: stop with its error (the default), or skip it and count it
/// (`--skip-bad-rows`). A file that cannot be read, or a header without a needed column, is
/// always an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BadRows {
    /// Skip bad rows instead of stopping.
    pub skip: bool,
    /// Rows (or CoNLL sentences) skipped.
    pub count: usize,
    /// The error of the first skipped row (the lowest line).
    pub first: Option<String>,
    #[serde(skip)]
    first_line: Option<usize>,
}

impl BadRows {
    /// Stop at the first bad row.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Skip bad rows, counting them.
    pub fn skipping() -> Self {
        Self {
            skip: true,
            ..Self::default()
        }
    }

    /// A bad row: its error when not skipping; else counted (and the first one kept, and said
    /// as a warning).
    pub fn handle(&mut self, error: FineTuneError) -> Result<(), FineTuneError> {
        if !self.skip {
            return Err(error);
        }
        if self.count == 0 {
            tracing::warn!("skipping bad rows (counted in the report), e.g. {error}");
        }
        let line = match &error {
            FineTuneError::Data { line, .. } => *line,
            _ => usize::MAX,
        };
        if self.first_line.is_none_or(|first| line < first) {
            self.first = Some(error.to_string());
            self.first_line = Some(line);
        }
        self.count += 1;
        Ok(())
    }

    /// Adds the rows another counter skipped.
    fn merge(&mut self, other: BadRows) {
        self.count += other.count;
        if let (Some(first), Some(line)) = (other.first, other.first_line)
            && self.first_line.is_none_or(|mine| line < mine)
        {
            self.first = Some(first);
            self.first_line = Some(line);
        }
    }
}

/// One labelled row of a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledText {
    /// The text.
    pub text: String,
    /// The second text of a pair.
    pub pair: Option<String>,
    /// The label as the file writes it.
    pub label: String,
    /// Its line in the file.
    pub line: usize,
}

/// Where a record lies in its file: from `start` (its first byte, or a line end just before
/// it), `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The first byte.
    pub start: u64,
    /// The number of bytes.
    pub len: u32,
}

/// How one record of a file is read back from its bytes: a CSV / TSV record's cells at the
/// header's positions of the columns, or a JSON Lines object's fields.
#[derive(Clone, Debug)]
enum RecordFormat {
    Csv { delimiter: u8, indices: Vec<usize> },
    Jsonl { names: Vec<String> },
}

impl RecordFormat {
    /// The values of the first record of `bytes`, in column order.
    fn values(&self, bytes: &[u8]) -> Result<Vec<Option<String>>, String> {
        match self {
            Self::Csv { delimiter, indices } => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .delimiter(*delimiter)
                    .quoting(quoted(*delimiter))
                    .from_reader(bytes);
                let record = reader
                    .records()
                    .next()
                    .ok_or_else(|| "no record".to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(indices
                    .iter()
                    .map(|&i| record.get(i).map(str::to_string))
                    .collect())
            }
            Self::Jsonl { names } => {
                let line = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
                Ok(names.iter().map(|name| json_value(&value, name)).collect())
            }
        }
    }
}

/// Whether a file of this delimiter quotes its cells: CSV does (RFC 4180); TSV has no quoting
/// (a tab or a line break cannot be inside a cell), so a text that starts with `"` is read as
/// it is, not as the start of a cell running on to the next quote.
fn quoted(delimiter: u8) -> bool {
    delimiter != b'\t'
}

/// Field `name` of a JSON object as text: strings as they are, numbers and booleans written
/// out, a list (the labels of a multi-label row) as `a|b`; `None` when absent or of another
/// kind.
fn json_value(value: &serde_json::Value, name: &str) -> Option<String> {
    match value.get(name) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(LABEL_SEPARATOR),
        ),
        _ => None,
    }
}

/// A data file whose records are read back one at a time by their [`Span`]s, the columns
/// chosen when it was scanned.
#[derive(Debug)]
pub struct RecordFile {
    path: PathBuf,
    format: RecordFormat,
    file: std::sync::Mutex<std::fs::File>,
}

impl RecordFile {
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The values of the record at `span`, in the order of the columns scanned.
    pub fn values(&self, span: Span) -> Result<Vec<Option<String>>, FineTuneError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = vec![0; span.len as usize];
        {
            let mut file = self
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            file.seek(SeekFrom::Start(span.start))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| FineTuneError::File {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        }
        self.format
            .values(&bytes)
            .map_err(|reason| FineTuneError::File {
                path: self.path.clone(),
                reason: format!(
                    "the record at byte {} no longer reads ({reason}): was the file changed?",
                    span.start
                ),
            })
    }
}

/// Counts the line ends at positions of a file, reading it forward once beside the `csv`
/// reader. That reader places a record at the line end before it (after `\r`, at `\n`, when
/// lines end with `\r\n`; before any blank lines) and numbers it by the lines before that
/// position: the record's own line is that number plus the `\n`s between.
struct LineEnds {
    reader: std::io::BufReader<std::fs::File>,
    at: u64,
}

impl LineEnds {
    /// The `\n`s in the run of `\r` and `\n` bytes from `pos`.
    fn at(&mut self, pos: u64) -> std::io::Result<usize> {
        self.reader.seek_relative(pos as i64 - self.at as i64)?;
        self.at = pos;
        let mut newlines = 0;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(newlines);
            }
            let run = available
                .iter()
                .position(|&b| b != b'\r' && b != b'\n')
                .unwrap_or(available.len());
            newlines += available[..run].iter().filter(|&&b| b == b'\n').count();
            let whole = run == available.len();
            self.reader.consume(run);
            self.at += run as u64;
            if !whole {
                return Ok(newlines);
            }
        }
    }
}

/// Calls `each(line, values)` for every row of a `.csv` or `.tsv` file (columns found by the
/// header) or a `.jsonl` / `.ndjson` file (fields of each object; numbers and booleans as text;
/// blank lines skipped), with the values of `columns` in that order (`None` where a row has
/// none). A column missing from the header is [`FineTuneError::Column`]; a file of another type
/// is an error naming it; a malformed line goes to `bad` (an error, or skipped). `each` may stop
/// the reading with an error. The file is read as a stream, one record at a time.
pub fn read_records<E: From<FineTuneError>>(
    path: &Path,
    columns: &[&str],
    bad: &mut BadRows,
    mut each: impl FnMut(usize, Vec<Option<String>>) -> Result<(), E>,
) -> Result<(), E> {
    scan_records(path, columns, bad, |line, _, values| each(line, values)).map(drop)
}

/// [`read_records`], also giving each record's [`Span`]; the file, to read records back by
/// their spans.
pub fn scan_records<E: From<FineTuneError>>(
    path: &Path,
    columns: &[&str],
    bad: &mut BadRows,
    mut each: impl FnMut(usize, Span, Vec<Option<String>>) -> Result<(), E>,
) -> Result<RecordFile, E> {
    let file_error = |reason: String| FineTuneError::File {
        path: path.to_path_buf(),
        reason,
    };
    let row_error = |line: usize, reason: String| FineTuneError::Data {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let open = || std::fs::File::open(path).map_err(|e| file_error(e.to_string()));
    let file = open()?;
    let size = file
        .metadata()
        .map_err(|e| file_error(e.to_string()))?
        .len();
    let span = |start: u64, end: u64, line: usize| -> Result<Span, FineTuneError> {
        u32::try_from(end - start)
            .map(|len| Span { start, len })
            .map_err(|_| row_error(line, "a record of more than 4 GiB".to_string()))
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let format = match extension.as_str() {
        "csv" | "tsv" => {
            let delimiter = if extension == "tsv" { b'\t' } else { b',' };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .quoting(quoted(delimiter))
                .from_reader(std::io::BufReader::new(file));
            let mut line_ends = LineEnds {
                reader: std::io::BufReader::new(open()?),
                at: 0,
            };
            let headers = reader
                .headers()
                .map_err(|e| row_error(1, e.to_string()))?
                .clone();
            let indices = columns
                .iter()
                .map(|&name| {
                    headers
                        .iter()
                        .position(|h| h == name)
                        .ok_or_else(|| FineTuneError::Column {
                            path: path.to_path_buf(),
                            column: name.to_string(),
                            header: headers.iter().map(str::to_string).collect(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // A record's end is known when the next one (or the end of the file) is reached.
            let mut pending: Option<(usize, u64, Vec<Option<String>>)> = None;
            let mut record = csv::StringRecord::new();
            loop {
                let read = reader.read_record(&mut record);
                let position = match &read {
                    Ok(true) => record.position().cloned(),
                    Ok(false) => None,
                    Err(e) => e.position().cloned(),
                };
                let end = position.as_ref().map_or(size, csv::Position::byte);
                if let Some((line, start, values)) = pending.take() {
                    each(line, span(start, end, line)?, values)?;
                }
                let Some(position) = position else {
                    if let Err(e) = read {
                        // An error with no position: the reading itself failed.
                        return Err(file_error(e.to_string()).into());
                    }
                    break;
                };
                let line = position.line() as usize
                    + line_ends
                        .at(position.byte())
                        .map_err(|e| file_error(e.to_string()))?;
                match read {
                    Ok(_) => {
                        let values = indices
                            .iter()
                            .map(|&i| record.get(i).map(str::to_string))
                            .collect();
                        pending = Some((line, position.byte(), values));
                    }
                    Err(e) => bad.handle(row_error(line, e.to_string()))?,
                }
            }
            RecordFormat::Csv { delimiter, indices }
        }
        "jsonl" | "ndjson" => {
            let format = RecordFormat::Jsonl {
                names: columns.iter().map(|c| c.to_string()).collect(),
            };
            let mut reader = std::io::BufReader::new(file);
            let mut bytes = Vec::new();
            let mut start = 0u64;
            for number in 1.. {
                bytes.clear();
                let n = reader
                    .read_until(b'\n', &mut bytes)
                    .map_err(|e| row_error(number, e.to_string()))?;
                if n == 0 {
                    break;
                }
                let at = span(start, start + n as u64, number)?;
                start += n as u64;
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match format.values(&bytes) {
                    Ok(values) => each(number, at, values)?,
                    Err(reason) => bad.handle(row_error(number, reason))?,
                }
            }
            format
        }
        other => {
            return Err(file_error(format!(
                "unknown file type \"{other}\": expected .csv, .tsv or .jsonl"
            ))
            .into());
        }
    };
    Ok(RecordFile {
        path: path.to_path_buf(),
        format,
        file: std::sync::Mutex::new(open()?),
    })
}

/// Between the labels of a multi-label row in a CSV / TSV cell (`finance|politics`); a JSON Lines
/// row may give them as a list instead.
pub const LABEL_SEPARATOR: &str = "|";

/// What the label column of a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelKind {
    /// One class per row.
    Class,
    /// Any number of classes per row (`a|b`, or a JSON list), none included.
    Classes,
    /// A finite number per row (regression).
    Value,
}

/// A row of [`LabelledRows`]: where it lies in the file, its line, and its label (an index
/// into the file's distinct labels, or a value's bits).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowEntry {
    pub(crate) span: Span,
    pub(crate) line: u32,
    pub(crate) label: u32,
}

/// The labelled rows of a data file, indexed rather than held: where each row lies in the file,
/// its line and its label. Texts are read back from the file when asked for ([`Self::row`]),
/// so a file larger than memory can train: the index takes 24 bytes a row, and the distinct
/// labels (a multi-label row's combination as one).
#[derive(Clone, Debug)]
pub struct LabelledRows {
    file: std::sync::Arc<RecordFile>,
    pair: bool,
    kind: LabelKind,
    rows: Vec<RowEntry>,
    /// The distinct labels (trimmed), in order of first appearance.
    names: std::sync::Arc<Vec<String>>,
}

/// A checked row's label: its text (trimmed), or its value ([`LabelKind::Value`]).
enum Label {
    Text(String),
    Value(f32),
}

/// Scans the labelled rows of a file ([`scan_records`]) and calls `keep(line, span, values,
/// label)` for each row that has a text (and a second text when `columns.pair` names one) and a
/// label of `kind`; a row without is an error naming the file and the line (or skipped and
/// counted, by `bad`), and so is a file without any. `values` are the text, the label and the
/// second text, in that order.
fn scan_labelled(
    path: &Path,
    columns: &Columns,
    kind: LabelKind,
    bad: &mut BadRows,
    mut keep: impl FnMut(u32, Span, Vec<Option<String>>, Label),
) -> Result<RecordFile, FineTuneError> {
    let mut names = vec![columns.text.as_str(), columns.label.as_str()];
    names.extend(columns.pair.as_deref());
    let mut kept = 0usize;
    // Rows with a missing value: handled here, as `bad` is lent to the reader.
    let mut missing_values = if bad.skip {
        BadRows::skipping()
    } else {
        BadRows::strict()
    };
    let file = scan_records::<FineTuneError>(path, &names, bad, |line, span, values| {
        let error = |reason: String| FineTuneError::Data {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let missing = |what: &str, name: &str| error(format!("no {what} (column \"{name}\")"));
        let present = |value: &Option<String>| value.as_ref().is_some_and(|v| !v.trim().is_empty());
        let checked = (|| {
            if !present(&values[0]) {
                return Err(missing("text", &columns.text));
            }
            if let Some(name) = &columns.pair
                && !present(&values[2])
            {
                return Err(missing("second text", name));
            }
            let label = match (&values[1], kind) {
                (Some(label), LabelKind::Classes) => label.trim(),
                (label, _) if present(label) => label.as_deref().unwrap_or_default().trim(),
                _ => return Err(missing("label", &columns.label)),
            };
            let label = if kind == LabelKind::Value {
                Label::Value(
                    label
                        .parse::<f32>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            error(format!("label \"{label}\" is not a finite number"))
                        })?,
                )
            } else {
                Label::Text(label.to_string())
            };
            let line = u32::try_from(line).map_err(|_| error("too many lines".to_string()))?;
            Ok((line, label))
        })();
        match checked {
            Ok((line, label)) => {
                keep(line, span, values, label);
                kept += 1;
            }
            Err(e) => missing_values.handle(e)?,
        }
        Ok(())
    })?;
    bad.merge(missing_values);
    if kept == 0 {
        return Err(FineTuneError::File {
            path: path.to_path_buf(),
            reason: "no labelled rows".to_string(),
        });
    }
    Ok(file)
}

impl LabelledRows {
    /// Indexes the labelled rows of a `.csv`, `.tsv` or `.jsonl` file (see [`read_records`]),
    /// reading it once as a stream. A missing column, an empty text, an empty label (unless
    /// [`LabelKind::Classes`]: a multi-label row with no label), a value that is not a finite
    /// number ([`LabelKind::Value`]) or a malformed line is an error naming the file and the
    /// line (or skipped and counted, by `bad`).
    pub fn read(
        path: &Path,
        columns: &Columns,
        kind: LabelKind,
        bad: &mut BadRows,
    ) -> Result<Self, FineTuneError> {
        let mut rows = Vec::new();
        let mut distinct: Vec<String> = Vec::new();
        let mut ids: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        let file = scan_labelled(path, columns, kind, bad, |line, span, _, label| {
            let label = match label {
                Label::Value(value) => value.to_bits(),
                Label::Text(label) => match ids.get(&label) {
                    Some(&id) => id,
                    None => {
                        let id = distinct.len() as u32;
                        ids.insert(label.clone(), id);
                        distinct.push(label);
                        id
                    }
                },
            };
            rows.push(RowEntry { span, line, label });
        })?;
        Ok(Self {
            file: std::sync::Arc::new(file),
            pair: columns.pair.is_some(),
            kind,
            rows,
            names: std::sync::Arc::new(distinct),
        })
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows (never, as read).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether the rows hold pairs of texts.
    pub fn has_pairs(&self) -> bool {
        self.pair
    }

    /// What the labels are.
    pub fn kind(&self) -> LabelKind {
        self.kind
    }

    /// Row `index`, read back from the file.
    pub fn row(&self, index: usize) -> Result<LabelledText, FineTuneError> {
        let entry = self.rows[index];
        let mut values = self.file.values(entry.span)?.into_iter();
        let mut next = || values.next().flatten().unwrap_or_default();
        let (text, label) = (next(), next());
        let pair = self.pair.then(next);
        Ok(LabelledText {
            text,
            pair,
            label: label.trim().to_string(),
            line: entry.line as usize,
        })
    }

    /// Every row, read back into memory.
    pub fn to_vec(&self) -> Result<Vec<LabelledText>, FineTuneError> {
        (0..self.len()).map(|i| self.row(i)).collect()
    }

    /// The distinct labels that these rows use.
    fn used(&self) -> impl Iterator<Item = &str> {
        let mut used = vec![false; self.names.len()];
        for entry in &self.rows {
            used[entry.label as usize] = true;
        }
        self.names
            .iter()
            .zip(used)
            .filter(|(_, used)| *used)
            .map(|(name, _)| name.as_str())
    }

    /// The label set of the rows, sorted (numerically when every label is an integer); for
    /// [`LabelKind::Classes`], the classes of every row; none for values.
    pub fn label_set(&self) -> Vec<String> {
        match self.kind {
            LabelKind::Value => Vec::new(),
            LabelKind::Classes => {
                let set: BTreeSet<&str> = self.used().flat_map(label_list).collect();
                set.into_iter().map(str::to_string).collect()
            }
            LabelKind::Class => {
                let set: BTreeSet<&str> = self.used().collect();
                let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
                if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
                    labels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
                }
                labels
            }
        }
    }

    /// The distinct labels (trimmed) in order of first appearance in the file, which a row's
    /// `label` indexes (not for values).
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The index entries.
    pub(crate) fn entries(&self) -> &[RowEntry] {
        &self.rows
    }

    /// These rows with other entries (a split, or a filtered subset of the same file).
    pub(crate) fn with_entries(&self, rows: Vec<RowEntry>) -> Self {
        Self {
            file: self.file.clone(),
            pair: self.pair,
            kind: self.kind,
            rows,
            names: self.names.clone(),
        }
    }
}

/// Reads the labelled rows of a `.csv`, `.tsv` or `.jsonl` file into memory, in one pass,
/// checked as [`LabelledRows::read`] checks them ([`LabelKind::Classes`] when `empty_labels`,
/// else [`LabelKind::Class`]).
pub fn read_labelled(
    path: &Path,
    columns: &Columns,
    empty_labels: bool,
    bad: &mut BadRows,
) -> Result<Vec<LabelledText>, FineTuneError> {
    let kind = if empty_labels {
        LabelKind::Classes
    } else {
        LabelKind::Class
    };
    let mut rows = Vec::new();
    scan_labelled(path, columns, kind, bad, |line, _, values, label| {
        let Label::Text(label) = label else {
            unreachable!("class labels are texts")
        };
        let mut values = values.into_iter();
        let text = values.next().flatten().unwrap_or_default();
        let pair = values.nth(1).flatten();
        rows.push(LabelledText {
            text,
            pair,
            label,
            line: line as usize,
        });
    })?;
    Ok(rows)
}

/// The labels of a multi-label cell (split at [`LABEL_SEPARATOR`], trimmed, empty parts left
/// out).
pub fn label_list(label: &str) -> impl Iterator<Item = &str> {
    label
        .split(LABEL_SEPARATOR)
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

impl LabelledText {
    /// The labels of a multi-label row ([`label_list`]).
    pub fn label_list(&self) -> Vec<String> {
        label_list(&self.label).map(str::to_string).collect()
    }
}
/// One sentence of a CoNLL file: its words and their tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaggedSentence {
    /// The words.
    pub words: Vec<String>,
    /// One tag per word (`O`, `B-PER`, …).
    pub tags: Vec<String>,
    /// The line of its first word.
    pub line: usize,
}

/// Reads a CoNLL-2003-style file: one word per line, its tag in the last of the columns
/// separated by white space (the word in the first), sentences separated by blank lines,
/// `-DOCSTART-` lines ignored. A line with one column only goes to `bad` (an error naming it,
/// or the line skipped).
pub fn read_conll(path: &Path, bad: &mut BadRows) -> Result<Vec<TaggedSentence>, FineTuneError> {
    let file = std::fs::File::open(path).map_err(|e| FineTuneError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut sentences = Vec::new();
    let mut current = TaggedSentence {
        words: Vec::new(),
        tags: Vec::new(),
        line: 0,
    };
    let mut finish = |current: &mut TaggedSentence| {
        if !current.words.is_empty() {
            sentences.push(std::mem::replace(
                current,
                TaggedSentence {
                    words: Vec::new(),
                    tags: Vec::new(),
                    line: 0,
                },
            ));
        }
    };
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| FineTuneError::Data {
            path: path.to_path_buf(),
            line: number,
            reason: e.to_string(),
        })?;
        let columns: Vec<&str> = line.split_whitespace().collect();
        match columns.as_slice() {
            [] => finish(&mut current),
            [first, ..] if first.starts_with("-DOCSTART-") => finish(&mut current),
            [_] => {
                bad.handle(FineTuneError::Data {
                    path: path.to_path_buf(),
                    line: number,
                    reason: format!(
                        "\"{line}\" has one column: expected a word and its tag separated by white space"
                    ),
                })?;
            }
            [word, .., tag] => {
                if current.words.is_empty() {
                    current.line = number;
                }
                current.words.push(word.to_string());
                current.tags.push(tag.to_string());
            }
        }
    }
    finish(&mut current);
    if sentences.is_empty() {
        return Err(FineTuneError::File {
            path: path.to_path_buf(),
            reason: "no tagged sentences".to_string(),
        });
    }
    Ok(sentences)
}

/// The tags of sentences: `O` first, then the others sorted by entity type and then `B-` before
/// `I-` (the order transformers' examples list them in), any other tag after them, sorted.
pub fn tag_set(sentences: &[TaggedSentence]) -> Vec<String> {
    let set: BTreeSet<&str> = sentences
        .iter()
        .flat_map(|s| s.tags.iter().map(String::as_str))
        .collect();
    let mut tags: Vec<String> = set.into_iter().map(str::to_string).collect();
    let key = |tag: &String| -> (u8, String, String) {
        if tag == "O" {
            return (0, String::new(), String::new());
        }
        match tag.split_once('-') {
            Some((prefix, kind)) => (1, kind.to_string(), prefix.to_string()),
            None => (2, tag.clone(), String::new()),
        }
    };
    tags.sort_by_key(key);
    tags
}

/// Writes `text` to `path` and indexes it as single-label rows with the default columns (for
/// tests).
#[cfg(test)]
pub(crate) fn class_rows(path: &Path, text: &str) -> LabelledRows {
    std::fs::write(path, text).unwrap();
    LabelledRows::read(
        path,
        &Columns::default(),
        LabelKind::Class,
        &mut BadRows::strict(),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        std::fs::write(&path, "text,label\nhello,a\n,b\n").unwrap();
        let err =
            read_labelled(&path, &Columns::default(), false, &mut BadRows::strict()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}, line 3: no text (column \"text\")", path.display())
        );
        std::fs::write(&path, "text,label\nhello,\n").unwrap();
        let err =
            read_labelled(&path, &Columns::default(), false, &mut BadRows::strict()).unwrap_err();
        assert!(err.to_string().contains("line 2: no label"), "{err}");
        // A multi-label row may have no label.
        let rows = read_labelled(&path, &Columns::default(), true, &mut BadRows::strict()).unwrap();
        assert!(rows[0].label_list().is_empty());
        std::fs::write(&path, "sentence,label\nhello,a\n").unwrap();
        let err =
            read_labelled(&path, &Columns::default(), false, &mut BadRows::strict()).unwrap_err();
        assert!(
            err.to_string()
                .contains("no column \"text\" in the header (sentence, label)"),
            "{err}"
        );
        let path = dir.path().join("data.jsonl");
        std::fs::write(&path, "{\"text\": \"a\", \"label\": 1}\n{oops\n").unwrap();
        let err =
            read_labelled(&path, &Columns::default(), false, &mut BadRows::strict()).unwrap_err();
        assert!(err.to_string().contains("line 2: not JSON"), "{err}");
        std::fs::write(&path, "{\"text\": \"a\", \"label\": [\"x\", \"y\"]}\n").unwrap();
        let rows = read_labelled(&path, &Columns::default(), true, &mut BadRows::strict()).unwrap();
        assert_eq!(rows[0].label_list(), ["x", "y"]);
        // Skipping: the bad rows are counted, the first one kept.
        let path = dir.path().join("mixed.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"a\", \"label\": \"x\"}\n{oops\n{\"text\": \"\", \"label\": \"y\"}\n{\"text\": \"b\", \"label\": \"y\"}\n",
        )
        .unwrap();
        let mut bad = BadRows::skipping();
        let rows = read_labelled(&path, &Columns::default(), false, &mut bad).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(bad.count, 2);
        assert!(bad.first.as_deref().unwrap().contains("line 2: not JSON"));
        // Labels sort numerically when they are integers; values must be finite numbers.
        let path = dir.path().join("numbers.csv");
        std::fs::write(&path, "text,label\na,10\nb,9\n").unwrap();
        let rows =
            LabelledRows::read(&path, &Columns::default(), LabelKind::Class, &mut bad).unwrap();
        assert_eq!(rows.label_set(), ["9", "10"]);
        std::fs::write(&path, "text,label\na,2.5\nb,high\n").unwrap();
        let err = LabelledRows::read(
            &path,
            &Columns::default(),
            LabelKind::Value,
            &mut BadRows::strict(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("line 3: label \"high\" is not a finite number"),
            "{err}"
        );
        let rows =
            LabelledRows::read(&path, &Columns::default(), LabelKind::Value, &mut bad).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(f32::from_bits(rows.entries()[0].label), 2.5);
    }

    /// SQuAD v1.1 and v2.0 files, a misplaced answer refused by question id, and SQuAD's
    /// official normalisation and scores.
    #[test]
    fn squad_files_and_scores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("squad.json");
        let squad = |answer_start: usize| {
            serde_json::json!({"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
                "context": "Épée makers in Paris sell to the world.",
                "qas": [
                    {"id": "a", "question": "Where?", "answers": [{"text": "Paris", "answer_start": answer_start}]},
                    {"id": "b", "question": "Why?", "answers": [], "is_impossible": true}
                ]}]}]})
            .to_string()
        };
        // Offsets count characters: "Épée" is 4 characters and 6 bytes.
        std::fs::write(&path, squad(15)).unwrap();
        let questions = read_squad(&path, &mut BadRows::strict()).unwrap();
        assert_eq!(questions.len(), 2);
        assert_eq!(questions[0].answers, [("Paris".to_string(), 15)]);
        assert!(questions[1].answers.is_empty());
        std::fs::write(&path, squad(14)).unwrap();
        let err = read_squad(&path, &mut BadRows::strict()).unwrap_err();
        assert!(
            err.to_string()
                .contains("question a: answer \"Paris\" is not at character 14"),
            "{err}"
        );
        let mut bad = BadRows::skipping();
        assert_eq!(read_squad(&path, &mut bad).unwrap().len(), 1);
        assert_eq!(bad.count, 1);
        std::fs::write(&path, "{\"data\": 3}").unwrap();
        assert!(read_squad(&path, &mut BadRows::strict()).is_err());

        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(
            squad_scores("the Eiffel Tower", &["Eiffel tower".into()]),
            (1.0, 1.0)
        );
        // Two of three predicted tokens in a two-token gold: P 2/3, R 1, F1 0.8.
        let (exact, f1) = squad_scores("in Paris France", &["Paris France".into(), "x".into()]);
        assert_eq!(exact, 0.0);
        assert!((f1 - 0.8).abs() < 1e-12);
        // Unanswerable: only the empty answer scores.
        assert_eq!(squad_scores("", &[]), (1.0, 1.0));
        assert_eq!(squad_scores("Paris", &[]), (0.0, 0.0));
    }

    #[test]
    fn windows_line_ends_keep_the_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv");
        std::fs::write(&path, "text,label\r\nhello,a\r\n,b\r\n").unwrap();
        let err =
            read_labelled(&path, &Columns::default(), false, &mut BadRows::strict()).unwrap_err();
        assert!(err.to_string().contains("line 3: no text"), "{err}");
        // Blank lines and a quoted cell over two lines, with either line end: each row's line,
        // and the row read back from its place in the file.
        for end in ["\n", "\r\n"] {
            let lines = [
                "text,label",
                "hello,a",
                "",
                "\"two",
                "lines\",b",
                "",
                "",
                "last,c",
                "x,",
            ];
            std::fs::write(&path, lines.join(end)).unwrap();
            let mut bad = BadRows::skipping();
            let rows =
                LabelledRows::read(&path, &Columns::default(), LabelKind::Class, &mut bad).unwrap();
            let read = rows.to_vec().unwrap();
            let read: Vec<_> = read
                .iter()
                .map(|r| (r.line, r.text.as_str(), r.label.as_str()))
                .collect();
            let two = format!("two{end}lines");
            assert_eq!(
                read,
                [(2, "hello", "a"), (4, two.as_str(), "b"), (8, "last", "c")],
                "{end:?}"
            );
            assert_eq!(
                bad.first.unwrap(),
                format!("{}, line 9: no label (column \"label\")", path.display())
            );
            assert_eq!(rows.label_set(), ["a", "b", "c"]);
        }
        // JSON Lines with `\r\n` and blank lines, read back by place.
        let path = dir.path().join("data.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"a\", \"label\": \"x\", \"other\": 1}\r\n\r\n{\"label\": [\"y\", \"z\"], \"text\": \"b\"}",
        )
        .unwrap();
        let rows = LabelledRows::read(
            &path,
            &Columns::default(),
            LabelKind::Classes,
            &mut BadRows::strict(),
        )
        .unwrap();
        assert_eq!(rows.row(1).unwrap().label_list(), ["y", "z"]);
        assert_eq!(rows.row(1).unwrap().line, 3);
        assert_eq!(rows.label_set(), ["x", "y", "z"]);
    }

    /// TSV has no quoting: a text that starts with `"` is a text, and the tab and line break
    /// after it still end its cell and its row (a CSV reader would run on to the next quote,
    /// merging rows). Read by index and read back by place alike.
    #[test]
    fn tsv_cells_are_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let rows = class_rows(
            &dir.path().join("data.tsv"),
            "text\tlabel\n\"quoted\" start\ta\n\"open quote\tb\nplain\tc\n",
        );
        let read: Vec<_> = rows
            .to_vec()
            .unwrap()
            .into_iter()
            .map(|r| (r.line, r.text, r.label))
            .collect();
        let row =
            |line: usize, text: &str, label: &str| (line, text.to_string(), label.to_string());
        assert_eq!(
            read,
            [
                row(2, "\"quoted\" start", "a"),
                row(3, "\"open quote", "b"),
                row(4, "plain", "c")
            ]
        );
    }

    #[test]
    fn conll_files_are_read_or_refused_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.conll");
        std::fs::write(
            &path,
            "-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\n\nPeter B-PER\nBlackburn I-PER\n",
        )
        .unwrap();
        let sentences = read_conll(&path, &mut BadRows::strict()).unwrap();
        assert_eq!(sentences.len(), 2);
        assert_eq!(sentences[0].words, ["EU", "rejects"]);
        assert_eq!(sentences[0].line, 3);
        assert_eq!(sentences[1].tags, ["B-PER", "I-PER"]);
        assert_eq!(tag_set(&sentences), ["O", "B-ORG", "B-PER", "I-PER"]);
        std::fs::write(&path, "EU B-ORG\nrejects\n").unwrap();
        let err = read_conll(&path, &mut BadRows::strict()).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2: \"rejects\" has one column"),
            "{err}"
        );
        let mut bad = BadRows::skipping();
        let sentences = read_conll(&path, &mut bad).unwrap();
        assert_eq!((sentences[0].words.len(), bad.count), (1, 1));
        assert!(bad.first.unwrap().contains("line 2"));
        std::fs::write(&path, "\n\n").unwrap();
        assert!(
            read_conll(&path, &mut BadRows::strict())
                .unwrap_err()
                .to_string()
                .contains("no tagged sentences")
        );
    }
}

/// One question of a SQuAD file, with its context and answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SquadQuestion {
    /// The question's `id`.
    pub id: String,
    /// The question.
    pub question: String,
    /// The paragraph the answer is in.
    pub context: String,
    /// The answers: text and character offset in the context (none: unanswerable, SQuAD 2.0).
    pub answers: Vec<(String, usize)>,
}

/// Reads a SQuAD v1.1 or v2.0 JSON file (`data[].paragraphs[].qas[]`, answers with
/// `answer_start` in characters; `is_impossible` questions without answers). A question without
/// text, an answer whose `answer_start` does not point at its text, or an answerable question
/// without answers goes to `bad`; a file that is not SQuAD is an error.
pub fn read_squad(path: &Path, bad: &mut BadRows) -> Result<Vec<SquadQuestion>, FineTuneError> {
    let file_error = |reason: String| FineTuneError::File {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| file_error(format!("not JSON: {e}")))?;
    let articles = json["data"]
        .as_array()
        .ok_or_else(|| file_error("no \"data\" list: not a SQuAD file".to_string()))?;
    let mut questions = Vec::new();
    for paragraph in articles
        .iter()
        .flat_map(|a| a["paragraphs"].as_array().into_iter().flatten())
    {
        let context = paragraph["context"].as_str().unwrap_or_default();
        for qa in paragraph["qas"].as_array().into_iter().flatten() {
            let id = match &qa["id"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let error = |reason: String| FineTuneError::Question {
                path: path.to_path_buf(),
                id: id.clone(),
                reason,
            };
            let question = qa["question"].as_str().unwrap_or_default().trim();
            let impossible = qa["is_impossible"].as_bool().unwrap_or(false);
            let mut answers = Vec::new();
            let mut problem = None;
            if question.is_empty() {
                problem = Some("no question text".to_string());
            }
            if context.trim().is_empty() {
                problem = Some("no context".to_string());
            }
            for answer in qa["answers"].as_array().into_iter().flatten() {
                let text = answer["text"].as_str().unwrap_or_default();
                let start = answer["answer_start"].as_u64().unwrap_or(u64::MAX) as usize;
                let found: String = context
                    .chars()
                    .skip(start)
                    .take(text.chars().count())
                    .collect();
                if text.is_empty() || found != text {
                    problem = Some(format!(
                        "answer \"{text}\" is not at character {start} of the context (found \"{found}\")"
                    ));
                }
                answers.push((text.to_string(), start));
            }
            if answers.is_empty() && !impossible {
                problem = Some("no answers, and not marked is_impossible".to_string());
            }
            match problem {
                Some(reason) => bad.handle(error(reason))?,
                None => questions.push(SquadQuestion {
                    id,
                    question: question.to_string(),
                    context: context.to_string(),
                    answers,
                }),
            }
        }
    }
    if questions.is_empty() {
        return Err(file_error("no questions".to_string()));
    }
    Ok(questions)
}

/// SQuAD's answer normalisation (the official evaluation script): lower case, punctuation
/// removed, the articles a / an / the removed, white space collapsed.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punctuation: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punctuation
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD's exact match and token F1 of a predicted answer against the gold answers (the best
/// over them; an unanswerable question's gold is the empty answer).
pub fn squad_scores(predicted: &str, gold: &[String]) -> (f64, f64) {
    let empty = [String::new()];
    let gold = if gold.is_empty() { &empty[..] } else { gold };
    let predicted = normalize_answer(predicted);
    let predicted_tokens: Vec<&str> = predicted.split_whitespace().collect();
    let mut best = (0.0f64, 0.0f64);
    for answer in gold {
        let answer = normalize_answer(answer);
        let exact = f64::from(u8::from(predicted == answer));
        let gold_tokens: Vec<&str> = answer.split_whitespace().collect();
        let f1 = if predicted_tokens.is_empty() || gold_tokens.is_empty() {
            f64::from(u8::from(predicted_tokens == gold_tokens))
        } else {
            let mut counts = std::collections::HashMap::new();
            for t in &gold_tokens {
                *counts.entry(*t).or_insert(0i64) += 1;
            }
            let mut same = 0;
            for t in &predicted_tokens {
                if let Some(c) = counts.get_mut(t)
                    && *c > 0
                {
                    *c -= 1;
                    same += 1;
                }
            }
            if same == 0 {
                0.0
            } else {
                let p = same as f64 / predicted_tokens.len() as f64;
                let r = same as f64 / gold_tokens.len() as f64;
                2.0 * p * r / (p + r)
            }
        };
        best = (best.0.max(exact), best.1.max(f1));
    }
    best
}
