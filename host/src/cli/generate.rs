//! `host generate`: continue a prompt with a model folder.

use crate::model::{DeviceKind, Engine, SamplingParams, SeqState, Stop, StopRules, load_model};
use crate::plugins::Message;
use anyhow::{Result, bail};
use candle_core::DType;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  host generate --model runs/tiny --prompt 'The capital of France is' --greedy
  host generate --model runs/tiny --prompt 'Who wrote Hamlet?' --chat --temperature 0.7 --top-p 0.9 --seed 3 --json")]
pub struct GenerateArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json, …).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Always take the most likely token.
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep tokens up to this cumulative probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the sampler (same seed, same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the continuation contains this text (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Print JSON with token ids and per-token log-probs.
    #[arg(long)]
    pub json: bool,
    /// Where the model runs (a `cuda` build is needed for cuda).
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
}

/// Runs `host generate`.
pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let device = args.device.open()?;
    let valid = args.temperature.is_finite()
        && args.temperature >= 0.0
        && args.top_p > 0.0
        && args.top_p <= 1.0;
    if !valid {
        bail!("--temperature must be ≥ 0 and --top-p in (0, 1]");
    }
    let model = load_model(&args.model, DType::F32, &device)?;
    let prompt_text = if args.chat {
        if !model.tokenizer.has_chat_template() {
            bail!(
                "{} has no chat template (tokenizer_config.json); drop --chat",
                args.model.display()
            );
        }
        let message = Message {
            role: "user".into(),
            content: args.prompt.clone(),
        };
        model.tokenizer.apply_chat_template(&[message], true)?
    } else {
        args.prompt.clone()
    };
    let prompt = model.tokenizer.encode(&prompt_text)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        greedy: args.greedy,
    };
    let rules = StopRules {
        stop_sequences: args.stop.clone(),
        eos_ids: model.tokenizer.eos_ids().to_vec(),
        max_new_tokens: args.max_new_tokens,
    };
    let mut engine = Engine::new(&model.policy, &model.tokenizer, params, rules);
    engine.add_prompt(&prompt, 1, args.seed)?;
    engine.run()?;
    let sequence = &engine.sequences()[0];
    let text = model.tokenizer.decode(sequence.response())?;
    let finish = match &sequence.state {
        SeqState::Finished(Stop::Eos) => "eos".to_string(),
        SeqState::Finished(Stop::Length) => "length".to_string(),
        SeqState::Stopped(Stop::Sequence(s)) | SeqState::Finished(Stop::Sequence(s)) => {
            format!("stop:{s}")
        }
        other => format!("{other:?}"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "prompt": prompt_text,
                "prompt_ids": prompt,
                "ids": sequence.response(),
                "logprobs": sequence.logprobs,
                "text": text,
                "finish": finish,
            })
        );
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}
