"""The ``nextword`` command line.

nextword --version
nextword info MODEL_DIR            # architecture, vocabulary and metadata of a checkpoint, as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import model
from model.checkpoint import CheckpointError, load_checkpoint


def info(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds; exit code 2 with a message when it cannot be loaded."""
    try:
        lm = load_checkpoint(args.model_dir)
    except CheckpointError as e:
        sys.stderr.write(f"nextword info: {e}\n")
        return 2
    summary = {
        "model": lm.net.config.to_dict(),
        "tokenizer": lm.tokenizer.to_dict(),
        "vocab_size": len(lm.vocab),
        "parameters": lm.net.num_parameters(),
        "metadata": lm.metadata,
    }
    sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nextword", description="Recurrent neural-network language model"
    )
    parser.add_argument("--version", action="version", version=f"nextword {model.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    info_parser = commands.add_parser("info", help="describe a checkpoint directory")
    info_parser.add_argument("model_dir", help="checkpoint directory (holds config.json)")
    info_parser.set_defaults(run=info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
