//! The CPU kernels: f32 (and int8) loops over slices that the model, the retriever and the
//! trainer run instead of chains of composed candle ops, each where it applies (contiguous f32
//! tensors on the CPU; every caller keeps candle's ops for other dtypes and devices, so results
//! agree with those to rounding). This module imports nothing from the modules that use it.
//!
//! | module | what |
//! |---|---|
//! | [`vector_math`] | element-wise maths (e^x, erf, GELU, softmax), AVX2 and plain builds bit-identical |
//! | [`matrix`] | strided f32 products through `gemm`, for the fused training ops |
//! | [`skinny`] | decode products: a few rows against a large weight matrix |
//! | [`fused`] | training-forward ops with their own backward (linear, RMS norm, rope, SwiGLU, log-softmax + entropy) |
//! | [`causal_attention`] | the training forward's causal self-attention as one op with its backward |
//! | [`decode_attention`] | one new token per sequence over its KV cache, the whole batch in one pass |
//! | [`inplace`] | in-place gradient accumulation and the AdamW step |
//! | [`bert_ops`] | in-place steps of the BERT encoder (bias + GELU, bias + residual, masked softmax) |
//! | [`sign_codes`] | one-bit codes and Hamming distances (the retrieval scan's first stage) |
//! | [`int8`] | int8 quantisation and dot products, the f32 dot product of the scan |

pub mod bert_ops;
pub mod causal_attention;
pub mod decode_attention;
pub mod fused;
pub mod inplace;
pub mod int8;
pub(crate) mod matrix;
pub mod sign_codes;
pub mod skinny;
pub mod vector_math;
