"""Train a language model on a text corpus and write a checkpoint the service can load.

    nextword train --train corpus.txt --out models/mine
    nextword train --train corpus.txt --out models/mine --cell gru --layers 1 --optimizer adam
    nextword train --config bench/ptb.toml                  # a reproducible run from a file
    nextword train --preset default --out models/default    # the built-in model (The Time Machine)
    nextword train --resume --out models/mine               # continue a stopped or killed run
    python -m model.training.command ...                               # the same

Options are read from the defaults, then ``--config`` (TOML or JSON, keys named like the options
with underscores), then the command line. The effective configuration is stored in the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model.inference.checkpoint import CONFIG_FILE, CheckpointError
from model.network.layers import NonFiniteError
from model.training.config import PATH_FIELDS, PRESETS, TrainConfig, merge
from model.training.snapshot import StoppedError, TrainingError
from model.training.trainer import train

S = argparse.SUPPRESS  # options not given stay absent, so the config file's values are kept


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config", default=S, help="TOML or JSON file of options (paths relative to it)"
    )
    run.add_argument(
        "--preset", choices=sorted(PRESETS), default=S, help="a built-in configuration"
    )
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    run.add_argument("--force", action="store_true", help="replace a model already in --out")
    data = parser.add_argument_group("data")
    data.add_argument("--train", default=S, help="training corpus (UTF-8 text)")
    data.add_argument(
        "--valid", default=S, help="validation corpus (default: hold out the end of train)"
    )
    data.add_argument(
        "--test", default=S, help="test corpus, scored with the best model at the end"
    )
    data.add_argument(
        "--out", default=S, help="output directory: the checkpoint, metrics.jsonl, training.png"
    )
    data.add_argument(
        "--valid-fraction", type=float, default=S, help=f"held-out share ({d.valid_fraction})"
    )
    data.add_argument(
        "--split",
        choices=["lines", "sentences"],
        default=S,
        help="one sentence per line, or split prose into sentences (lines)",
    )
    data.add_argument(
        "--tokenizer", choices=["whitespace", "words", "chars"], default=S, help="(whitespace)"
    )
    data.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=S)
    data.add_argument(
        "--min-count", type=int, default=S, help=f"rarer words become <unk> ({d.min_count})"
    )
    data.add_argument(
        "--max-vocab", type=int, default=S, help="at most this many ids, specials included"
    )
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--cell", choices=["rnn", "lstm", "gru"], default=S, help=f"({d.cell})")
    arch.add_argument(
        "--activation", choices=["tanh", "relu"], default=S, help="for --cell rnn (tanh)"
    )
    arch.add_argument("--layers", type=int, default=S, help=f"({d.layers})")
    arch.add_argument("--emb", type=int, default=S, help=f"embedding size ({d.emb})")
    arch.add_argument("--hidden", type=int, default=S, help=f"hidden size ({d.hidden})")
    arch.add_argument("--dropout", type=float, default=S, help=f"({d.dropout})")
    arch.add_argument(
        "--tie-weights",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="share the embedding and output matrices (needs --emb == --hidden)",
    )
    arch.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="a gap-filling model reading both sides of a word (served by /v1/fill)",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--optimizer", choices=["sgd", "adam"], default=S, help=f"({d.optimizer})")
    opt.add_argument(
        "--lr",
        type=float,
        default=S,
        help="learning rate (sgd: 20 for lstm, 10 gru, 5 rnn, 3 relu rnn; adam: 0.002)",
    )
    opt.add_argument(
        "--lr-decay",
        type=float,
        default=S,
        help=f"factor after an epoch without improvement ({d.lr_decay})",
    )
    opt.add_argument(
        "--clip", type=float, default=S, help=f"maximum global gradient norm ({d.clip})"
    )
    opt.add_argument("--batch-size", type=int, default=S, help=f"({d.batch_size})")
    opt.add_argument(
        "--bptt", type=int, default=S, help=f"steps per truncated-BPTT window ({d.bptt})"
    )
    opt.add_argument("--epochs", type=int, default=S, help=f"({d.epochs})")
    opt.add_argument(
        "--patience",
        type=int,
        default=S,
        help=f"stop after this many epochs without improvement ({d.patience})",
    )
    opt.add_argument("--seed", type=int, default=S, help=f"({d.seed})")
    opt.add_argument(
        "--checkpoint-every",
        type=int,
        default=S,
        help=f"windows between resume snapshots ({d.checkpoint_every})",
    )
    opt.add_argument("--eval-batch-size", type=int, default=S, help=f"({d.eval_batch_size})")
    opt.add_argument(
        "--max-recurrent-norm",
        type=float,
        default=S,
        help="keep the spectral norm of every recurrent matrix at most this (default: 1 for "
        "--cell rnn --activation relu, whose state could otherwise overflow on long text; 0 off)",
    )
    opt.add_argument(
        "--max-recoveries",
        type=int,
        default=S,
        help="when training diverges, roll back to the last snapshot and halve the learning "
        f"rate, at most this many times; 0 stops at once ({d.max_recoveries})",
    )
    run.add_argument(
        "--progress-every",
        type=float,
        default=S,
        metavar="SECONDS",
        help="a progress line this often when stderr is no terminal (Docker, Kubernetes); "
        f"0 never ({d.progress_every:g})",
    )


def run_train(args: argparse.Namespace) -> int:
    """The ``nextword train`` command.

    Exit codes: 0 done, 1 training diverged (even after the recoveries), 2 bad input or an
    output that cannot be written, 3 stopped by a signal (resumable).
    """
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    for key in PATH_FIELDS:
        if key in given:
            given[key] = str(Path(given[key]).resolve())
    config_file = getattr(args, "config", None) or getattr(args, "preset", None)
    try:
        if args.resume and config_file:
            raise ValueError(
                "--resume takes every option from the saved run; drop --config/--preset"
            )
        cfg = merge(given, config_file) if not args.resume else TrainConfig(**given)
        train(cfg, given, resume=args.resume, force=args.force)
    except NonFiniteError as e:
        sys.stderr.write(f"nextword train: training diverged: {e}; {diverged_advice(e)}\n")
        return 1
    except StoppedError as e:
        sys.stderr.write(f"nextword train: {e}\n")
        return 3
    except (ValueError, TrainingError, CheckpointError) as e:
        sys.stderr.write(f"nextword train: error: {e}\n")
        return 2
    return 0


def diverged_advice(error: NonFiniteError) -> str:
    """What to do after a divergence, and which model there is: the run's best so far only when
    it saved one (a run can diverge before its first epoch ends, over an earlier run's model)."""
    advice = "start again with a lower --lr or --clip"
    out, epoch = getattr(error, "out", None), getattr(error, "best_epoch", None)
    if out is None:  # not the trainer's verdict after its recoveries: nothing known of --out
        return advice
    held = (out / CONFIG_FILE).is_file()
    if epoch is not None and held:
        return f"{advice} (the best model so far, of epoch {epoch}, is kept in {out})"
    earlier = f" ({out} still holds the model of an earlier run)" if held else ""
    return f"{advice}; no model was saved{earlier}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.training.command", description=__doc__.split("\n\n")[0]
    )
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
