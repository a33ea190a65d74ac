//! Retrieval-style matching (FAQ, customer service): candidates embedded once, queries ranked
//! against them by cosine similarity.

use burn::tensor::{Tensor, backend::Backend};
use focal_backend::ConfigError;
use serde::{Deserialize, Serialize};

/// A candidate that matches a query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Its position among the candidates.
    pub index: usize,
    /// Its text.
    pub text: String,
    /// Cosine similarity to the query, in `[-1, 1]`.
    pub score: f32,
}

/// Candidate texts and their L2-normalised embeddings `[n, d]`, kept on the device, to rank
/// queries against (embed them with any sentence encoder, e.g. `SentenceEmbedder`).
#[derive(Clone, Debug)]
pub struct Matcher<B: Backend> {
    texts: Vec<String>,
    embeddings: Tensor<B, 2>,
}

use focal_backend::math::l2_normalize as normalise;

impl<B: Backend> Matcher<B> {
    /// The candidates `texts` with their embeddings `[n, d]` (one row per text, any scale).
    pub fn new(texts: Vec<String>, embeddings: Tensor<B, 2>) -> Result<Self, ConfigError> {
        let [n, _] = embeddings.dims();
        ConfigError::ensure(n == texts.len() && n > 0, "Matcher", || {
            format!(
                "needs one embedding per candidate and at least one candidate: {} texts, {n} embeddings",
                texts.len()
            )
        })?;
        Ok(Self {
            texts,
            embeddings: normalise(embeddings),
        })
    }

    /// The candidates.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// Adds candidates (texts and their embeddings `[m, d]`), e.g. the next batch of a file.
    pub fn extend(
        &mut self,
        texts: Vec<String>,
        embeddings: Tensor<B, 2>,
    ) -> Result<(), ConfigError> {
        let more = Matcher::new(texts, embeddings)?;
        let [_, d] = self.embeddings.dims();
        let [_, d_more] = more.embeddings.dims();
        ConfigError::ensure(d == d_more, "Matcher", || {
            format!("embeddings of width {d_more} added to candidates of width {d}")
        })?;
        self.texts.extend(more.texts);
        self.embeddings = Tensor::cat(vec![self.embeddings.clone(), more.embeddings], 0);
        Ok(())
    }

    /// The `k` best candidates of each query `[q, d]`, best first (equal scores keep the
    /// candidates' order).
    pub fn top_k(&self, queries: Tensor<B, 2>, k: usize) -> Result<Vec<Vec<Match>>, ConfigError> {
        let [q, d] = queries.dims();
        let [n, d_candidates] = self.embeddings.dims();
        ConfigError::ensure(d == d_candidates, "Matcher", || {
            format!("queries of width {d} against candidates of width {d_candidates}")
        })?;
        let scores = normalise(queries).matmul(self.embeddings.clone().transpose()); // [q, n]
        let values: Vec<f32> = scores
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| ConfigError::new("Matcher", format!("{e:?}")))?;
        Ok((0..q)
            .map(|row| {
                let row = &values[row * n..(row + 1) * n];
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                order
                    .into_iter()
                    .take(k)
                    .map(|index| Match {
                        index,
                        text: self.texts[index].clone(),
                        score: row[index],
                    })
                    .collect()
            })
            .collect())
    }
}
