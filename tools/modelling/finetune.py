"""``medroute finetune``: labelled data to a model bundle (``--model-type text`` or ``image``).

    medroute finetune --model-type image --train-data data/medmnist/pneumoniamnist_trainval.npz \\
        --eval-data data/medmnist/pneumoniamnist_trainval.npz --label-names normal,pneumonia \\
        --name cxr-pneumonia --version 1.0.0 --output-dir models/bundles/cxr-pneumonia

This module checks the shared flags and hands over to ``tools.modelling.finetune_text`` or
``tools.modelling.finetune_image``. Bad data ends with one ``error:`` line naming the file (and row) and
exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from models.bundle import BundleError
from tools.modelling.datasets import DataError

DEFAULT_SEED = 20240601


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medroute finetune", description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("--train-data", required=True, help="text: id,text,label CSV; image: .npz, or path,label CSV")
    parser.add_argument("--eval-data", required=True, help="held-out data (the same .npz: its val split)")
    parser.add_argument("--model-type", choices=("text", "image"), required=True)
    parser.add_argument("--output-dir", required=True, help="bundle directory to write (replaced)")
    parser.add_argument("--num-epochs", type=int, default=None, help="image default 8")
    parser.add_argument(
        "--base-model", default=None, help="image: efficientnet-lite0 (default); text: see finetune_text"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="image default 64")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (image default 1e-3)")
    parser.add_argument("--max-length", type=int, default=None, help="text: tokens kept per text")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--class-weighting", choices=("balanced", "none"), default="balanced")
    parser.add_argument("--name", default=None, help="bundle name (default: the output folder's name)")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument(
        "--feedback",
        nargs="?",
        const="kafka",
        metavar="SOURCE",
        help="text: add reviewers' corrections of this model's decisions to the training data, from the "
        "feedback topic (default) or a JSON-lines file (medroute tail feedback --from-beginning)",
    )
    parser.add_argument("--feedback-model", default=None, help="whose decisions' corrections (default: --name)")
    encoder = parser.add_argument_group("text encoders only (--base-model minilm, e5-small or a folder)")
    encoder.add_argument(
        "--head-tokens",
        type=int,
        default=None,
        help="tokens kept from the start of a long text (the rest of --max-length from its end; default half)",
    )
    encoder.add_argument("--lora-rank", type=int, default=16, help="rank of the LoRA adapters")
    encoder.add_argument(
        "--train-layers",
        type=int,
        default=None,
        help="adapt only the top N blocks (the frozen "
        "blocks below run once per text, not once per epoch: much faster on CPUs; default all)",
    )
    encoder.add_argument(
        "--cache-dir",
        default=None,
        help="keep the frozen blocks' token states here (a retrain on more data computes only the new texts)",
    )
    encoder.add_argument("--patience", type=int, default=2, help="epochs without eval macro-F1 gain before stopping")
    image = parser.add_argument_group("image only")
    image.add_argument("--image-size", type=int, default=64, help="network input side in pixels")
    image.add_argument("--backbone-stages", type=int, default=5, help="EfficientNet-Lite0 stages kept (1-7)")
    image.add_argument("--label-names", default=None, help="comma-separated names of an npz's labels 0, 1, ...")
    image.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser


def validate(args: argparse.Namespace) -> None:
    for flag in ("train_data", "eval_data"):
        if not Path(getattr(args, flag)).exists():
            raise DataError(f"{getattr(args, flag)}: no such file or folder (--{flag.replace('_', '-')})")
    positive = {"num_epochs": args.num_epochs, "batch_size": args.batch_size, "max_length": args.max_length}
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise DataError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise DataError(f"--lr must be positive, got {args.lr}")
    output = Path(args.output_dir)
    if output.exists() and not output.is_dir():
        raise DataError(f"--output-dir {output} exists and is not a folder")


def add_feedback(args: argparse.Namespace) -> None:
    """Point ``--train-data`` at a copy with the reviewers' corrections appended (beside the output bundle)."""
    from tools.modelling.feedback import with_feedback

    output = Path(args.output_dir)
    name = args.feedback_model or args.name or output.name
    merged = output.parent / f"{output.name}.train-with-feedback.csv"
    merged, added = with_feedback(Path(args.train_data), args.feedback, name, merged)
    print(f"{added} reviewer correction(s) of {name} added: training on {merged}", file=sys.stderr)
    args.train_data = str(merged)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command = shlex.join(["medroute", "finetune", *argv])  # recorded in the manifest: how to rebuild
    try:
        validate(args)
        if args.feedback and args.model_type == "image":
            raise DataError("--feedback adds text corrections; image corrections are not used for training yet")
        if args.feedback:
            add_feedback(args)
        if args.model_type == "image":
            from tools.modelling import finetune_image

            return finetune_image.run(args)
        from tools.modelling import finetune_text

        if not finetune_text.is_tfidf(args.base_model):
            from tools.modelling import finetune_encoder

            return finetune_encoder.run(args)
        return finetune_text.run(args)
    except (DataError, BundleError) as exc:
        print(f"medroute finetune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
