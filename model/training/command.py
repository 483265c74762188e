"""Train a language model on a text corpus and write a checkpoint the service can load.

    nextword train --train corpus.txt --out models/mine
    nextword train --train corpus.txt --out models/mine --cell gru --layers 1 --optimizer adam
    nextword train --config bench/ptb.toml                  # a reproducible run from a file
    nextword train --preset default --out models/default    # the built-in model (The Time Machine)
    nextword train --resume --out models/mine               # continue a stopped or killed run
    python -m model.training.command ...                    # the same

Options are read from the defaults, then ``--config`` (TOML or JSON, keys named like the options
with underscores), then the command line. The effective configuration is stored in the checkpoint.
The options are ``TrainConfig``'s fields: their help lives there, beside their defaults.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from model.inference.checkpoint import CONFIG_FILE, CheckpointError
from model.network.layers import NonFiniteError
from model.training.config import PATH_FIELDS, PRESETS, TrainConfig, merge
from model.training.snapshot import StoppedError, TrainingError
from model.training.trainer import train

S = argparse.SUPPRESS  # options not given stay absent, so the config file's values are kept


GROUPS = ("run", "data", "architecture", "optimisation")  # the order --help shows them in
OPTION_TYPES = {"int": int, "float": float, "str": str}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options: --config, --preset, --resume, --force, then one per ``TrainConfig`` field,
    made from the field's type, default and metadata (``model.training.config.option``)."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    run = groups["run"]
    run.add_argument(
        "--config", default=S, help="TOML or JSON file of options (paths relative to it)"
    )
    run.add_argument(
        "--preset", choices=sorted(PRESETS), default=S, help="a built-in configuration"
    )
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    run.add_argument("--force", action="store_true", help="replace a model already in --out")
    for f in fields(TrainConfig):
        groups[f.metadata["group"]].add_argument(
            "--" + f.name.replace("_", "-"), default=S, help=option_help(f), **option_kind(f)
        )


def option_kind(f: Field[Any]) -> dict[str, Any]:
    """argparse's type, choices and metavar for a field: a bool is a --flag/--no-flag pair."""
    names = str(f.type).replace(" ", "").split("|")
    if "bool" in names:
        return {"action": argparse.BooleanOptionalAction}
    (name,) = [n for n in names if n != "None"]
    kind: dict[str, Any] = {"type": OPTION_TYPES[name]}
    if f.metadata["choices"]:
        kind["choices"] = f.metadata["choices"]
    if f.metadata["metavar"]:
        kind["metavar"] = f.metadata["metavar"]
    return kind


def option_help(f: Field[Any]) -> str:
    """The field's help, with its default where one is worth showing."""
    text = str(f.metadata["help"]).replace("%", "%%")  # argparse formats help with %
    if f.metadata["show_default"] and f.default is not None and not isinstance(f.default, bool):
        text += f" ({f.default})"
    return text


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
