//! Where rollout tokens come from. The rollout loop drives a [`Generator`]: the in-process
//! engine ([`Engine`], one token per sequence per `advance`) or a batch of requests to an
//! inference server ([`ServerBatch`], one request per running sequence per `advance`, each
//! until the engine stops it). Both apply the same stop rules to the ids they record, keep
//! sampled and appended tokens apart, and seed every sample of a prompt from (seed, sample).

use super::episodes::RolloutModel;
use crate::inference_server::{
    Backend, Completion, CompletionRequest, InferenceServer, RetryPolicy,
};
use crate::model::stop_rules::{Progress, StopCheck};
use crate::model::{Engine, SamplingParams, SeqState, StopRules};
use anyhow::{Context, Result, bail};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Where a run samples: the host's own engine or an inference server.
#[derive(Debug, Default)]
pub enum Generation {
    #[default]
    Local,
    Server(InferenceServer),
}

impl Generation {
    /// Local, or a client of the server at `url` once it has answered its health call (retried
    /// within the policy's window, so a server still loading its model is waited for).
    pub fn connect(
        backend: Backend,
        url: Option<&str>,
        retry: RetryPolicy,
        concurrency: usize,
    ) -> Result<Generation> {
        if backend == Backend::Local {
            return Ok(Generation::Local);
        }
        let url = url.with_context(|| format!("the {backend} backend needs the server's URL"))?;
        let server = InferenceServer::new(backend, url, retry, concurrency)?;
        server
            .check()
            .with_context(|| format!("the {backend} server at {url} is not answering"))?;
        Ok(Generation::Server(server))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Generation::Local => Backend::Local,
            Generation::Server(server) => server.backend(),
        }
    }

    /// A batch that samples from the model's weights (local) or from the server.
    pub fn batch<'a>(
        &'a self,
        model: &RolloutModel<'a>,
        sampling: SamplingParams,
        rules: StopRules,
        response_budget: usize,
    ) -> Result<Box<dyn Generator + 'a>> {
        Ok(match self {
            Generation::Local => {
                let policy = model.policy.context(
                    "the local backend samples from the model's weights, which were not loaded",
                )?;
                let mut engine = Engine::new(policy, model.tokenizer, sampling, rules);
                engine.set_response_budget(response_budget);
                Box::new(engine)
            }
            Generation::Server(server) => {
                let mut check =
                    StopCheck::new(rules, model.tokenizer, model.config.max_position_embeddings);
                check.set_response_budget(response_budget);
                Box::new(ServerBatch::new(
                    server,
                    check,
                    model.config.vocab_size,
                    sampling,
                ))
            }
        })
    }
}

/// One sequence of a batch as the rollout loop reads it.
#[derive(Debug, Clone, Copy)]
pub struct SequenceView<'a> {
    /// Prompt, sampled and appended tokens, in order.
    pub tokens: &'a [u32],
    pub prompt_len: usize,
    /// For every token after the prompt: sampled (true) or appended (false).
    pub sampled: &'a [bool],
    /// For every token after the prompt: its log-probability as the sampler reported it (NaN
    /// for appended tokens, and where a server reported none).
    pub logprobs: &'a [f32],
    pub state: &'a SeqState,
}

impl<'a> SequenceView<'a> {
    /// The tokens after the prompt.
    pub fn response(&self) -> &'a [u32] {
        &self.tokens[self.prompt_len..]
    }
}

/// A batch of sequences sampled together.
pub trait Generator {
    /// Adds `copies` samples of `prompt`; sample i is seeded by (`seed`, i). Returns their
    /// indices.
    fn add_prompt(&mut self, prompt: &[u32], copies: usize, seed: u64) -> Result<Vec<usize>>;
    /// Moves every running sequence on; afterwards some may have stopped or finished.
    fn advance(&mut self) -> Result<()>;
    /// Sequences added so far.
    fn count(&self) -> usize;
    /// Sequence `index` (panics when out of range, like slice indexing).
    fn sequence(&self, index: usize) -> SequenceView<'_>;
    fn has_running(&self) -> bool;
    /// Appends `tokens` (an observation, possibly none) to a stopped sequence and resumes it.
    fn append(&mut self, index: usize, tokens: &[u32]) -> Result<()>;
    /// Ends a stopped sequence for good.
    fn finish(&mut self, index: usize) -> Result<()>;
}

