//! The same weights and inputs give the same outputs (≤ 1e-4) on ndarray and wgpu.
//!
//! Weights travel through the model directory format (`save_checkpoint` on ndarray,
//! `load_checkpoint` on wgpu), which checks that path across backends as well.
//!
//! The test exists only in builds with both backends (focal-backend's `ndarray` and `wgpu`
//! features, as `cargo xtask test-all` builds): with one backend there is nothing to compare,
//! and a test that compared nothing would pass without checking anything.

focal::backend::if_wgpu! {
    use focal::attention::{FusedAttentionBackend, padding_mask_from_lengths};
    use focal::backend::{NdArray, assert_data_close};
    use focal::burn::tensor::{Int, Tensor};
    use focal::heads::Seq2SeqConfig;
    use focal::train::{ModelArtifact, load_checkpoint, save_checkpoint};
    use std::path::Path;

    fn artifact() -> ModelArtifact {
        let vocabulary = focal::heads::Vocabulary::new((0..10).map(|d| d.to_string())).unwrap();
        let model = Seq2SeqConfig::new(vocabulary.len(), vocabulary.len())
            .with_d_model(32)
            .with_n_heads(4)
            .with_d_ff(64)
            .with_max_len(16);
        ModelArtifact::new("reverse", model, vocabulary, 12, 13)
    }

    /// Logits and greedy outputs of a batch with padding, on backend `B`.
    fn run<B: FusedAttentionBackend>(
        dir: &Path,
    ) -> (focal::burn::tensor::TensorData, Vec<Vec<usize>>) {
        let device = Default::default();
        let (artifact, model) = load_checkpoint::<B>(dir, &device).unwrap();
        let src = Tensor::<B, 2, Int>::from_ints([[4, 5, 6, 7, 8], [9, 10, 3, 0, 0]], &device);
        let valid = padding_mask_from_lengths::<B>(&[5, 3], 5, &device);
        let tgt = Tensor::<B, 2, Int>::from_ints([[1, 8, 7, 6], [1, 3, 10, 9]], &device);
        let logits = model.forward(src.clone(), valid.clone(), tgt);
        let decoded = model.greedy_decode(src, valid, artifact.vocabulary.specials(), 6);
        (logits.into_data(), decoded)
    }

    #[test]
    fn seq2seq_outputs_agree_between_ndarray_and_wgpu() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = artifact();
        focal::backend::seed::<NdArray>(&Default::default(), 7);
        let model = artifact.model.init::<NdArray>(&Default::default());
        save_checkpoint(dir.path(), &artifact, &model).unwrap();

        let (cpu_logits, cpu_decoded) = run::<NdArray>(dir.path());
        let (gpu_logits, gpu_decoded) = run::<focal::backend::Wgpu>(dir.path());
        assert_eq!(cpu_logits.shape.to_vec(), vec![2, 4, 13]);
        assert_eq!(cpu_decoded.len(), 2);
        assert_data_close(&gpu_logits, &cpu_logits, 1e-4);
        assert_eq!(gpu_decoded, cpu_decoded);
    }
}
