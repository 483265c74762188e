"""Training speed: tokens/second of nextword's NumPy LSTM beside the same model in PyTorch (CPU).

The model is the Penn Treebank "small" configuration: 2-layer LSTM, embedding and hidden size
200, vocabulary 10,000, batch 20, BPTT 35, SGD with gradient clipping, no dropout. Both
implementations train on the same PTB windows in the same process, in alternating rounds, so a
noisy shared machine affects both alike; compare the ratio.

    python bench/train_speed.py                          # PTB from ../shared/data/ptb
    python bench/train_speed.py --ptb-dir /path/to/ptb --rounds 5 --steps 40
    pip install -e '.[bench]'                            # adds PyTorch (torch==2.13.0, CPU)

Without PyTorch the NumPy figure is reported alone; without PTB a synthetic Zipf corpus with a
10,000-word vocabulary is used (and the report says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from model.network.recurrent import RNNLM, ModelConfig
from model.text.batches import batchify, bptt_windows, sentence_stream, target_mask
from model.text.vocab import Vocabulary
from model.training.optim import SGD
from model.training.steps import train_step

DEFAULT_PTB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"


def load_windows(ptb_dir: Path, batch: int, bptt: int, steps: int) -> tuple[list, int, str]:
    """Training windows (inputs, targets, mask) from PTB train, or synthetic ones without it."""
    train = ptb_dir / "ptb.train.txt"
    if train.exists():
        lines = [line.split() for line in train.read_text().splitlines()]
        vocab = Vocabulary.from_corpus(lines)
        stream = sentence_stream(lines[: 40 * batch * bptt], vocab)
        source = f"PTB {train}"
    else:
        vocab = Vocabulary(["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(9998)])
        rng = np.random.default_rng(0)
        stream = (rng.zipf(1.2, size=batch * bptt * (steps + 2)) % (len(vocab) - 3)) + 3
        source = "synthetic Zipf corpus (PTB not found)"
    data = batchify(stream, batch)
    windows = [(x, y, target_mask(y, vocab)) for x, y in bptt_windows(data, bptt)]
    return [w for w in windows if w[0].shape[0] == bptt][:steps], len(vocab), source


def numpy_round(net: RNNLM, opt: SGD, windows: list, clip: float) -> float:
    """Train over ``windows`` once; returns tokens/second (input tokens, as PyTorch counts them)."""
    state = net.init_state(windows[0][0].shape[1])
    start = time.perf_counter()
    for x, y, mask in windows:
        _, state = train_step(net, opt, x, y, mask, state, clip, rng=None)
    return sum(x.size for x, _, _ in windows) / (time.perf_counter() - start)


def make_torch_round(vocab_size: int, cfg: argparse.Namespace):
    """The same model in PyTorch, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None, None
    torch.manual_seed(0)
    torch.set_num_threads(cfg.threads)

    class TorchLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab_size, cfg.hidden)
            self.lstm = torch.nn.LSTM(cfg.hidden, cfg.hidden, cfg.layers)
            self.output = torch.nn.Linear(cfg.hidden, vocab_size)

        def forward(self, x, state):
            h, state = self.lstm(self.embedding(x), state)
            return self.output(h), state

    model = TorchLM()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")

    def torch_round(windows: list) -> float:
        n = windows[0][0].shape[1]
        state = tuple(torch.zeros(cfg.layers, n, cfg.hidden) for _ in range(2))
        batches = [
            (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m)) for x, y, m in windows
        ]
        start = time.perf_counter()
        for x, y, m in batches:
            state = tuple(s.detach() for s in state)  # truncated BPTT
            logits, state = model(x, state)
            loss = (
                loss_fn(logits.reshape(-1, vocab_size), y.reshape(-1)) * m.reshape(-1)
            ).sum() / m.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
        return sum(x.numel() for x, _, _ in batches) / (time.perf_counter() - start)

    return torch_round, torch.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ptb-dir", type=Path, default=Path(os.environ.get("NEXTWORD_PTB_DIR", DEFAULT_PTB))
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--steps", type=int, default=30, help="windows per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="PyTorch threads")
    cfg = parser.parse_args()

    windows, vocab_size, source = load_windows(cfg.ptb_dir, cfg.batch, cfg.bptt, cfg.steps)
    config = ModelConfig(
        vocab_size, "lstm", num_layers=cfg.layers, embed_size=cfg.hidden, hidden_size=cfg.hidden
    )
    net, opt = RNNLM(config, seed=0), SGD(lr=1.0)
    torch_round, torch_version = make_torch_round(vocab_size, cfg)
    numpy_round(net, opt, windows[:3], cfg.clip)  # warm-up: BLAS threads, caches
    if torch_round:
        torch_round(windows[:3])
    results: dict[str, list[float]] = {"numpy": [], "torch": []}
    for r in range(cfg.rounds):
        time.sleep(cfg.pause)  # let the other library's spinning worker threads go idle
        results["numpy"].append(numpy_round(net, opt, windows, cfg.clip))
        if torch_round:
            time.sleep(cfg.pause)
            results["torch"].append(torch_round(windows))
        line = "  ".join(f"{k} {v[-1]:8.0f} tok/s" for k, v in results.items() if v)
        print(f"round {r + 1}/{cfg.rounds}: {line}")

    summary = {
        "benchmark": "train_speed",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": source,
        "model": f"{cfg.layers}x{cfg.hidden} LSTM, V={vocab_size}",
        "batch": f"{cfg.batch} x {cfg.bptt} steps",
        "numpy_version": np.__version__,
        "torch_version": torch_version,
        "numpy_tok_s_median": round(statistics.median(results["numpy"])),
    }
    if results["torch"]:
        summary["torch_tok_s_median"] = round(statistics.median(results["torch"]))
        ratios = [a / b for a, b in zip(results["numpy"], results["torch"], strict=True)]
        summary["ratio_numpy_over_torch_median"] = round(statistics.median(ratios), 3)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
