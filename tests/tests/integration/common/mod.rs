//! Reading the golden fixtures written by the scripts in `tests/fixtures/`.

// Each test module uses a part of these helpers.
#![allow(dead_code)]

use focal::burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use std::collections::HashMap;

/// A fixture file: every tensor by name (all float32).
pub struct Fixture(HashMap<String, TensorData>);

impl Fixture {
    /// Parses a safetensors file of float32 tensors.
    pub fn parse(bytes: &[u8]) -> Self {
        let file = safetensors::SafeTensors::deserialize(bytes).expect("fixture parses");
        Self(
            file.tensors()
                .into_iter()
                .map(|(name, view)| {
                    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
                    let values: Vec<f32> = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    (name, TensorData::new(values, view.shape().to_vec()))
                })
                .collect(),
        )
    }

    /// The values of tensor `key`, flattened.
    pub fn values(&self, key: &str) -> Vec<f32> {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor '{key}'"))
            .to_vec::<f32>()
            .expect("fixture tensors are f32")
    }

    /// The shape of tensor `key`.
    pub fn shape(&self, key: &str) -> Vec<usize> {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor '{key}'"))
            .shape
            .to_vec()
    }

    /// The tensor `key`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let data = self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor '{key}'"));
        Tensor::from_data(data.clone(), device)
    }

    /// A 0/1 float tensor as a boolean tensor.
    pub fn flag<B: Backend, const D: usize>(
        &self,
        key: &str,
        device: &B::Device,
    ) -> Tensor<B, D, Bool> {
        self.tensor::<B, D>(key, device).greater_elem(0.5)
    }

    /// The state dict stored under `prefix.state.`, keys without that prefix.
    pub fn state(&self, prefix: &str) -> HashMap<String, TensorData> {
        let prefix = format!("{prefix}.state.");
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), v.clone())))
            .collect()
    }
}

/// Every value of `json` (objects and arrays walked to their leaves; an array's first item
/// stands for the rest) replaced in turn by null, a string, -1, 0, 1.5, 1e300, 10¹⁵, `[]` and
/// `{}`: the documents of a generator of wrong JSON types and sizes, each with what changed.
pub fn json_variants(json: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn leaves(value: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    leaves(v, format!("{path}/{k}"), out);
                }
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                leaves(&items[0], format!("{path}/0"), out);
            }
            _ => out.push(path),
        }
    }
    let replacements = [
        serde_json::json!(null),
        serde_json::json!("text"),
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(1.5),
        serde_json::json!(1e300),
        serde_json::json!(1_000_000_000_000_000u64),
        serde_json::json!([]),
        serde_json::json!({}),
    ];
    let mut paths = Vec::new();
    leaves(json, String::new(), &mut paths);
    let mut variants = Vec::new();
    for path in paths {
        for replacement in &replacements {
            let mut changed = json.clone();
            *changed.pointer_mut(&path).expect("a leaf of the document") = replacement.clone();
            variants.push((format!("{path} = {replacement}"), changed));
        }
    }
    variants
}

/// Integer rows `[b][l]` (token ids, types) as a tensor.
pub fn int_tensor<B: Backend>(rows: &[Vec<i64>], device: &B::Device) -> Tensor<B, 2, Int> {
    let l = rows[0].len();
    let values: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(values, [rows.len(), l]), device)
}

/// A JSON array of numbers nested `D` deep (what a fixture script wrote with `.tolist()`) as a
/// float tensor.
pub fn json_tensor<B: Backend, const D: usize>(
    value: &serde_json::Value,
    device: &B::Device,
) -> Tensor<B, D> {
    let mut shape = Vec::with_capacity(D);
    let mut first = value;
    while let Some(items) = first.as_array() {
        shape.push(items.len());
        first = &items[0];
    }
    fn leaves(value: &serde_json::Value, out: &mut Vec<f32>) {
        match value {
            serde_json::Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            number => out.push(number.as_f64().expect("a number") as f32),
        }
    }
    let mut values = Vec::new();
    leaves(value, &mut values);
    assert_eq!(shape.len(), D, "a JSON array {D} deep");
    Tensor::from_data(TensorData::new(values, shape), device)
}
