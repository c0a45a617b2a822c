"""How the embedded "tiny" model was made: its tokenizer, then the model, from the wiki train split.

    python -m qtutor.zoo.train tokenizer            # qtutor/zoo/tokenizer.json (seconds)
    python -m qtutor.zoo.train model                # qtutor/zoo/tiny/ (about 30 minutes on 2 CPU cores)

The model is a Llama (RMSNorm, rotary position embeddings, SwiGLU MLP) of 6.2 M parameters: hidden 256,
MLP 768, 6 layers of 4 heads, vocabulary 4096, tied input/output embeddings. Every weight dimension is a
multiple of 256, so GGUF's K-quants (256-element super-blocks) apply to every tensor.

The corpus is small (0.81 M training tokens). The default budget is 3 M tokens (732 steps of 16 x 256), about
3.7 passes, sized to finish within the hour on 2 CPU cores in float32 (~2,000 tokens/s on an AVX2 machine;
small batches make more optimizer steps of the same tokens, which a short budget needs more than smooth gradients);
an H100 run found the best valid perplexity near 10 M tokens (~91) before the model starts memorizing.
Valid perplexity is measured as training goes and the best checkpoint is kept (early stopping).
``--bf16`` turns on bfloat16 autocast, twice as fast where the CPU has bf16 instructions (AVX512-BF16, AMX)
and many times slower where it has not. Everything is seeded; the run is deterministic on a given machine.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

ZOO = Path(__file__).resolve().parent
MODEL_DIR = ZOO / "tiny"

CONFIG = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
              tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def model_config(attention_dropout: float = 0.0):
    from transformers import LlamaConfig

    return LlamaConfig(**CONFIG, attention_dropout=attention_dropout)


def train_tokenizer_command(args: argparse.Namespace) -> None:
    from qtutor.data.corpus import text
    from qtutor.data.tokenizer import train_tokenizer

    path = train_tokenizer(text("train"))
    print(f"saved {path}")


def windows(stream: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(0, len(stream) - seq_len, size=batch)
    return np.stack([stream[s:s + seq_len] for s in starts])


def valid_perplexity(model, stream: np.ndarray, seq_len: int = 256, batch: int = 32) -> float:
    """Quick perplexity on non-overlapping windows (for choosing the checkpoint; the model card reports
    qt.perplexity's sliding-window figure)."""
    import torch

    n = (len(stream) - 1) // seq_len
    chunks = torch.from_numpy(stream[: n * seq_len].reshape(n, seq_len))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            ids = chunks[i:i + batch]
            logits = model(input_ids=ids).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     ids[:, 1:].reshape(-1), reduction="sum")
            total += loss.item()
            count += ids[:, 1:].numel()
    model.train()
    return math.exp(total / count)


def learning_rate(step: int, total_steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run, every setting spelled out (``--out`` left to the reader)."""
    words = ["python -m qtutor.zoo.train model"]
    for key, value in vars(args).items():
        if key in ("func", "out", "what") or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words.append(flag if value is True else f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(words)


def train_model_command(args: argparse.Namespace) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from qtutor import data

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    train_stream, valid_stream = data.tokens("train"), data.tokens("valid")
    model = LlamaForCausalLM(model_config(attention_dropout=args.attention_dropout))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    tokens_per_step = args.batch * args.seq_len
    total_steps = int(args.tokens // tokens_per_step)
    log, best = [], {"valid_ppl": float("inf"), "step": -1}
    started = time.time()
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {total_steps} steps of {tokens_per_step} tokens",
          flush=True)
    for step in range(total_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, args.lr, args.warmup)
        ids = torch.from_numpy(windows(train_stream, args.batch, args.seq_len, rng))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == total_steps:
            ppl = valid_perplexity(model, valid_stream)
            elapsed = time.time() - started
            entry = {"step": step + 1, "tokens": (step + 1) * tokens_per_step, "train_loss": round(loss.item(), 4),
                     "valid_ppl": round(ppl, 2), "seconds": round(elapsed, 1)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            if ppl < best["valid_ppl"]:
                best = dict(entry)
                model.save_pretrained(args.out, safe_serialization=True)  # the best so far is always on disk
    summary = {"command": command_line(args),
        "seed": args.seed, "threads": args.threads, "tokens_per_step": tokens_per_step, "steps": total_steps,
        "tokens_seen": total_steps * tokens_per_step, "seconds": round(time.time() - started, 1),
        "tokens_per_second": round(total_steps * tokens_per_step / (time.time() - started), 1),
        "best": best, "log": log, "torch": torch.__version__}
    (Path(args.out) / "training_log.json").write_text(json.dumps(summary, indent=1))
    # the saved config should not carry the training-time dropout
    config_path = Path(args.out) / "config.json"
    config = json.loads(config_path.read_text())
    config["attention_dropout"] = 0.0
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    print(f"best valid perplexity {best['valid_ppl']} at step {best['step']}; saved {args.out}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qtutor.zoo.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("tokenizer", help="train the BPE tokenizer").set_defaults(func=train_tokenizer_command)
    model = sub.add_parser("model", help="train the tiny Llama")
    model.add_argument("--tokens", type=float, default=3e6, help="training tokens (default 3M)")
    model.add_argument("--bf16", action="store_true",
                       help="bfloat16 autocast: about 2x faster on CPUs with AVX512-BF16 or AMX, far slower without")
    model.add_argument("--batch", type=int, default=16)
    model.add_argument("--seq-len", type=int, default=256)
    model.add_argument("--lr", type=float, default=1e-3)
    model.add_argument("--warmup", type=int, default=30)
    model.add_argument("--attention-dropout", type=float, default=0.1)
    model.add_argument("--eval-every", type=int, default=50)
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--threads", type=int, default=2)
    model.add_argument("--out", type=Path, default=MODEL_DIR)
    model.set_defaults(func=train_model_command)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
