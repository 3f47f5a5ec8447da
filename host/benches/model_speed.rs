//! Policy model speed on this machine: decode tokens/s (batch 1, and batch 5 sharing one
//! prompt), training tokens/s (forward + backward + AdamW on 5 × 512 tokens) with peak memory,
//! and decode as a fraction of the memory-bandwidth bound.
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench model_speed -- --model DIR [--new-tokens 64] [--json]
//!         [--rounds 3] [--decode-only | --train-only | --kernel | --profile-batch N]
//!
//! Batch 1 and batch 5 are timed in `--rounds` alternating rounds (batch 1, then batch 5) and
//! each reported as its median: the machine's memory bandwidth drifts by ±20 % between minutes,
//! and two single runs a minute apart could put the ratio of the two anywhere in that spread.
//!
//! `--decode-only` skips training, `--train-only` decoding; `--kernel` times the decode kernel against candle's matmul on
//! the output projection for 1–24 rows; `--profile-batch N` runs one decode batch (for `perf`).
//!
//! `host/benches/model_speed.sh` runs it beside PyTorch + transformers on the same weights.

use candle_core::{DType, Device, Tensor, Var};
use research_host::grpo::optim::{AdamW, AdamWSettings};
use research_host::kernels::inplace::accumulate;
use research_host::model::{Engine, PaddedBatch, SamplingParams, StopRules, load_model};
use research_host::plugins::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// The host binary's allocator and settings (`host/src/main.rs`), so that the numbers are the
/// host's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> anyhow::Result<()> {
    research_host::memory::keep_freed_memory();
    research_host::threads::park_idle_candle_workers();
    let model_dir =
        PathBuf::from(arg("--model").ok_or_else(|| anyhow::anyhow!("--model DIR is required"))?);
    let new_tokens: usize = arg("--new-tokens")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(64);
    let json = std::env::args().any(|a| a == "--json");
    let rounds: usize = arg("--rounds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3)
        .max(1);
    let model = load_model(&model_dir, DType::F32, &Device::Cpu)?;
    let messages = [Message {
        role: "user".into(),
        content: "What is the capital of France? Think step by step.".into(),
    }];
    let prompt_text = if model.tokenizer.has_chat_template() {
        model.tokenizer.apply_chat_template(&messages, true)?
    } else {
        messages[0].content.clone()
    };
    let prompt = model.tokenizer.encode(&prompt_text)?;
    let rules = StopRules {
        stop_sequences: Vec::new(),
        eos_ids: Vec::new(),
        max_new_tokens: new_tokens,
    };

    // Warm-up, then batch 1 (greedy) and batch 5 (sampled, one shared prefill).
    let decode = |copies: usize| -> anyhow::Result<(f64, f64)> {
        let params = if copies == 1 {
            SamplingParams {
                greedy: true,
                ..SamplingParams::default()
            }
        } else {
            SamplingParams::default()
        };
        let mut engine = Engine::new(&model.policy, &model.tokenizer, params, rules.clone());
        let started = Instant::now();
        engine.add_prompt(&prompt, copies, 1)?;
        let prefill = started.elapsed().as_secs_f64();
        let started = Instant::now();
        engine.run()?;
        let seconds = started.elapsed().as_secs_f64();
        let produced: usize = engine.sequences().iter().map(|s| s.response().len()).sum();
        Ok((produced as f64 / seconds, prefill))
    };
    if let Some(copies) = arg("--profile-batch") {
        // One decode batch only, to profile it (e.g. under `perf record`).
        let (rate, _) = decode(copies.parse()?)?;
        println!("decode batch {copies}: {rate:.1} tok/s");
        return Ok(());
    }
    let train_only = std::env::args().any(|a| a == "--train-only");
    let kernel_only = std::env::args().any(|a| a == "--kernel");
    let (mut rounds1, mut rounds5, mut prefills) = (Vec::new(), Vec::new(), Vec::new());
    // `--kernel` times the kernel alone: no decode rounds before it.
    if !train_only && !kernel_only {
        decode(1)?;
        for _ in 0..rounds {
            let (rate, prefill) = decode(1)?;
            rounds1.push(rate);
            prefills.push(prefill);
            rounds5.push(decode(5)?.0);
        }
    }
    let (batch1, prefill, batch5) = (median(&rounds1), median(&prefills), median(&rounds5));
    if kernel_only {
        // The decode kernel alone on the output projection (the largest weight matrix).
        let head = model.policy.named_tensors()["model.embed_tokens.weight"].clone();
        let (n, k) = head.dims2()?;
        let weights = head.flatten_all()?.to_vec1::<f32>()?;
        let best_of = |work: &dyn Fn()| {
            let mut best = f64::MAX;
            for _ in 0..10 {
                let started = Instant::now();
                work();
                best = best.min(started.elapsed().as_secs_f64());
            }
            best
        };
        for rows in [1usize, 5, 8, 12, 16, 24] {
            let x = vec![0.01f32; rows * k];
            let ours = best_of(&|| {
                std::hint::black_box(research_host::kernels::skinny::matmul_transposed(
                    &x, rows, &weights, n, k,
                ));
            });
            let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu)?;
            let wt = head.t()?;
            let candle = best_of(&|| {
                std::hint::black_box(xt.matmul(&wt).map(|_| ()).ok());
            });
            println!(
                "{rows:2} row(s) x [{n}, {k}]: decode kernel {:.2} ms ({:.1} GB/s of weights), candle matmul {:.2} ms",
                ours * 1e3,
                (n * k * 4) as f64 / ours / 1e9,
                candle * 1e3
            );
        }
        println!("copy bandwidth {:.1} GB/s", copy_bandwidth() / 1e9);
        return Ok(());
    }
    // Memory-bandwidth bound of batch-1 decode: every f32 weight is read once per token, at
    // the rate two threads read (and sum) a buffer much larger than the caches.
    let weight_bytes: usize = model
        .policy
        .named_tensors()
        .values()
        .map(|t| t.elem_count() * 4)
        .sum();
    let read = read_bandwidth();
    let bound = read / weight_bytes as f64;
    let per_round = rounds1
        .iter()
        .zip(&rounds5)
        .map(|(one, five)| format!("{one:.1} / {five:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    if std::env::args().any(|a| a == "--decode-only") {
        println!(
            "decode batch 1 {batch1:.1} tok/s ({:.0} % of the {bound:.1} tok/s read-bandwidth bound), batch 5 {batch5:.1} tok/s ({:.2}x), prefill {prefill:.3} s; rounds (batch 1 / batch 5): {per_round}",
            100.0 * batch1 / bound,
            batch5 / batch1
        );
        return Ok(());
    }

    // Training step: 5 × 512 tokens in one-sequence micro-batches, loss = -mean log-prob.
    let vocab = model.policy.config().vocab_size as u32;
    let sequences: Vec<Vec<u32>> = (0..5u32)
        .map(|row| {
            (0..512u32)
                .map(|i| (i * 7919 + row * 104_729 + 13) % vocab)
                .collect()
        })
        .collect();
    // The trainer's own update (`host/src/grpo`): gradients summed over the micro-batches,
    // then AdamW (lr 1e-6, betas 0.9 / 0.999, eps 1e-8, weight decay 0.01).
    let params: BTreeMap<String, Var> = model
        .policy
        .vars()
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned variables"))?
        .iter()
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    let mut optimizer = AdamW::new(AdamWSettings::default());
    let mut step = || -> anyhow::Result<f64> {
        // On a rayon worker, as the trainer runs its updates (`model::worker`).
        research_host::model::on_worker(|| {
            let started = Instant::now();
            let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
            for sequence in &sequences {
                let batch = PaddedBatch::new(std::slice::from_ref(sequence), 0, &Device::Cpu)?;
                let loss = (model
                    .policy
                    .token_stats(&batch)?
                    .logprobs
                    .mean_all()?
                    .neg()?
                    / sequences.len() as f64)?;
                // Each GradStore holds every intermediate's gradient: dropped once the
                // parameters' gradients are taken.
                let store = loss.backward()?;
                for (name, var) in &params {
                    if let Some(grad) = store.get(var.as_tensor()) {
                        accumulate(&mut grads, name, grad)?;
                    }
                }
            }
            optimizer.step(&params, &grads, 1e-6)?;
            Ok(started.elapsed().as_secs_f64())
        })
    };
    step()?;
    let steps: Vec<f64> = (0..2).map(|_| step()).collect::<anyhow::Result<_>>()?;
    let train = 5.0 * 512.0 / (steps.iter().sum::<f64>() / steps.len() as f64);
    let peak_gib = peak_rss_bytes() as f64 / (1u64 << 30) as f64;

    let bandwidth = copy_bandwidth();
    let params = model
        .policy
        .named_tensors()
        .values()
        .map(Tensor::elem_count)
        .sum::<usize>();
    if json {
        println!(
            "{}",
            serde_json::json!({"runtime": "research-host (candle)", "params": params, "decode_b1_tok_s": batch1,
                "decode_b5_tok_s": batch5, "decode_b1_rounds": rounds1, "decode_b5_rounds": rounds5, "prefill_s": prefill, "train_tok_s": train, "train_peak_gib": peak_gib,
                "copy_gb_s": bandwidth / 1e9, "read_gb_s": read / 1e9, "decode_bound_tok_s": bound})
        );
    } else {
        println!(
            "model: {} ({:.1} M parameters, f32)",
            model_dir.display(),
            params as f64 / 1e6
        );
        println!(
            "decode batch 1      {batch1:8.1} tok/s  ({:.0} % of the {bound:.1} tok/s read-bandwidth bound)",
            100.0 * batch1 / bound
        );
        println!(
            "decode batch 5      {batch5:8.1} tok/s  ({:.2}x batch 1)",
            batch5 / batch1
        );
        println!("rounds (batch 1 / batch 5, tok/s): {per_round}");
        println!(
            "prefill             {:8.3} s for {} tokens",
            prefill,
            prompt.len()
        );
        println!("train 5x512         {train:8.1} tok/s  (peak RSS {peak_gib:.2} GiB)");
        println!("read bandwidth      {:8.1} GB/s", read / 1e9);
        println!("copy bandwidth      {:8.1} GB/s", bandwidth / 1e9);
    }
    Ok(())
}

/// The median of `values` (the mean of the middle two for an even count); NaN for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Peak resident memory of this process (VmHWM).
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bytes per second that rayon's threads read from a 512 MB f32 buffer, summing it in place
/// (best of 5): what a decode step that streams every weight once can at most reach.
fn read_bandwidth() -> f64 {
    use rayon::prelude::*;
    let values = vec![1f32; 128 << 20];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let sum: f32 = values
            .par_chunks(1 << 16)
            .map(|chunk| {
                // Eight independent sums, so that the loop is bound by loads, not additions.
                let mut lanes = [0f32; 8];
                for block in chunk.chunks_exact(8) {
                    for (lane, v) in lanes.iter_mut().zip(block) {
                        *lane += v;
                    }
                }
                lanes.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(sum);
        best = best.min(started.elapsed().as_secs_f64());
    }
    (values.len() * 4) as f64 / best
}

/// Bytes per second read by a large memory copy (best of 5).
fn copy_bandwidth() -> f64 {
    let size = 256 << 20;
    let source = vec![1u8; size];
    let mut target = vec![0u8; size];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        target.copy_from_slice(&source);
        std::hint::black_box(&target);
        best = best.min(started.elapsed().as_secs_f64());
    }
    size as f64 / best
}
