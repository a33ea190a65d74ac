//! Text generation for causal language models: greedy, sampling (temperature, top-k, top-p,
//! min-p), repetition penalty, no-repeat n-grams, beam search; stop tokens, a token budget, a
//! streaming callback and a seed. Every step feeds only the newest token through the model's
//! KV cache.
//!
//! Logit processing follows Hugging Face transformers' order and formulas: repetition penalty
//! (`score / p` for positive scores, `score · p` for negative ones, on every token of the prompt
//! and the output), no-repeat n-grams, then temperature, top-k, top-p, min-p.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use focal_attention::FusedAttentionBackend;
use focal_backend::ConfigError;
use focal_backend::math::{argmax, log_softmax, softmax};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A model that predicts the next token and decodes incrementally with a cache.
pub trait CausalLm<B: Backend> {
    /// The decoding state (one KV cache per layer).
    type Cache;

    /// An empty cache for `batch` sequences of up to `capacity` positions.
    fn new_cache(&self, batch: usize, capacity: usize, device: &B::Device) -> Self::Cache;

    /// Logits `[b, n, vocab]` for `n` new token ids `[b, n]` appended after the cached ones.
    fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut Self::Cache) -> Tensor<B, 3>;

    /// Keeps the sequences `rows` of the cache's batch, in that order (beam search).
    fn select_cache_rows(&self, cache: &mut Self::Cache, rows: &[usize]);

    /// The longest sequence (prompt plus output) the model accepts.
    fn max_len(&self) -> usize;
}

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// The most likely token.
    Greedy,
    /// A token drawn from the processed distribution.
    Sample,
    /// Beam search over `beams` hypotheses, as transformers 4.57's `generate(num_beams=...)`:
    /// finished hypotheses are scored `sum log p / n^length_penalty`, with `n` the number of
    /// generated tokens (the stop token included); see [`EarlyStopping`] for when it ends.
    Beam {
        /// Number of beams.
        beams: usize,
        /// Exponent of the length normalisation (1 = mean log-probability, 0 = none, > 1
        /// favours longer outputs).
        length_penalty: f64,
        /// When the search ends before the token budget.
        early_stopping: EarlyStopping,
    },
}

/// When beam search ends before the token budget is spent (transformers' `early_stopping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStopping {
    /// As soon as `beams` hypotheses are finished (transformers' `early_stopping=True`).
    WhenFull,
    /// When `beams` hypotheses are finished and the best running beam, normalised by its
    /// current length, cannot beat the worst of them (`early_stopping=False`, transformers'
    /// default heuristic).
    Heuristic,
    /// As `Heuristic`, but with a positive length penalty the running beam is credited with
    /// the longest possible length, so the search only stops when no beam can improve
    /// (`early_stopping="never"`, canonical beam search).
    Never,
}

/// Options of [`generate()`].
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens to produce.
    pub max_new_tokens: usize,
    /// Greedy, sampling or beam search.
    pub strategy: Strategy,
    /// Divides the logits before sampling (1 = unchanged).
    pub temperature: f64,
    /// Sample among the `k` most likely tokens only.
    pub top_k: Option<usize>,
    /// Sample among the smallest set of tokens whose probability reaches `p` (nucleus).
    pub top_p: Option<f64>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f64>,
    /// Penalty on tokens already present (1 = none; > 1 discourages repetition).
    pub repetition_penalty: f64,
    /// Forbid repeating any n-gram of this size (0 = off).
    pub no_repeat_ngram_size: usize,
    /// Tokens that end generation (included in the output).
    pub stop_tokens: Vec<usize>,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            strategy: Strategy::Greedy,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// Checks the options; the error names the offending value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "GenerationConfig";
        ConfigError::ensure(self.temperature > 0.0, NAME, || {
            format!("temperature ({}) must be positive", self.temperature)
        })?;
        if let Some(k) = self.top_k {
            ConfigError::ensure_positive(NAME, "top_k", k)?;
        }
        if let Some(p) = self.top_p {
            ConfigError::ensure(p > 0.0 && p <= 1.0, NAME, || {
                format!("top_p ({p}) must be in (0, 1]")
            })?;
        }
        if let Some(p) = self.min_p {
            ConfigError::ensure((0.0..=1.0).contains(&p), NAME, || {
                format!("min_p ({p}) must be in [0, 1]")
            })?;
        }
        ConfigError::ensure(self.repetition_penalty > 0.0, NAME, || {
            format!(
                "repetition_penalty ({}) must be positive",
                self.repetition_penalty
            )
        })?;
        if let Strategy::Beam {
            beams,
            length_penalty,
            ..
        } = self.strategy
        {
            ConfigError::ensure_positive(NAME, "beams", beams)?;
            ConfigError::ensure(length_penalty.is_finite(), NAME, || {
                format!("length_penalty ({length_penalty}) must be finite")
            })?;
        }
        Ok(())
    }
}

