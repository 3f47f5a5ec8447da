//! Clients of the inference servers that can sample rollouts instead of the in-process engine:
//! SGLang's native `/generate`, vLLM's OpenAI-compatible `/v1/completions` and llama.cpp's
//! `/completion`. Every call is token-in, token-out: the prompt goes as token ids and the
//! sampled token ids come back with their log-probabilities, so no text is re-encoded. SGLang
//! and vLLM also load new weights from a Hugging Face-layout folder the host writes; llama.cpp
//! cannot, so it serves evaluation only.

pub mod http;
pub mod llama_cpp;
pub mod sglang;
pub mod vllm;

use crate::model::SamplingParams;
use anyhow::{Result, bail};
use http::JsonClient;
pub use http::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::OnceLock;

/// Where rollout tokens are sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The host's own engine, in process.
    #[default]
    Local,
    /// An SGLang server (native `/generate`; weights through `/update_weights_from_disk`).
    Sglang,
    /// A vLLM server (`/v1/completions`; weights through `/collective_rpc` `reload_weights`,
    /// which needs `VLLM_SERVER_DEV_MODE=1`).
    Vllm,
    /// A llama.cpp server (`/completion`); it cannot load new weights: evaluation only.
    LlamaCpp,
}

impl Backend {
    /// The name used in configs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Sglang => "sglang",
            Backend::Vllm => "vllm",
            Backend::LlamaCpp => "llama-cpp",
        }
    }

    /// Whether the engine can take the trainer's new weights.
    pub fn loads_weights(self) -> bool {
        matches!(self, Backend::Sglang | Backend::Vllm)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One generation request: continue `prompt` by at most `max_new_tokens` sampled tokens.
#[derive(Debug, Clone, Copy)]
pub struct CompletionRequest<'a> {
    pub prompt: &'a [u32],
    pub max_new_tokens: usize,
    /// The parser plugin's stop sequences (the host checks them again on the ids it gets).
    pub stop: &'a [String],
    pub sampling: SamplingParams,
    /// The request's seed (unused when greedy).
    pub seed: u64,
}

/// The sampling fields that SGLang's `sampling_params` and vLLM's completions request share
/// (same names, same meaning), flattened into both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedSampling {
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// -1: off.
    pub top_k: i64,
    pub stop: Vec<String>,
    /// Neutral values, sent so that no server default (both read the model's
    /// generation_config.json) reshapes the policy's distribution.
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

impl CompletionRequest<'_> {
    /// Greedy: temperature 0 or asked for.
    pub fn greedy(&self) -> bool {
        self.sampling.greedy || self.sampling.temperature <= 0.0
    }

    /// The shared sampling fields of SGLang's and vLLM's requests.
    pub fn shared_sampling(&self) -> SharedSampling {
        let s = self.sampling;
        SharedSampling {
            temperature: if self.greedy() { 0.0 } else { s.temperature },
            top_p: s.top_p,
            top_k: if s.top_k == 0 { -1 } else { s.top_k as i64 },
            stop: self.stop.to_vec(),
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

/// What the engine sampled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub ids: Vec<u32>,
    /// The log-probability of each id as the engine reported it (vLLM and llama.cpp: under the
    /// model at temperature 1; SGLang: after its temperature unless it runs with
    /// `SGLANG_RETURN_ORIGINAL_LOGPROB=1`); NaN where it reported none (llama.cpp leaves out
    /// the stop sequence's tokens). Kept beside each sequence, not used by the loss.
    pub logprobs: Vec<f32>,
}

/// An inference server of one kind at one URL.
#[derive(Debug)]
pub struct InferenceServer {
    backend: Backend,
    client: JsonClient,
    /// Requests in flight at most.
    concurrency: usize,
    /// vLLM's served model name and folder, asked once.
    vllm_model: OnceLock<vllm::ServedModel>,
}

impl InferenceServer {
    /// A client of `backend` at `url` that keeps at most `concurrency` requests in flight (no
    /// request is made yet).
    pub fn new(
        backend: Backend,
        url: &str,
        retry: RetryPolicy,
        concurrency: usize,
    ) -> Result<InferenceServer> {
        if backend == Backend::Local {
            bail!("the local backend has no server");
        }
        if concurrency == 0 {
            bail!("the inference server's concurrency must be at least 1");
        }
        Ok(InferenceServer {
            backend,
            client: JsonClient::new(url, retry, concurrency)?,
            concurrency,
            vllm_model: OnceLock::new(),
        })
    }

    /// Requests in flight at most.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &str {
        self.client.base()
    }

    /// Waits (within the retry window) until the server answers its health or model-list call.
    pub fn check(&self) -> Result<()> {
        match self.backend {
            Backend::Sglang => sglang::check(&self.client),
            Backend::Vllm => self.served_model().map(|_| ()),
            Backend::LlamaCpp => llama_cpp::check(&self.client),
            Backend::Local => Ok(()),
        }
    }

    /// Samples one continuation.
    pub fn complete(&self, request: &CompletionRequest) -> Result<Completion> {
        match self.backend {
            Backend::Sglang => sglang::complete(&self.client, request),
            Backend::Vllm => vllm::complete(&self.client, &self.served_model()?.id, request),
            Backend::LlamaCpp => llama_cpp::complete(&self.client, request),
            Backend::Local => bail!("the local backend has no server"),
        }
    }

    /// Makes the engine load the weights in `folder` (a Hugging Face-layout checkpoint) and
    /// drop every cached prefix computed with the old ones.
    pub fn load_weights(&self, folder: &Path) -> Result<()> {
        let folder = std::path::absolute(folder)?;
        match self.backend {
            Backend::Sglang => sglang::load_weights(&self.client, &folder),
            Backend::Vllm => vllm::load_weights(&self.client, self.served_model()?, &folder),
            Backend::LlamaCpp | Backend::Local => bail!(
                "the {} backend cannot load new weights: use it for evaluation (`host eval \
                 --backend {0}`), and sglang or vllm for training",
                self.backend
            ),
        }
    }

    fn served_model(&self) -> Result<&vllm::ServedModel> {
        if let Some(model) = self.vllm_model.get() {
            return Ok(model);
        }
        let model = vllm::served_model(&self.client)?;
        Ok(self.vllm_model.get_or_init(|| model))
    }
}