impl Generator for Engine<'_> {
    fn add_prompt(&mut self, prompt: &[u32], copies: usize, seed: u64) -> Result<Vec<usize>> {
        Engine::add_prompt(self, prompt, copies, seed)
    }

    fn advance(&mut self) -> Result<()> {
        self.step()
    }

    fn count(&self) -> usize {
        self.sequences().len()
    }

    fn sequence(&self, index: usize) -> SequenceView<'_> {
        let s = &self.sequences()[index];
        SequenceView {
            tokens: &s.tokens,
            prompt_len: s.prompt_len,
            sampled: &s.sampled,
            logprobs: &s.logprobs,
            state: &s.state,
        }
    }

    fn has_running(&self) -> bool {
        Engine::has_running(self)
    }

    fn append(&mut self, index: usize, tokens: &[u32]) -> Result<()> {
        Engine::append(self, index, tokens)
    }

    fn finish(&mut self, index: usize) -> Result<()> {
        Engine::finish(self, index)
    }
}

/// One sequence sampled by a server.
#[derive(Debug, Clone)]
struct ServerSequence {
    tokens: Vec<u32>,
    prompt_len: usize,
    sampled: Vec<bool>,
    logprobs: Vec<f32>,
    state: SeqState,
    generated: usize,
    turn_start: usize,
    /// The sample's seed; request r of the sample is seeded by (seed, r).
    seed: u64,
    requests: u64,
}

impl ServerSequence {
    fn progress(&self) -> Progress<'_> {
        Progress {
            tokens: &self.tokens,
            prompt_len: self.prompt_len,
            turn_start: self.turn_start,
            generated: self.generated,
        }
    }
}

/// Sequences sampled by an inference server: every `advance` sends one request per running
/// sequence (up to the server's concurrency at a time) and records the returned ids through
/// the stop rules; ids after the token that stops a sequence are dropped, and a sequence the
/// server ended early (its own stop matching, say) but the rules did not goes on in the next
/// round.
pub struct ServerBatch<'a> {
    server: &'a InferenceServer,
    check: StopCheck<'a>,
    /// Ids at or above it are refused.
    vocab_size: usize,
    sampling: SamplingParams,
    sequences: Vec<ServerSequence>,
}

impl<'a> ServerBatch<'a> {
    pub fn new(
        server: &'a InferenceServer,
        check: StopCheck<'a>,
        vocab_size: usize,
        sampling: SamplingParams,
    ) -> ServerBatch<'a> {
        ServerBatch {
            server,
            check,
            vocab_size,
            sampling,
            sequences: Vec::new(),
        }
    }
}

/// Sequence `index`, which must be stopped.
fn stopped(sequences: &mut [ServerSequence], index: usize) -> Result<&mut ServerSequence> {
    let count = sequences.len();
    let sequence = sequences
        .get_mut(index)
        .with_context(|| format!("no sequence {index} (the batch has {count})"))?;
    if !matches!(sequence.state, SeqState::Stopped(_)) {
        bail!(
            "sequence {index} is {:?}; only a stopped sequence can take appended tokens",
            sequence.state
        );
    }
    Ok(sequence)
}

