//! A word-level vocabulary.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The ids of the special tokens of a [`Vocabulary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// Padding, never predicted and ignored by the loss.
    pub pad: usize,
    /// Begins every decoder input.
    pub bos: usize,
    /// Ends every target sequence; decoding stops when it is produced.
    pub eos: usize,
}

/// Why text could not be turned into ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabularyError {
    /// A token is not in the vocabulary.
    #[error(
        "token '{token}' (position {position}) is not in the vocabulary; known tokens: {known}"
    )]
    UnknownToken {
        /// The token as written.
        token: String,
        /// Its 1-based position among the input's tokens.
        position: usize,
        /// The non-special tokens, space-separated.
        known: String,
    },
    /// The input has no token at all.
    #[error("the input has no tokens")]
    Empty,
    /// A vocabulary cannot be built or read as given.
    #[error("{0}")]
    Invalid(String),
}

/// Tokens `<pad>`, `<bos>`, `<eos>` (ids 0, 1, 2) followed by the words of a task.
///
/// Text is split on whitespace; each piece must be a word of the vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabularyFile", into = "VocabularyFile")]
pub struct Vocabulary {
    tokens: Vec<String>,
    ids: HashMap<String, usize>,
}

#[derive(Serialize, Deserialize)]
struct VocabularyFile {
    tokens: Vec<String>,
}

impl TryFrom<VocabularyFile> for Vocabulary {
    type Error = String;

    /// A stored vocabulary is checked, since the special tokens' ids are fixed: it must start
    /// with [`Vocabulary::SPECIALS`] in order, and every token must be one non-empty word
    /// appearing once.
    fn try_from(file: VocabularyFile) -> Result<Self, String> {
        let head: Vec<&str> = file.tokens.iter().take(3).map(String::as_str).collect();
        if head != Vocabulary::SPECIALS {
            return Err(format!(
                "the vocabulary must start with the special tokens {:?} in this order, found {head:?}",
                Vocabulary::SPECIALS
            ));
        }
        let mut ids = HashMap::with_capacity(file.tokens.len());
        for (id, token) in file.tokens.iter().enumerate() {
            if token.is_empty() || token.split_whitespace().count() != 1 || token.trim() != token {
                return Err(format!(
                    "vocabulary token {id} ({token:?}) is not one word: text is split on whitespace, so it could never be read"
                ));
            }
            if let Some(first) = ids.insert(token.clone(), id) {
                return Err(format!(
                    "vocabulary token {token:?} appears twice (ids {first} and {id})"
                ));
            }
        }
        Ok(Vocabulary {
            tokens: file.tokens,
            ids,
        })
    }
}

impl From<Vocabulary> for VocabularyFile {
    fn from(vocabulary: Vocabulary) -> Self {
        VocabularyFile {
            tokens: vocabulary.tokens,
        }
    }
}

impl Vocabulary {
    /// The special tokens, in id order.
    pub const SPECIALS: [&'static str; 3] = ["<pad>", "<bos>", "<eos>"];

    /// The special tokens followed by `words` (duplicates are dropped).
    ///
    /// # Errors
    ///
    /// [`VocabularyError::Invalid`] when a word is empty or holds whitespace (text is split on
    /// whitespace, so it could never be read).
    pub fn new<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Result<Self, VocabularyError> {
        let mut tokens: Vec<String> = Self::SPECIALS.iter().map(|s| s.to_string()).collect();
        for word in words {
            let word = word.as_ref().to_string();
            if !tokens.contains(&word) {
                tokens.push(word);
            }
        }
        VocabularyFile { tokens }
            .try_into()
            .map_err(VocabularyError::Invalid)
    }

    /// The ids of `<pad>`, `<bos>` and `<eos>`.
    pub fn specials(&self) -> SpecialTokens {
        SpecialTokens {
            pad: 0,
            bos: 1,
            eos: 2,
        }
    }

    /// Number of tokens, special ones included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary has only its special tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= Self::SPECIALS.len()
    }

