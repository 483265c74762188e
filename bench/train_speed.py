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

With ``--softmax class`` nextword trains its class-factored output layer (``--classes K``, √V
by default, the bounds ``nextword train`` would cut from the counts) and PyTorch three peers:
its full softmax; the same factored layer written in PyTorch (the class softmax, then each
class's rows on that class's targets, as ``class_softmax_loss`` does); and PyTorch's own
adaptive softmax (``nn.AdaptiveLogSoftmaxWithLoss``, Grave et al. 2017, ``--cutoffs``). Every
model trains on the same windows, one after another in each round. ``--shortlist S`` gives the
S most frequent words a class each (the adaptive softmax's head); ``--zipf-vocab N`` trains on
a synthetic Zipf corpus with N words (the 100k-word case).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from model.network.class_softmax import WordClasses
from model.network.recurrent import RNNLM, ModelConfig
from model.text.batches import batchify, bptt_windows, sentence_stream, target_mask
from model.text.vocab import Vocabulary
from model.training.optim import SGD
from model.training.steps import train_step

DEFAULT_PTB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"


def load_windows(
    ptb_dir: Path, batch: int, bptt: int, steps: int, zipf_vocab: int = 0
) -> tuple[list, list[int], str]:
    """Training windows (inputs, targets, mask) from PTB train, or synthetic Zipf ones without
    it or when ``zipf_vocab`` asks for a vocabulary of that size; the vocabulary's counts (ids
    by falling frequency)."""
    train = ptb_dir / "ptb.train.txt"
    if train.exists() and not zipf_vocab:
        lines = [line.split() for line in train.read_text().splitlines()]
        vocab = Vocabulary.from_corpus(lines)
        stream = sentence_stream(lines[: 40 * batch * bptt], vocab)
        source = f"PTB {train}"
    else:
        size = zipf_vocab or 10_001
        rng = np.random.default_rng(0)
        drawn = (rng.zipf(1.2, size=batch * bptt * (steps + 2)) % (size - 3)) + 3
        by_count = np.bincount(drawn, minlength=size)
        rank = np.empty(size, dtype=np.int64)  # ids by falling frequency, as a vocabulary
        rank[3 + np.argsort(-by_count[3:], kind="stable")] = np.arange(3, size)
        stream = rank[drawn]
        counts = np.bincount(stream, minlength=size)
        vocab = Vocabulary(
            ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(size - 3)], counts.tolist()
        )
        why = f"V = {size} asked for" if zipf_vocab else "PTB not found"
        source = f"synthetic Zipf corpus ({why})"
    data = batchify(stream, batch)
    windows = [(x, y, target_mask(y, vocab)) for x, y in bptt_windows(data, bptt)]
    return [w for w in windows if w[0].shape[0] == bptt][:steps], vocab.counts, source


def numpy_round(net: RNNLM, opt: SGD, windows: list, clip: float) -> float:
    """Train over ``windows`` once; returns tokens/second (input tokens, as PyTorch counts them)."""
    state = net.init_state(windows[0][0].shape[1])
    start = time.perf_counter()
    for x, y, mask in windows:
        _, state = train_step(net, opt, x, y, mask, state, clip, rng=None)
    return sum(x.size for x, _, _ in windows) / (time.perf_counter() - start)


