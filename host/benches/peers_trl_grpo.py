"""One GRPO step as a user of TRL would run it, for host/benches/grpo_vs_trl.sh: TRL's
GRPOTrainer on the same model, prompts (the exact prompt texts `host train` rendered), group
size, completion budget, sampling and optimiser, single-turn (TRL has no retriever), on 2
threads. Prints one JSON line: seconds per step (generation, scoring and the update together),
their median after the first step, and the peak RSS.
"""

import argparse
import json
import resource
import statistics
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

torch.set_num_threads(2)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.started)


def zero_reward(completions, **kwargs):
    # The same reward as research-reward gives SmolLM2's answers here (0): the update's work
    # does not depend on the values.
    return [0.0 for _ in completions]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True, help="JSON list of prompt texts")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-completion", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    prompts = json.load(open(args.prompts))
    dataset = Dataset.from_dict({"prompt": prompts})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    options = dict(
        output_dir=args.out,
        per_device_train_batch_size=args.prompts_per_step * args.group,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.max_completion,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        beta=0.0,
        num_iterations=1,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    fields = GRPOConfig.__dataclass_fields__
    if "max_prompt_length" in fields:
        options["max_prompt_length"] = None
    config = GRPOConfig(**{k: v for k, v in options.items() if k in fields})
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=zero_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    import trl

    lengths = [
        entry["completions/mean_length"]
        for entry in trainer.state.log_history
        if "completions/mean_length" in entry
    ]

    print(
        json.dumps(
            {
                "trl": trl.__version__,
                "step_s": timer.times,
                "median_after_first": statistics.median(timer.times[1:] or timer.times),
                "completion_length": lengths,
                "peak_rss_gib": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