    /// The id of a word.
    pub fn id(&self, token: &str) -> Option<usize> {
        self.ids.get(token).copied()
    }

    /// The token of an id.
    pub fn token(&self, id: usize) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// Splits `text` on whitespace and maps each word to its id; special tokens are refused.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, VocabularyError> {
        let ids = text
            .split_whitespace()
            .enumerate()
            .map(|(i, token)| match self.id(token) {
                Some(id) if id >= Self::SPECIALS.len() => Ok(id),
                _ => Err(VocabularyError::UnknownToken {
                    token: token.to_string(),
                    position: i + 1,
                    known: self.tokens[Self::SPECIALS.len()..].join(" "),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Err(VocabularyError::Empty);
        }
        Ok(ids)
    }

    /// Joins the words of `ids` with spaces, skipping special tokens and unknown ids.
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter()
            .filter(|&&id| id >= Self::SPECIALS.len())
            .filter_map(|&id| self.token(id))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Vocabulary {
        Vocabulary::new((0..10).map(|d| d.to_string())).unwrap()
    }

    #[test]
    fn round_trips_text() {
        let v = digits();
        assert_eq!(v.len(), 13);
        let ids = v.encode(" 3 1  4 ").unwrap();
        assert_eq!(ids, vec![6, 4, 7]);
        assert_eq!(v.decode(&[1, 6, 4, 7, 2, 0]), "3 1 4");
    }

    #[test]
    fn unknown_and_special_tokens_are_refused_with_their_position() {
        let v = digits();
        let err = v.encode("3 x 4").unwrap_err();
        assert_eq!(
            err.to_string(),
            "token 'x' (position 2) is not in the vocabulary; known tokens: 0 1 2 3 4 5 6 7 8 9"
        );
        assert!(matches!(
            v.encode("<eos>"),
            Err(VocabularyError::UnknownToken { position: 1, .. })
        ));
        assert_eq!(v.encode("   "), Err(VocabularyError::Empty));
    }

    #[test]
    fn serializes_as_a_token_list() {
        let v = Vocabulary::new(["a", "b"]).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"tokens":["<pad>","<bos>","<eos>","a","b"]}"#);
        assert_eq!(serde_json::from_str::<Vocabulary>(&json).unwrap(), v);
    }

    /// A stored vocabulary whose special tokens are missing, swapped or repeated, or whose
    /// words could never be read, is refused when read, since the special ids are fixed.
    #[test]
    fn stored_vocabularies_are_checked() {
        let read = |tokens: &str| {
            serde_json::from_str::<Vocabulary>(&format!(r#"{{"tokens":{tokens}}}"#))
                .map_err(|e| e.to_string())
        };
        assert!(read(r#"["<pad>","<bos>","<eos>","a"]"#).is_ok());
        for (tokens, expected) in [
            (
                r#"["<pad>","<eos>","<bos>","a"]"#,
                "must start with the special tokens",
            ),
            (
                r#"["a","<pad>","<bos>","<eos>"]"#,
                "must start with the special tokens",
            ),
            (r#"["<pad>","<bos>"]"#, "must start with the special tokens"),
            (
                r#"["<pad>","<bos>","<eos>","a","a"]"#,
                "appears twice (ids 3 and 4)",
            ),
            (
                r#"["<pad>","<bos>","<eos>","<eos>"]"#,
                "appears twice (ids 2 and 3)",
            ),
            (r#"["<pad>","<bos>","<eos>","a b"]"#, "is not one word"),
            (r#"["<pad>","<bos>","<eos>",""]"#, "is not one word"),
        ] {
            let err = read(tokens).unwrap_err();
            assert!(err.contains(expected), "{tokens}: {err}");
        }
        assert!(matches!(
            Vocabulary::new(["ok", "not ok"]),
            Err(VocabularyError::Invalid(_))
        ));
    }
}
