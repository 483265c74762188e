"""The whole `nextword train` process beside its windows: tokens/s of the run, not just of the
updates (issue 28). Validation, the start state, snapshots and the rest of the process count.

    python bench/whole_run.py                                     # this checkout, 3 rounds
    python bench/whole_run.py --code /tmp/old-checkout            # and another, alternating

The default run is the issue's: the first 5,000 lines of PTB train (about 116k tokens), PTB
valid, a 2×200 LSTM with the class softmax (shortlist 2000), SGD at 20, 3 epochs, one BLAS
thread. Each round starts one process per checkout, in turn, so a shared machine slows both
alike. Reported per run: wall seconds of the process, the in-epoch rate (metrics.jsonl's
``tokens_per_s``: the windows alone), the whole-process rate (training tokens × epochs / wall
time), and the seconds per epoch outside the windows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTB = ROOT.parent / "shared" / "data" / "ptb"
OPTIONS = ["--layers", "2", "--emb", "200", "--hidden", "200", "--tie-weights",
           "--softmax", "class", "--shortlist", "2000", "--optimizer", "sgd", "--lr", "20",
           "--dropout", "0.2", "--batch-size", "20", "--bptt", "35", "--min-count", "1",
           "--progress-every", "0"]  # fmt: skip


def run(code: Path, train: Path, valid: Path, epochs: int, out: Path) -> dict[str, float]:
    """One `nextword train` process from the checkout ``code``: its timings."""
    env = os.environ | {"PYTHONPATH": str(code), "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "model.training.command", "--train", str(train),
               "--valid", str(valid), "--epochs", str(epochs), "--out", str(out), "--force",
               *OPTIONS]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{code}: nextword train failed:\n{done.stderr[-2000:]}")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tokens = json.loads((out / "config.json").read_text())["metadata"]["corpus"]["train_tokens"]
    window_s = sum(tokens / r["tokens_per_s"] for r in history)
    return {
        "wall_s": wall,
        "in_epoch_tok_s": statistics.mean(r["tokens_per_s"] for r in history),
        "whole_tok_s": tokens * len(history) / wall,
        "outside_windows_s_per_epoch": (wall - window_s) / len(history),
        "validate_s_per_epoch": statistics.mean(r.get("validate_s", float("nan")) for r in history),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, help="another checkout to run alternately")
    parser.add_argument("--lines", type=int, default=5000, help="PTB train lines")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="whole-run-"))
    train = work / "train.txt"
    lines = (PTB / "ptb.train.txt").read_text().splitlines(keepends=True)[: args.lines]
    train.write_text("".join(lines))
    codes = {"this": ROOT} | ({"other": args.code.resolve()} if args.code else {})
    results: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
    for r in range(args.rounds):
        for name, code in codes.items():
            results[name].append(run(code, train, PTB / "ptb.valid.txt", args.epochs,
                                     work / f"{name}-{r}"))  # fmt: skip
            print(name, r, {k: round(v, 2) for k, v in results[name][-1].items()}, flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, {args.lines} PTB lines, {args.epochs} epochs, "
          f"{args.rounds} rounds (median)")  # fmt: skip
    print("| checkout | wall s | in-epoch tok/s | whole-process tok/s | s/epoch outside windows "
          "| validation s/epoch |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} ({codes[name]}) | {med['wall_s']:.1f} | {med['in_epoch_tok_s']:,.0f} | "
              f"{med['whole_tok_s']:,.0f} | {med['outside_windows_s_per_epoch']:.1f} | "
              f"{med['validate_s_per_epoch']:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
