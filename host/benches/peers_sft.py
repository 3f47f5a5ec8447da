"""The SFT step of `host sft` in PyTorch + transformers, for host/benches/sft_speed.sh.

Reads the same trajectory JSONL as `host sft`, trains the same steps (batch of B sequences in
micro-batches, loss = negative log-likelihood of the loss-mask-1 tokens divided by the batch's
kept tokens, global grad-norm clip 1.0, AdamW with the same settings and a constant rate) on 2
threads, and prints one JSON line: tokens per second (prompt and response tokens processed per
second of step time) per step, their median over the steps after the first, the final loss and
the peak RSS.
"""

import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-5)
    args = p.parse_args()

    rows = [json.loads(l) for l in open(args.data) if l.strip()]
    sequences = []
    for r in rows:
        ids = r["prompt_ids"] + r["response_ids"]
        # Position t predicts token t + 1: mask the prediction of prompt and observation tokens.
        mask = [0.0] * (len(ids) - 1)
        for j, m in enumerate(r["loss_mask"]):
            if m == 1:
                mask[len(r["prompt_ids"]) + j - 1] = 1.0
        sequences.append((ids, mask))

    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01
    )
    pad = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 0

    def step(batch):
        kept = sum(sum(m) for _, m in batch)
        total_loss = 0.0
        processed = 0
        for start in range(0, len(batch), args.micro):
            micro = batch[start : start + args.micro]
            width = max(len(ids) for ids, _ in micro)
            ids = torch.full((len(micro), width), pad, dtype=torch.long)
            attention = torch.zeros((len(micro), width), dtype=torch.long)
            mask = torch.zeros((len(micro), width - 1))
            for i, (s, m) in enumerate(micro):
                ids[i, : len(s)] = torch.tensor(s)
                attention[i, : len(s)] = 1
                mask[i, : len(m)] = torch.tensor(m)
                processed += len(s)
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            chosen = logp.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
            loss = -(chosen * mask).sum() / kept
            loss.backward()
            total_loss += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total_loss, processed

    rates, losses = [], []
    for s in range(args.steps):
        batch = sequences[s * args.batch : (s + 1) * args.batch]
        if not batch:
            break
        started = time.perf_counter()
        loss, processed = step(batch)
        rates.append(processed / (time.perf_counter() - started))
        losses.append(loss)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(
        json.dumps(
            {
                "tokens_per_s": rates,
                "median_after_first": statistics.median(rates[1:] or rates),
                "loss": losses,
                "peak_rss_gib": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