/// Why generation could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerationError {
    /// The options are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// There is no prompt token to start from.
    #[error("the prompt is empty: generation needs at least one token")]
    EmptyPrompt,
    /// Prompt plus output would not fit the model.
    #[error(
        "the prompt has {prompt} tokens and {max_new_tokens} more were asked for, but the model takes at most {max_len}"
    )]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens asked for.
        max_new_tokens: usize,
        /// The model's limit.
        max_len: usize,
    },
    /// [`beam_search`] was called with another strategy.
    #[error("beam_search needs Strategy::Beam")]
    NotBeamSearch,
}

/// Generates a continuation of `prompt` and returns its token ids (a stop token, when one
/// ends it, included). `on_token` receives each token as soon as it is chosen (for beam search,
/// the tokens of the best hypothesis once the search ends).
pub fn generate<B: FusedAttentionBackend, M: CausalLm<B>>(
    model: &M,
    prompt: &[usize],
    config: &GenerationConfig,
    device: &B::Device,
    mut on_token: impl FnMut(usize),
) -> Result<Vec<usize>, GenerationError> {
    if let Strategy::Beam { .. } = config.strategy {
        let tokens = beam_search(model, prompt, config, device)?
            .into_iter()
            .next()
            .map(|best| best.tokens)
            .unwrap_or_default();
        tokens.iter().for_each(|&t| on_token(t));
        return Ok(tokens);
    }
    check_request(model, prompt, config)?;
    if config.max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let capacity = prompt.len() + config.max_new_tokens;
    let mut cache = model.new_cache(1, capacity, device);
    let mut sequence = prompt.to_vec();
    let mut logits = last_logits(model.forward_cached(ids(&[prompt], device), &mut cache));
    let mut output = Vec::new();
    for _ in 0..config.max_new_tokens {
        let mut scores = logits.remove(0);
        process(&mut scores, &sequence, config);
        let token = match config.strategy {
            Strategy::Sample => sample(&scores, &mut rng),
            _ => argmax(&scores),
        };
        on_token(token);
        output.push(token);
        sequence.push(token);
        if config.stop_tokens.contains(&token) || output.len() == config.max_new_tokens {
            break;
        }
        logits = last_logits(model.forward_cached(ids(&[&[token]], device), &mut cache));
    }
    Ok(output)
}

/// Validates the options and checks that the prompt and the token budget fit the model.
fn check_request<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompt: &[usize],
    config: &GenerationConfig,
) -> Result<(), GenerationError> {
    config.validate()?;
    if prompt.is_empty() {
        return Err(GenerationError::EmptyPrompt);
    }
    if prompt
        .len()
        .checked_add(config.max_new_tokens)
        .is_none_or(|total| total > model.max_len())
    {
        return Err(GenerationError::TooLong {
            prompt: prompt.len(),
            max_new_tokens: config.max_new_tokens,
            max_len: model.max_len(),
        });
    }
    Ok(())
}

/// `[b, n]` ids from rows of equal length.
fn ids<B: Backend>(rows: &[&[usize]], device: &B::Device) -> Tensor<B, 2, Int> {
    let n = rows[0].len();
    let values: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.iter().map(|&t| t as i64))
        .collect();
    Tensor::from_data(TensorData::new(values, [rows.len(), n]), device)
}