/// Ids and log-probs of the same length: missing log-probs become NaN, extra ones are dropped.
fn aligned(ids: Vec<u32>, mut logprobs: Vec<f32>) -> Completion {
    logprobs.resize(ids.len(), f32::NAN);
    Completion { ids, logprobs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sampling: SamplingParams) -> CompletionRequest<'static> {
        static STOP: [String; 0] = [];
        CompletionRequest {
            prompt: &[5, 6, 7],
            max_new_tokens: 9,
            stop: &STOP,
            sampling,
            seed: 42,
        }
    }

    #[test]
    fn greedy_requests_carry_temperature_zero_and_sampled_ones_their_seed() {
        let greedy = request(SamplingParams {
            greedy: true,
            temperature: 0.7,
            ..SamplingParams::default()
        });
        let sampled = request(SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 0,
            greedy: false,
        });
        let g = sglang::generate_request(&greedy);
        assert_eq!(g.sampling_params.shared.temperature, 0.0);
        assert_eq!(g.sampling_params.sampling_seed, None);
        let s = sglang::generate_request(&sampled);
        let shared = &s.sampling_params.shared;
        assert_eq!((shared.temperature, shared.top_k), (0.7, -1));
        assert_eq!(shared.repetition_penalty, 1.0);
        assert_eq!(s.sampling_params.sampling_seed, Some(42));
        assert_eq!(
            (s.input_ids, s.sampling_params.max_new_tokens),
            (vec![5, 6, 7], 9)
        );

        let v = vllm::completions_request("m", &sampled);
        let shared = &v.shared;
        assert_eq!(
            (shared.temperature, shared.top_p, shared.top_k),
            (0.7, 0.9, -1)
        );
        assert_eq!(v.seed, Some(42));
        assert_eq!(
            vllm::completions_request("m", &greedy).shared.temperature,
            0.0
        );

        let l = llama_cpp::completion_request(&sampled);
        assert_eq!(
            (l.temperature, l.top_k, l.min_p, l.n_predict),
            (0.7, 0, 0.0, 9)
        );
        assert_eq!(llama_cpp::completion_request(&greedy).temperature, 0.0);
    }

    #[test]
    fn log_probs_are_aligned_to_the_ids() {
        let c = aligned(vec![1, 2, 3], vec![-0.5]);
        assert_eq!(c.ids, vec![1, 2, 3]);
        assert_eq!(c.logprobs[0], -0.5);
        assert!(c.logprobs[1].is_nan() && c.logprobs[2].is_nan());
        assert_eq!(aligned(vec![1], vec![-1.0, -2.0]).logprobs, vec![-1.0]);
    }

    #[test]
    fn the_local_backend_has_no_server() {
        assert!(
            InferenceServer::new(Backend::Local, "http://x", RetryPolicy::default(), 1).is_err()
        );
        assert!(
            InferenceServer::new(Backend::Sglang, "http://x", RetryPolicy::default(), 0).is_err()
        );
        assert!(Backend::Sglang.loads_weights() && !Backend::LlamaCpp.loads_weights());
    }

    #[test]
    fn seeds_fit_each_server() {
        let sampled = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        let mut r = request(sampled);
        for seed in [u64::MAX, u64::MAX - 1, 1 << 63, u64::from(u32::MAX)] {
            r.seed = seed;
            let v = vllm::completions_request("m", &r).seed.unwrap();
            assert!(v <= i64::MAX as u64);
            let s = sglang::generate_request(&r)
                .sampling_params
                .sampling_seed
                .unwrap();
            assert!(s <= i32::MAX as u64);
            assert_ne!(llama_cpp::completion_request(&r).seed, u32::MAX);
        }
    }
}
