"""A minimal PACS for ``medroute up``: a pynetdicom C-STORE SCP that writes each instance it receives to a
directory (``<SOP Instance UID>.dcm``), so a new user sees forwarded images arrive.
Run: ``python -m shell.sample_pacs --port P --dir DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

AE_TITLE = "SAMPLE-PACS"


def serve(port: int, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)

    def store(event: evt.Event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        temporary = directory / f".{uid}.tmp"
        temporary.write_bytes(event.encoded_dataset())
        temporary.replace(directory / f"{uid}.dcm")
        return 0x0000

    ae = AE(ae_title=AE_TITLE)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, store)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    serve(args.port, args.dir)


if __name__ == "__main__":
    main()
