//! GGUF import: files written from tiny models (with llama.cpp's naming, Q/K permutation and
//! tokenizer metadata) come back as the same model, for every supported tensor type.

use crate::common;

use common::gguf::write_gguf;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use research_host::model::gguf::{import_gguf, permute};
use research_host::model::tiny::{TinySize, init_tiny};
use research_host::model::{Architecture, KvCache, LoadedModel, load_model};
use std::path::{Path, PathBuf};

/// 256 wide so that every matrix row fits the 256-element blocks of the K-quants.
const WIDE: TinySize = TinySize {
    vocab: 400,
    hidden: 256,
    intermediate: 512,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    padded_vocab: None,
    rope_theta: None,
};

fn source(arch: Architecture, dir: &Path) -> LoadedModel {
    let path = dir.join(format!("source-{}", arch.model_type()));
    init_tiny(arch, WIDE, 21, None, &path).unwrap();
    load_model(&path, DType::F32, &Device::Cpu).unwrap()
}

fn last_logits(model: &LoadedModel, text: &str) -> Tensor {
    let tokens = model.tokenizer.encode(text).unwrap();
    let mut cache = KvCache::default();
    let logits = model.policy.forward_step(&tokens, &mut cache).unwrap();
    logits.get(tokens.len() - 1).unwrap()
}

fn import(arch: Architecture, dtype: GgmlDType, dir: &Path, original: &LoadedModel) -> LoadedModel {
    let file = dir.join(format!("{}-{dtype:?}.gguf", arch.model_type()));
    write_gguf(original, arch, dtype, &file);
    let out: PathBuf = dir.join(format!("imported-{}-{dtype:?}", arch.model_type()));
    let summary = import_gguf(&file, &out).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(summary.architecture, arch);
    load_model(&out, DType::F32, &Device::Cpu).unwrap()
}

const TEXT: &str = "<think> Who wrote Hamlet? 1969 </think> <answer> Shakespeare </answer>";

#[test]
fn f32_gguf_round_trips_exactly_for_llama_and_qwen2() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let original = source(arch, dir.path());
        let imported = import(arch, GgmlDType::F32, dir.path(), &original);
        assert_eq!(
            imported.policy.config().tie_word_embeddings,
            arch == Architecture::Qwen2
        );
        let (a, b) = (
            original.policy.named_tensors(),
            imported.policy.named_tensors(),
        );
        assert_eq!(a.len(), b.len());
        for (name, tensor) in &a {
            let diff = common::max_abs_diff(tensor, &b[name]);
            assert_eq!(diff, 0.0, "{arch:?} {name}");
        }
        // The rebuilt tokenizer splits text exactly like the original and keeps the template.
        for text in [
            TEXT,
            "  spaces\tand\nnewlines  ",
            "Ünïcödé 東京 \u{1f600}",
            "<|im_start|>user\nhi<|im_end|>",
        ] {
            assert_eq!(
                imported.tokenizer.encode(text).unwrap(),
                original.tokenizer.encode(text).unwrap(),
                "{text:?}"
            );
        }
        assert_eq!(
            imported.tokenizer.eos_ids(),
            &[original
                .tokenizer
                .inner()
                .token_to_id("<|im_end|>")
                .unwrap()]
        );
        assert!(imported.tokenizer.has_chat_template());
        let diff =
            common::max_abs_diff(&last_logits(&original, TEXT), &last_logits(&imported, TEXT));
        assert!(diff < 1e-5, "{arch:?}: logits differ by {diff}");
    }
}

#[test]
fn quantized_gguf_imports_equal_the_dequantised_weights() {
    let dir = tempfile::tempdir().unwrap();
    let original = source(Architecture::Llama, dir.path());
    let reference = original.policy.named_tensors();
    for dtype in [
        GgmlDType::F16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        let imported = import(Architecture::Llama, dtype, dir.path(), &original);
        let weights = imported.policy.named_tensors();
        let name = "model.layers.1.self_attn.q_proj.weight";
        // What llama.cpp's reader would see: quantise the permuted matrix, dequantise, un-permute.
        let config = original.policy.config();
        let permuted = permute(
            &reference[name],
            config.num_attention_heads,
            config.head_dim(),
        )
        .unwrap();
        let expected = QTensor::quantize(&permuted, dtype)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let expected = research_host::model::gguf::unpermute(
            &expected,
            config.num_attention_heads,
            config.head_dim(),
        )
        .unwrap();
        let diff = common::max_abs_diff(&weights[name], &expected);
        assert_eq!(
            diff, 0.0,
            "{dtype:?}: import is not the file's exact dequantisation"
        );
        // And the model still computes nearly the same thing.
        let (a, b) = (last_logits(&original, TEXT), last_logits(&imported, TEXT));
        let scale = a.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let diff = common::max_abs_diff(&a, &b);
        let tolerance = match dtype {
            GgmlDType::F16 | GgmlDType::Q8_0 => 0.05,
            _ => 0.35,
        };
        assert!(
            diff <= tolerance * scale.max(1e-3),
            "{dtype:?}: logits moved by {diff} (scale {scale})"
        );
    }
}

#[test]
fn bad_gguf_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf").unwrap();
    let error = format!(
        "{:#}",
        import_gguf(&junk, &dir.path().join("out")).unwrap_err()
    );
    assert!(
        error.contains("junk.gguf") && error.contains("not a readable GGUF"),
        "{error}"
    );

    let odd = dir.path().join("odd.gguf");
    let arch = Value::String("mamba".into());
    gguf_file::write(
        &mut std::fs::File::create(&odd).unwrap(),
        &[("general.architecture", &arch)],
        &[],
    )
    .unwrap();
    let error = format!(
        "{:#}",
        import_gguf(&odd, &dir.path().join("out")).unwrap_err()
    );
    assert!(
        error.contains("odd.gguf") && error.contains("mamba") && error.contains("not supported"),
        "{error}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "a failed import leaves no folder"
    );
}
