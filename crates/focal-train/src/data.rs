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

/// Calls `each(line, values)` for every row of a `.csv` or `.tsv` file (columns found by the
/// header) or a `.jsonl` / `.ndjson` file (fields of each object; numbers and booleans as text;
/// blank lines skipped), with the values of `columns` in that order (`None` where a row has
/// none). A column missing from the header is [`FineTuneError::Column`]; a file of another type
/// is an error naming it; a malformed line goes to `bad` (an error, or skipped). `each` may stop
/// the reading with an error.
pub fn read_records<E: From<FineTuneError>>(
    path: &Path,
    columns: &[&str],
    bad: &mut BadRows,
    mut each: impl FnMut(usize, Vec<Option<String>>) -> Result<(), E>,
) -> Result<(), E> {
    let file_error = |reason: String| FineTuneError::File {
        path: path.to_path_buf(),
        reason,
    };
    let row_error = |line: usize, reason: String| FineTuneError::Data {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match extension.as_str() {
        "csv" | "tsv" => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(if extension == "tsv" { b'\t' } else { b',' })
                .from_reader(LfLines::new(std::io::BufReader::new(file)));
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
            for record in reader.records() {
                let record = match record {
                    Ok(record) => record,
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line() as usize);
                        bad.handle(row_error(line, e.to_string()))?;
                        continue;
                    }
                };
                let line = record.position().map_or(0, |p| p.line() as usize);
                let values = indices
                    .iter()
                    .map(|&i| record.get(i).map(str::to_string))
                    .collect();
                each(line, values)?;
            }
        }
        "jsonl" | "ndjson" => {
            for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
                let number = i + 1;
                let line = line.map_err(|e| row_error(number, e.to_string()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(value) => value,
                    Err(e) => {
                        bad.handle(row_error(number, format!("not JSON: {e}")))?;
                        continue;
                    }
                };
                let values = columns
                    .iter()
                    .map(|&name| match value.get(name) {
                        Some(serde_json::Value::String(s)) => Some(s.clone()),
                        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                        // A list (the labels of a multi-label row) as `a|b`.
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
                    })
                    .collect();
                each(number, values)?;
            }
        }
        other => {
            return Err(file_error(format!(
                "unknown file type \"{other}\": expected .csv, .tsv or .jsonl"
            ))
            .into());
        }
    }
    Ok(())
}

/// Between the labels of a multi-label row in a CSV / TSV cell (`finance|politics`); a JSON Lines
/// row may give them as a list instead.
pub const LABEL_SEPARATOR: &str = "|";

/// A reader that turns `\r\n` line ends into `\n`. The `csv` crate numbers the records of a
/// file with `\r\n` line ends one line short (a record starts at the `\n` of the line end
/// before it); Python's `csv` module and Excel write such files.
struct LfLines<R> {
    inner: R,
    /// A `\r` that ended the last chunk, not yet known to start a `\r\n`.
    pending_cr: bool,
}

impl<R: std::io::BufRead> LfLines<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            pending_cr: false,
        }
    }
}

impl<R: std::io::BufRead> std::io::Read for LfLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut out = 0;
        while out < buf.len() {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if self.pending_cr {
                    buf[out] = b'\r';
                    out += 1;
                    self.pending_cr = false;
                }
                break;
            }
            let mut used = 0;
            for &byte in available {
                if out == buf.len() {
                    break;
                }
                if self.pending_cr {
                    self.pending_cr = false;
                    if byte == b'\n' {
                        buf[out] = b'\n';
                        out += 1;
                        used += 1;
                        continue;
                    }
                    // A lone `\r` stays; the byte after it is looked at afresh.
                    buf[out] = b'\r';
                    out += 1;
                    if out == buf.len() {
                        break;
                    }
                }
                if byte == b'\r' {
                    self.pending_cr = true;
                } else {
                    buf[out] = byte;
                    out += 1;
                }
                used += 1;
            }
            self.inner.consume(used);
            if out > 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// Reads the labelled rows of a `.csv`, `.tsv` or `.jsonl` file (see [`read_records`]). A
/// missing column, an empty text, an empty label (unless `empty_labels`: a multi-label row with
/// no label), or a malformed line is an error naming the file and the line.
pub fn read_labelled(
    path: &Path,
    columns: &Columns,
    empty_labels: bool,
    bad: &mut BadRows,
) -> Result<Vec<LabelledText>, FineTuneError> {
    let mut names = vec![columns.text.as_str(), columns.label.as_str()];
    names.extend(columns.pair.as_deref());
    let mut rows = Vec::new();
    // Rows with a missing value: handled here, as `bad` is lent to the reader.
    let mut missing_values = if bad.skip {
        BadRows::skipping()
    } else {
        BadRows::strict()
    };
    read_records::<FineTuneError>(path, &names, bad, |line, values| {
        let missing = |what: &str, name: &str| FineTuneError::Data {
            path: path.to_path_buf(),
            line,
            reason: format!("no {what} (column \"{name}\")"),
        };
        let present = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        let row = (|| {
            let text = present(&values[0]).ok_or_else(|| missing("text", &columns.text))?;
            let label = match &values[1] {
                Some(label) if empty_labels => label.clone(),
                _ => present(&values[1]).ok_or_else(|| missing("label", &columns.label))?,
            };
            let pair = match &columns.pair {
                Some(name) => {
                    Some(present(&values[2]).ok_or_else(|| missing("second text", name))?)
                }
                None => None,
            };
            Ok(LabelledText {
                text,
                pair,
                label: label.trim().to_string(),
                line,
            })
        })();
        match row {
            Ok(row) => rows.push(row),
            Err(e) => missing_values.handle(e)?,
        }
        Ok(())
    })?;
    bad.merge(missing_values);
    if rows.is_empty() {
        return Err(FineTuneError::File {
            path: path.to_path_buf(),
            reason: "no labelled rows".to_string(),
        });
    }
    Ok(rows)
}

/// The label set of rows, sorted (numerically when every label is an integer).
pub fn label_set(rows: &[LabelledText]) -> Vec<String> {
    let set: BTreeSet<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
    }
    labels
}

impl LabelledText {
    /// The labels of a multi-label row (split at [`LABEL_SEPARATOR`], trimmed, empty parts
    /// left out).
    pub fn label_list(&self) -> Vec<String> {
        self.label
            .split(LABEL_SEPARATOR)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The value of a regression row, or an error naming the file and line.
    pub fn value(&self, path: &Path) -> Result<f32, FineTuneError> {
        self.label
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| FineTuneError::Data {
                path: path.to_path_buf(),
                line: self.line,
                reason: format!("label \"{}\" is not a finite number", self.label),
            })
    }
}

/// The labels of multi-label rows, sorted.
pub fn label_list_set(rows: &[LabelledText]) -> Vec<String> {
    let set: BTreeSet<String> = rows.iter().flat_map(LabelledText::label_list).collect();
    set.into_iter().collect()
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
        let row = |label: &str| LabelledText {
            text: "a".into(),
            pair: None,
            label: label.into(),
            line: 2,
        };
        assert_eq!(label_set(&[row("10"), row("9")]), ["9", "10"]);
        assert_eq!(row("2.5").value(&path).unwrap(), 2.5);
        let err = row("high").value(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2: label \"high\" is not a finite number")
        );
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
        // `\r\n` split across reads, a lone `\r` kept.
        let text = b"a\r\nb\rc\r\n\r\nd\r";
        for chunk in 1..8 {
            let mut reader = LfLines::new(std::io::BufReader::with_capacity(chunk, &text[..]));
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, b"a\nb\rc\n\nd\r", "chunk {chunk}");
        }
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
