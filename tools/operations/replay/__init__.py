"""``medroute replay``: reclassify a range of a topic with another model version; ``replay diff`` compares.

medroute replay --topic hl7.inbound --from 2026-03-01T00:00 --to 2026-03-02T00:00 --model doctype-en@1.1.0
medroute replay --replay-id ID          # resume after a crash (or rerun the same command)
medroute replay diff ID [--output DIR]  # replayed vs live decisions of the same messages
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "diff":
        from tools.operations.replay.diff_command import main as diff_main

        return diff_main(args[1:])
    from tools.operations.replay.command import main as run_main

    return run_main(args)