/// The logits of the last position of each row, on the host.
fn last_logits<B: FusedAttentionBackend>(logits: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, n, vocab] = logits.dims();
    // `host_values` reads ndarray's tensor in place; `into_data` would copy it element by
    // element (about a millisecond per token for GPT-2's 50257 logits).
    let values = B::host_values(logits.slice([0..b, n - 1..n, 0..vocab]));
    values
        .as_slice()
        .chunks(vocab)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Repetition penalty, no-repeat n-grams, temperature, top-k, top-p, min-p (Hugging Face's
/// order) on one row of scores, given the tokens so far (prompt included).
fn process(scores: &mut [f32], sequence: &[usize], config: &GenerationConfig) {
    let penalty = config.repetition_penalty as f32;
    if penalty != 1.0 {
        let mut seen = sequence.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            let s = &mut scores[t];
            *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
        }
    }
    for t in banned_ngram_tokens(sequence, config.no_repeat_ngram_size) {
        scores[t] = f32::NEG_INFINITY;
    }
    if config.strategy != Strategy::Sample {
        return; // warpers only shape the sampling distribution
    }
    if config.temperature != 1.0 {
        scores
            .iter_mut()
            .for_each(|s| *s /= config.temperature as f32);
    }
    if let Some(k) = config.top_k {
        let k = k.min(scores.len());
        let mut sorted: Vec<f32> = scores.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let threshold = sorted[k - 1];
        scores
            .iter_mut()
            .filter(|s| **s < threshold)
            .for_each(|s| *s = f32::NEG_INFINITY);
    }
    if let Some(p) = config.top_p {
        // Remove the least likely tokens whose cumulative probability stays within 1 - p.
        let probs = softmax(scores);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b])); // ascending
        let mut cumulative = 0.0f64;
        for &t in &order[..order.len() - 1] {
            cumulative += probs[t] as f64;
            if cumulative <= 1.0 - p {
                scores[t] = f32::NEG_INFINITY;
            } else {
                break;
            }
        }
    }
    if let Some(min_p) = config.min_p {
        let probs = softmax(scores);
        let top = probs.iter().copied().fold(0.0f32, f32::max);
        for (s, &q) in scores.iter_mut().zip(&probs) {
            if q < min_p as f32 * top {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// Tokens that would complete an n-gram already present in `sequence`.
fn banned_ngram_tokens(sequence: &[usize], n: usize) -> Vec<usize> {
    if n == 0 || sequence.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &sequence[sequence.len() + 1 - n..];
    sequence
        .windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

fn sample(scores: &[f32], rng: &mut StdRng) -> usize {
    let probs = softmax(scores);
    let mut u: f32 = rng.random();
    for (i, &p) in probs.iter().enumerate() {
        if u < p {
            return i;
        }
        u -= p;
    }
    argmax(scores)
}

/// A finished beam-search hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamHypothesis {
    /// The generated tokens (the stop token, when one ended it, included).
    pub tokens: Vec<usize>,
    /// `sum log p / n^length_penalty` over the `n` generated tokens (transformers'
    /// `sequences_scores`).
    pub score: f64,
}

/// The finished hypotheses: at most `beams`, the best by normalised score.
struct Finished {
    beams: usize,
    list: Vec<BeamHypothesis>,
}

impl Finished {
    fn add(&mut self, tokens: Vec<usize>, score: f64) {
        if self.list.len() < self.beams || score > self.worst() {
            self.list.push(BeamHypothesis { tokens, score });
            if self.list.len() > self.beams {
                let worst = (0..self.list.len())
                    .min_by(|&a, &b| self.list[a].score.total_cmp(&self.list[b].score))
                    .expect("not empty");
                self.list.remove(worst);
            }
        }
    }

    fn is_full(&self) -> bool {
        self.list.len() >= self.beams
    }

    fn worst(&self) -> f64 {
        self.list
            .iter()
            .map(|h| h.score)
            .fold(f64::INFINITY, f64::min)
    }

    /// Best first.
    fn into_sorted(mut self) -> Vec<BeamHypothesis> {
        self.list.sort_by(|a, b| b.score.total_cmp(&a.score));
        self.list
    }
}

/// Beam search for one prompt, as transformers 4.57's `generate(num_beams=...)`: returns the
/// finished hypotheses, best first (transformers' `sequences` and `sequences_scores` with
/// `num_return_sequences = num_beams`).
///
/// Each step ranks every (beam, next token) continuation by its summed log-probability (the
/// processors of [`GenerationConfig`] applied to the log-probabilities) and keeps the best
/// `max(2, 1 + stop tokens) · beams`. Of those, the ones among the first `beams` that end in a
/// stop token, or reach the token budget, finish, scored `sum log p / n^length_penalty` with
/// `n` the tokens generated; the best `beams` of the others run on. The search ends at the
/// budget or as [`EarlyStopping`] says.
///
/// # Errors
///
/// As [`generate()`]; [`GenerationError::NotBeamSearch`] when the strategy is not beam search.
pub fn beam_search<B: FusedAttentionBackend, M: CausalLm<B>>(
    model: &M,
    prompt: &[usize],
    config: &GenerationConfig,
    device: &B::Device,
) -> Result<Vec<BeamHypothesis>, GenerationError> {
    check_request(model, prompt, config)?;
    let Strategy::Beam {
        beams,
        length_penalty,
        early_stopping,
    } = config.strategy
    else {
        return Err(GenerationError::NotBeamSearch);
    };
    let budget = config.max_new_tokens;
    let mut finished = Finished {
        beams,
        list: Vec::new(),
    };
    if budget == 0 {
        return Ok(Vec::new());
    }
    let keep = 2.max(1 + config.stop_tokens.len()) * beams;
    let normalised = |score: f64, n: usize| score / (n as f64).powf(length_penalty);
    let mut cache = model.new_cache(beams, prompt.len() + budget, device);
    let rows: Vec<&[usize]> = vec![prompt; beams];
    let mut logits = last_logits(model.forward_cached(ids(&rows, device), &mut cache));
    // Only the first beam is live at the start, so the first step does not pick duplicates.
    let mut scores: Vec<f64> = (0..beams)
        .map(|i| if i == 0 { 0.0 } else { -1e9 })
        .collect();
    let mut outputs: Vec<Vec<usize>> = vec![Vec::new(); beams];
    // transformers' `is_early_stop_heuristic_unsatisfied`: sticky once false.
    let mut may_improve = true;
    for step in 0..budget {
        let generated = step + 1;
        let last_step = generated == budget;
        let mut candidates: Vec<(f64, usize, usize)> = Vec::new(); // (score, beam, token)
        for (beam, row) in logits.iter().enumerate() {
            // transformers' beam search applies the processors to the log-probabilities.
            let sequence: Vec<usize> = prompt.iter().chain(&outputs[beam]).copied().collect();
            let mut log_probs = log_softmax(row);
            process(&mut log_probs, &sequence, config);
            for (token, lp) in log_probs.into_iter().enumerate() {
                candidates.push((scores[beam] + lp as f64, beam, token));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates.truncate(keep);
        let ends = |token: usize| last_step || config.stop_tokens.contains(&token);
        // Finished hypotheses are taken while more may still be added (not after the search
        // was found unable to improve, nor once full under `WhenFull`).
        let accepting =
            may_improve && !(early_stopping == EarlyStopping::WhenFull && finished.is_full());
        if accepting {
            for &(score, beam, token) in candidates.iter().take(beams) {
                if ends(token) {
                    let mut tokens = outputs[beam].clone();
                    tokens.push(token);
                    finished.add(tokens, normalised(score, generated));
                }
            }
        }
        // The best `beams` continuations that did not end run on; when fewer did not end,
        // ended ones fill the beams with a score no hypothesis can recover from.
        let mut next: Vec<(f64, usize, usize)> = candidates
            .iter()
            .map(|&(score, beam, token)| {
                (if ends(token) { score - 1e9 } else { score }, beam, token)
            })
            .collect();
        next.sort_by(|a, b| b.0.total_cmp(&a.0));
        next.truncate(beams);
        if last_step || next.iter().all(|c| c.0 <= -1e9 / 2.0) {
            break;
        }
        if may_improve && finished.is_full() {
            let length = match early_stopping {
                EarlyStopping::Never if length_penalty > 0.0 => budget,
                _ => generated,
            };
            may_improve = normalised(next[0].0, length) > finished.worst();
        }
        let full_and_done = early_stopping == EarlyStopping::WhenFull && finished.is_full();
        if !may_improve || full_and_done {
            break;
        }
        let parents: Vec<usize> = next.iter().map(|c| c.1).collect();
        outputs = next
            .iter()
            .map(|&(_, beam, token)| {
                let mut o = outputs[beam].clone();
                o.push(token);
                o
            })
            .collect();
        scores = next.iter().map(|c| c.0).collect();
        model.select_cache_rows(&mut cache, &parents);
        let last: Vec<[usize; 1]> = next.iter().map(|c| [c.2]).collect();
        let rows: Vec<&[usize]> = last.iter().map(|t| t.as_slice()).collect();
        logits = last_logits(model.forward_cached(ids(&rows, device), &mut cache));
    }
    Ok(finished.into_sorted())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(strategy: Strategy) -> GenerationConfig {
        GenerationConfig {
            strategy,
            ..GenerationConfig::default()
        }
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores() {
        let mut scores = vec![2.0, -2.0, 1.0];
        let config = GenerationConfig {
            repetition_penalty: 2.0,
            ..config(Strategy::Greedy)
        };
        process(&mut scores, &[0, 1, 1], &config);
        assert_eq!(scores, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn no_repeat_ngram_bans_the_completing_token() {
        // Bigrams seen: (5, 6), (6, 5); the sequence ends in 5, so 6 is banned.
        assert_eq!(banned_ngram_tokens(&[5, 6, 5], 2), vec![6]);
        assert!(banned_ngram_tokens(&[5, 6, 7], 2).is_empty());
    }

    #[test]
    fn top_k_top_p_and_min_p_keep_the_expected_tokens() {
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let kept = |c: GenerationConfig| {
            let mut s = logits.clone();
            process(&mut s, &[], &c);
            (0..4).filter(|&i| s[i].is_finite()).collect::<Vec<_>>()
        };
        let sample = config(Strategy::Sample);
        assert_eq!(
            kept(GenerationConfig {
                top_k: Some(2),
                ..sample.clone()
            }),
            vec![0, 1]
        );
        // Cumulative from the least likely: 0.05, 0.20 ≤ 1 - 0.75, then 0.50 > 0.25.
        assert_eq!(
            kept(GenerationConfig {
                top_p: Some(0.75),
                ..sample.clone()
            }),
            vec![0, 1]
        );
        // 0.5 · 0.25 = 0.125: 0.05 is dropped.
        assert_eq!(
            kept(GenerationConfig {
                min_p: Some(0.25),
                ..sample
            }),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let scores: Vec<f32> = [0.7f32, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[sample(&scores, &mut rng)] += 1;
        }
        assert!((6700..7300).contains(&counts[0]), "{counts:?}");
        assert!((1700..2300).contains(&counts[1]), "{counts:?}");
        let mut a = StdRng::seed_from_u64(3);
        let mut b = StdRng::seed_from_u64(3);
        let draws = |r: &mut StdRng| (0..20).map(|_| sample(&scores, r)).collect::<Vec<_>>();
        assert_eq!(draws(&mut a), draws(&mut b));
    }

    #[test]
    fn invalid_options_are_refused() {
        let err = GenerationConfig {
            top_p: Some(1.5),
            ..GenerationConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid GenerationConfig: top_p (1.5) must be in (0, 1]"
        );
    }
}