def make_torch_rounds(
    vocab_size: int, cfg: argparse.Namespace, classes: WordClasses | None, net: RNNLM, window
):
    """The same model in PyTorch, one round function per output layer ({} without PyTorch):
    ``torch`` (full softmax); with ``classes`` also ``torch-class`` and ``torch-adaptive``.
    The factored layer is first checked: given nextword's weights and top outputs on
    ``window`` it must give nextword's loss and class-row gradient."""
    try:
        import torch
    except ImportError:
        return {}, None
    torch.manual_seed(0)
    torch.set_num_threads(cfg.threads)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")

    class Full(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.output = torch.nn.Linear(cfg.hidden, vocab_size)

        def forward(self, h, y, m):  # mean cross-entropy of the counted targets
            return (loss_fn(self.output(h), y) * m).sum() / m.sum()

    class Factored(torch.nn.Module):
        """The class-factored softmax, as ``class_softmax_loss`` computes it: the targets
        sorted by class once, each class's own rows (a Linear of its own) on its targets; a
        class of one word (a shortlist's) has P(w | c) = 1 and no rows, as in nextword."""

        def __init__(self, bounds: tuple[int, ...], shortlist: int) -> None:
            super().__init__()
            self.bounds = bounds
            self.edges = torch.tensor(bounds[1:-1])
            self.listed = torch.nn.Linear(cfg.hidden, shortlist) if shortlist else None
            self.classes = torch.nn.Linear(cfg.hidden, len(bounds) - 1 - shortlist)
            self.words = torch.nn.ModuleDict(
                {str(c): torch.nn.Linear(cfg.hidden, hi - lo)
                 for c, (lo, hi) in enumerate(itertools.pairwise(bounds)) if hi - lo > 1}
            )  # fmt: skip

        def forward(self, h, y, m):
            keep = m > 0
            h, y, m = h[keep], y[keep], m[keep]
            cs = torch.bucketize(y, self.edges, right=True)
            head = self.classes(h)  # the shortlisted words' rows, then the bands'
            if self.listed is not None:
                head = torch.cat([self.listed(h), head], dim=-1)
            class_lp = torch.log_softmax(head, dim=-1)
            total = -(class_lp.gather(1, cs[:, None])[:, 0] * m).sum()
            order = torch.argsort(cs, stable=True)
            present, sizes = torch.unique_consecutive(cs[order], return_counts=True)
            for c, at in zip(present.tolist(), torch.split(order, sizes.tolist()), strict=True):
                if str(c) not in self.words:
                    continue
                word_lp = torch.log_softmax(self.words[str(c)](h[at]), dim=-1)
                local = (y[at] - self.bounds[c])[:, None]
                total = total - (word_lp.gather(1, local)[:, 0] * m[at]).sum()
            return total / m.sum()

    class Adaptive(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.output = torch.nn.AdaptiveLogSoftmaxWithLoss(
                cfg.hidden, vocab_size, cutoffs=cfg.cutoffs, div_value=4.0
            )

        def forward(self, h, y, m):
            keep = m > 0
            return -(self.output(h[keep], y[keep]).output * m[keep]).sum() / m.sum()

    class TorchLM(torch.nn.Module):
        def __init__(self, output: torch.nn.Module) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab_size, cfg.hidden)
            self.lstm = torch.nn.LSTM(cfg.hidden, cfg.hidden, cfg.layers)
            self.loss = output

        def forward(self, x, y, m, state):
            h, state = self.lstm(self.embedding(x), state)
            return self.loss(h.reshape(-1, cfg.hidden), y.reshape(-1), m.reshape(-1)), state

    def round_of(model: torch.nn.Module):
        opt = torch.optim.SGD(model.parameters(), lr=1.0)

        def torch_round(windows: list) -> float:
            n = windows[0][0].shape[1]
            state = tuple(torch.zeros(cfg.layers, n, cfg.hidden) for _ in range(2))
            batches = [
                (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(m).float())
                for x, y, m in windows
            ]
            start = time.perf_counter()
            for x, y, m in batches:
                state = tuple(s.detach() for s in state)  # truncated BPTT
                loss, state = model(x, y, m, state)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
            return sum(x.numel() for x, _, _ in batches) / (time.perf_counter() - start)

        return torch_round

    rounds = {"torch": round_of(TorchLM(Full()))}
    if classes is not None:
        check = Factored(classes.bounds, classes.shortlist).double()
        p, (x, y, m) = net.params, window
        with torch.no_grad():
            if check.listed is not None:
                short = classes.shortlist
                check.listed.weight.copy_(torch.from_numpy(p["output.W"][:short].astype(float)))
                check.listed.bias.copy_(torch.from_numpy(p["output.b"][:short].astype(float)))
            check.classes.weight.copy_(torch.from_numpy(p["output.class.W"].astype(np.float64)))
            check.classes.bias.copy_(torch.from_numpy(p["output.class.b"].astype(np.float64)))
            for c, (lo, hi) in enumerate(itertools.pairwise(classes.bounds)):
                if str(c) in check.words:
                    rows = check.words[str(c)]
                    rows.weight.copy_(torch.from_numpy(p["output.W"][lo:hi].astype(float)))
                    rows.bias.copy_(torch.from_numpy(p["output.b"][lo:hi].astype(float)))
        hidden = net.forward(x, net.init_state(x.shape[1]))[0].astype(np.float64)
        h = torch.from_numpy(hidden.reshape(-1, cfg.hidden)).requires_grad_()
        theirs = check(h, torch.from_numpy(y.ravel()), torch.from_numpy(m.ravel().astype(float)))
        theirs.backward()
        mine, grads, _ = net.loss_and_grads(x, y, m, net.init_state(x.shape[1]))
        assert abs(mine - theirs.item()) < 1e-4, f"factored losses differ: {mine} vs {theirs}"
        their_grad = check.classes.weight.grad.numpy()
        assert np.allclose(grads["output.class.W"], their_grad, atol=1e-5), "class gradients"
        rounds["torch-class"] = round_of(TorchLM(Factored(classes.bounds, classes.shortlist)))
        rounds["torch-adaptive"] = round_of(TorchLM(Adaptive()))
    return rounds, torch.__version__


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
    parser.add_argument("--softmax", choices=["full", "class"], default="full")
    parser.add_argument("--classes", type=int, default=0, help="with --softmax class; 0: √V")
    parser.add_argument("--shortlist", type=int, default=0,
                        help="with --softmax class: words with a class of their own")  # fmt: skip
    parser.add_argument("--zipf-vocab", type=int, default=0,
                        help="train on a synthetic Zipf corpus with this vocabulary")  # fmt: skip
    parser.add_argument("--cutoffs", type=int, nargs="+", default=[2000, 6000],
                        help="the adaptive softmax's cluster cutoffs")  # fmt: skip
    cfg = parser.parse_args()

    windows, counts, source = load_windows(
        cfg.ptb_dir, cfg.batch, cfg.bptt, cfg.steps, cfg.zipf_vocab
    )
    vocab_size = len(counts)
    classes = None
    if cfg.softmax == "class":  # the bounds `nextword train` cuts
        classes = WordClasses.cut(counts, cfg.classes, cfg.shortlist)
    config = ModelConfig(
        vocab_size, "lstm", num_layers=cfg.layers, embed_size=cfg.hidden, hidden_size=cfg.hidden,
        softmax=cfg.softmax, class_bounds=classes.bounds if classes else (),
        class_shortlist=classes.shortlist if classes else 0,
    )  # fmt: skip
    net, opt = RNNLM(config, seed=0), SGD(lr=1.0)
    torch_rounds, torch_version = make_torch_rounds(vocab_size, cfg, classes, net, windows[0])
    numpy_round(net, opt, windows[:3], cfg.clip)  # warm-up: BLAS threads, caches
    for torch_round in torch_rounds.values():
        torch_round(windows[:3])
    results: dict[str, list[float]] = {"numpy": []} | {name: [] for name in torch_rounds}
    for r in range(cfg.rounds):
        time.sleep(cfg.pause)  # let the other library's spinning worker threads go idle
        results["numpy"].append(numpy_round(net, opt, windows, cfg.clip))
        for name, torch_round in torch_rounds.items():
            time.sleep(cfg.pause)
            results[name].append(torch_round(windows))
        line = "  ".join(f"{k} {v[-1]:8.0f} tok/s" for k, v in results.items() if v)
        print(f"round {r + 1}/{cfg.rounds}: {line}")

    summary = {
        "benchmark": "train_speed",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "data": source,
        "model": f"{cfg.layers}x{cfg.hidden} LSTM, V={vocab_size}, softmax {cfg.softmax}"
        + (f" (K={classes.num_classes}, shortlist {classes.shortlist})" if classes else ""),
        "batch": f"{cfg.batch} x {cfg.bptt} steps",
        "numpy_version": np.__version__,
        "torch_version": torch_version,
        "numpy_tok_s_median": round(statistics.median(results["numpy"])),
    }
    peers = {
        "torch": "PyTorch, full softmax",
        "torch-class": "PyTorch, the same class-factored layer",
        "torch-adaptive": f"PyTorch AdaptiveLogSoftmaxWithLoss, cutoffs {cfg.cutoffs}, div 4",
    }
    if torch_rounds:
        summary["peers"] = {name: peers[name] for name in torch_rounds}
    for name in torch_rounds:
        key = name.replace("-", "_")
        summary[f"{key}_tok_s_median"] = round(statistics.median(results[name]))
        ratios = [a / b for a, b in zip(results["numpy"], results[name], strict=True)]
        summary[f"ratio_numpy_over_{key}_median"] = round(statistics.median(ratios), 3)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