impl Generator for ServerBatch<'_> {
    fn add_prompt(&mut self, prompt: &[u32], copies: usize, seed: u64) -> Result<Vec<usize>> {
        if prompt.is_empty() {
            bail!("the prompt has no tokens");
        }
        let mut indices = Vec::with_capacity(copies);
        for copy in 0..copies {
            indices.push(self.sequences.len());
            self.sequences.push(ServerSequence {
                tokens: prompt.to_vec(),
                prompt_len: prompt.len(),
                sampled: Vec::new(),
                logprobs: Vec::new(),
                state: SeqState::Running,
                generated: 0,
                turn_start: prompt.len(),
                seed: crate::model::generate::sample_seed(seed, copy as u64),
                requests: 0,
            });
        }
        Ok(indices)
    }

    fn advance(&mut self) -> Result<()> {
        let running: Vec<usize> = (0..self.sequences.len())
            .filter(|&i| self.sequences[i].state == SeqState::Running)
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let stop = self.check.rules().stop_sequences.clone();
        let requests: Vec<CompletionRequest> = running
            .iter()
            .map(|&i| {
                let s = &self.sequences[i];
                CompletionRequest {
                    prompt: &s.tokens,
                    max_new_tokens: self.check.room(&s.progress()),
                    stop: &stop,
                    sampling: self.sampling,
                    seed: crate::model::generate::sample_seed(s.seed, s.requests),
                }
            })
            .collect();
        let answers = send_all(self.server, &requests).with_context(|| {
            format!(
                "the {} server at {} failed to sample",
                self.server.backend(),
                self.server.url()
            )
        })?;
        drop(requests);
        for (&index, completion) in running.iter().zip(answers) {
            if let Some(bad) = completion
                .ids
                .iter()
                .find(|&&id| id as usize >= self.vocab_size)
            {
                bail!(
                    "the {} server at {} returned token id {bad}, outside the model's vocabulary \
                     of {}: does it serve the same model as the host?",
                    self.server.backend(),
                    self.server.url(),
                    self.vocab_size
                );
            }
            let sequence = &mut self.sequences[index];
            sequence.requests += 1;
            if completion.ids.is_empty() {
                bail!(
                    "the {} server at {} returned no token for a sequence with room for {} more",
                    self.server.backend(),
                    self.server.url(),
                    self.check.room(&sequence.progress())
                );
            }
            for (&id, &logprob) in completion.ids.iter().zip(&completion.logprobs) {
                sequence.tokens.push(id);
                sequence.sampled.push(true);
                sequence.logprobs.push(logprob);
                sequence.generated += 1;
                if let Some(state) = self.check.after_sampled(&sequence.progress())? {
                    sequence.state = state;
                    break;
                }
            }
        }
        Ok(())
    }

    fn count(&self) -> usize {
        self.sequences.len()
    }

    fn sequence(&self, index: usize) -> SequenceView<'_> {
        let s = &self.sequences[index];
        SequenceView {
            tokens: &s.tokens,
            prompt_len: s.prompt_len,
            sampled: &s.sampled,
            logprobs: &s.logprobs,
            state: &s.state,
        }
    }

    fn has_running(&self) -> bool {
        self.sequences.iter().any(|s| s.state == SeqState::Running)
    }

    fn append(&mut self, index: usize, tokens: &[u32]) -> Result<()> {
        let sequence = stopped(&mut self.sequences, index)?;
        sequence.tokens.extend_from_slice(tokens);
        sequence
            .sampled
            .extend(std::iter::repeat_n(false, tokens.len()));
        sequence
            .logprobs
            .extend(std::iter::repeat_n(f32::NAN, tokens.len()));
        sequence.turn_start = sequence.tokens.len();
        sequence.state = if self
            .check
            .fills_budget(sequence.tokens.len() - sequence.prompt_len)
            || self.check.room(&sequence.progress()) == 0
        {
            // Nothing may follow: the appended tokens end the sequence.
            SeqState::Finished(crate::model::Stop::Length)
        } else {
            SeqState::Running
        };
        Ok(())
    }

    fn finish(&mut self, index: usize) -> Result<()> {
        let count = self.sequences.len();
        let sequence = self
            .sequences
            .get_mut(index)
            .with_context(|| format!("no sequence {index} (the batch has {count})"))?;
        if let SeqState::Stopped(stop) = &sequence.state {
            sequence.state = SeqState::Finished(stop.clone());
        }
        Ok(())
    }
}

/// Sends `requests` with at most the server's concurrency in flight; the answers come back in
/// request order. After a request fails for good (its retry window spent) no further request
/// is sent, so a dead server stops the batch within about one retry window, and that first
/// error is returned.
fn send_all(server: &InferenceServer, requests: &[CompletionRequest]) -> Result<Vec<Completion>> {
    let workers = server.concurrency().min(requests.len()).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let answers: Mutex<Vec<Option<Result<Completion>>>> =
        Mutex::new((0..requests.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let answer = server.complete(request);
                    if answer.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    answers.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(answer);
                }
            });
        }
    });
    let mut answers = answers.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(error) = answers.iter_mut().find_map(|a| match a {
        Some(Err(_)) => a.take().and_then(Result::err),
        _ => None,
    }) {
        return Err(error);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| bail!("a request was not sent")))
        .collect()
}
