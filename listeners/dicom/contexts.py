"""The presentation contexts the listener accepts: every storage SOP class in the common transfer
syntaxes, compressed ones included (the dataset is stored as received, never transcoded), and
Verification (C-ECHO)."""

from __future__ import annotations

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
]


class _SharedContexts(list[PresentationContext]):
    """pynetdicom deep-copies the server's contexts for every association (~170 contexts x 16 transfer
    syntaxes: tens of ms of CPU per association). Negotiation only reads them, so all associations
    share one list."""

    def __deepcopy__(self, memo: dict[int, object]) -> _SharedContexts:
        return self


def supported_contexts() -> list[PresentationContext]:
    storage = AllStoragePresentationContexts
    contexts = _SharedContexts(build_context(c.abstract_syntax, TRANSFER_SYNTAXES) for c in storage)
    contexts.append(build_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return contexts
