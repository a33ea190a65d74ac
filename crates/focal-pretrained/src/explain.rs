//! Why a classifier chose its label: a score per token by gradient × input and by attention ×
//! gradient.

use crate::bert::BertScales;
use crate::tasks::{BertForSequenceClassification, BertInputs};
use burn::tensor::{ElementConversion, Tensor};
use focal_attention::FusedAutodiffBackend;

/// A score per token for one class of one input ([`explain`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenAttribution {
    /// The class explained (by default the predicted one).
    pub class: usize,
    /// Its logit.
    pub logit: f32,
    /// `Σ_d e_d ∂logit/∂e_d` for each token's word embedding `e` (gradient × input; what
    /// transformers' `inputs_embeds` receives): positive where the token pushes toward the
    /// class, negative where it pushes away.
    pub gradient_input: Vec<f32>,
    /// The first token's row of Chefer et al. (2021)'s relevance: `R = I`, then for each layer
    /// `R ← R + Ā R` with `Ā = mean over heads of max(0, P ⊙ ∂logit/∂P)` (attention ×
    /// gradient, positive part, propagated through the layers). Never negative; the first
    /// token's own score includes its 1 from `I`.
    pub attention_gradient: Vec<f32>,
}

/// Explains the classifier's logit for `class` (by default its largest) on one input (a batch
/// of one, `[1, l]` ids, token types and mask with no padding), by gradient × input and by
/// attention × gradient ([`TokenAttribution`]). The model should be loaded without dropout
/// ([`BertForSequenceClassification::load_without_dropout`]): burn's dropout is on under
/// every autodiff backend.
///
/// # Panics
///
/// When the batch is not one sequence, or `class` is not below the number of labels.
pub fn explain<B: FusedAutodiffBackend>(
    model: &BertForSequenceClassification<B>,
    inputs: BertInputs<B>,
    class: Option<usize>,
) -> TokenAttribution {
    let [b, l] = inputs.0.dims();
    assert_eq!(
        b, 1,
        "explain reads one input at a time, not a batch of {b}"
    );
    let device = inputs.0.device();
    let layers = model.bert.encoder.layers();
    let heads = layers[0].self_attention.n_heads();
    let tokens = Tensor::<B, 2>::ones([1, l], &device).require_grad();
    let probabilities: Vec<Tensor<B, 4>> = layers
        .iter()
        .map(|_| Tensor::<B, 4>::ones([1, heads, l, l], &device).require_grad())
        .collect();
    let scales = BertScales {
        tokens: Some(tokens.clone()),
        heads: None,
        probabilities: Some(probabilities.clone()),
    };
    let logits = model.forward_scaled(inputs, scales); // [1, labels]
    let [_, labels] = logits.dims();
    let class = class
        .unwrap_or_else(|| logits.clone().inner().argmax(1).into_scalar().elem::<i64>() as usize);
    assert!(
        class < labels,
        "class {class}: the model has {labels} labels"
    );
    let logit = logits.slice([0..1, class..class + 1]).sum();
    let value: f32 = logit.clone().inner().into_scalar().elem();
    let gradients = logit.backward();
    let values = focal_backend::math::to_vec::<B::InnerBackend, 1>;
    let gradient_input = values(
        tokens
            .grad(&gradients)
            .expect("the token scale takes part in the logit")
            .reshape([l]),
    );
    let mut relevance = Tensor::<B::InnerBackend, 2>::eye(l, &device);
    for scale in &probabilities {
        let cam = scale
            .grad(&gradients)
            .expect("each probability scale takes part in the logit") // P ⊙ ∂logit/∂P
            .clamp_min(0.0)
            .mean_dim(1)
            .reshape([l, l]);
        relevance = relevance.clone() + cam.matmul(relevance);
    }
    let attention_gradient = values(relevance.slice([0..1, 0..l]).reshape([l]));
    TokenAttribution {
        class,
        logit: value,
        gradient_input,
        attention_gradient,
    }
}
