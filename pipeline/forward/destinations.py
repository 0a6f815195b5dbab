"""Destinations from YAML (``MEDROUTE_DESTINATIONS``), checked before anything starts; errors read
``file:line: what is wrong``.

::

    destinations:
      pacs:                              # the name routing rules use
        type: dicom                      # dicom | mllp | http | folder | kafka
        host: pacs.hospital.local
        port: 104
        called_ae: PACS
        calling_ae: MEDROUTE             # optional
        tls: {ca: /etc/medroute/ca.pem, cert: ..., key: ...}   # optional, every network type
      ehr-documents:
        type: mllp
        host: 10.1.2.3
        port: 6661
      fhir-intake:
        type: http
        url: https://intake.hospital.local/fhir/Binary
        headers: {Authorization: "env:INTAKE_TOKEN"}   # "env:NAME": the value of NAME (or NAME_FILE)
        body: decision                   # raw (the item) | decision (the decision as JSON)
      review-queue:
        type: folder
        path: /srv/medroute/review
        pattern: "{date}/{kind}/{message_id}.{ext}"
      analytics:
        type: kafka
        topic: analytics.items
        body: decision

Every destination also takes ``kinds`` (hl7 and/or dicom, default: what its type carries), ``concurrency``
(deliveries in flight, default 4), ``attempts`` (default 10), ``timeout`` (seconds per attempt, default 30),
``backoff: {initial, maximum, multiplier, jitter}`` and ``breaker: {failures, open_seconds, max_open_seconds}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from medroute.config import named_secret
from pipeline.forward.naming import check_pattern
from pipeline.forward.policy import Backoff

TYPES = ("dicom", "mllp", "http", "folder", "kafka")
KINDS = ("hl7", "dicom")
# What each type can carry: HL7 v2 is not a DICOM dataset, and the reverse.
TYPE_KINDS = {"dicom": ("dicom",), "mllp": ("hl7",), "http": KINDS, "folder": KINDS, "kafka": KINDS}
BODIES = ("raw", "decision")
_COMMON = ("type", "kinds", "concurrency", "attempts", "timeout", "backoff", "breaker")
_TYPE_KEYS = {
    "dicom": ("host", "port", "called_ae", "calling_ae", "tls", "max_pdu"),
    "mllp": ("host", "port", "tls"),
    "http": ("url", "method", "headers", "body", "tls"),
    "folder": ("path", "pattern"),
    "kafka": ("topic", "body"),
}
_REQUIRED = {"dicom": ("host", "port", "called_ae"), "mllp": ("host", "port"), "http": ("url",), "folder": ("path",),
             "kafka": ("topic",)}
_TLS_KEYS = ("ca", "cert", "key", "server_hostname")


class DestinationsError(Exception):
    """An unusable destinations file; the message reads ``file:line: what is wrong``."""


@dataclass(frozen=True)
class Tls:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_hostname: str | None = None


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    open_seconds: float = 5.0
    max_open_seconds: float = 60.0


@dataclass(frozen=True)
class Destination:
    """One destination: its name, type, type-specific ``options`` and delivery policy."""

    name: str
    type: str
    options: Mapping[str, Any]
    kinds: tuple[str, ...]
    concurrency: int = 4
    attempts: int = 10
    timeout: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    tls: Tls | None = None
    line: int = 0

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class Destinations:
    by_name: Mapping[str, Destination]
    source: str = "<destinations>"

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.by_name.values())


def load_destinations(path: str | Path) -> Destinations:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DestinationsError(f"{path}: cannot read the destinations: {exc}") from None
    return parse_destinations(text, str(path))


def parse_destinations(text: str, source: str = "<destinations>") -> Destinations:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DestinationsError(f"{source}:{mark.line + 1 if mark else 1}: invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise DestinationsError(f"{source}:1: invalid YAML: {exc}") from None
    return _Reader(source).destinations(root)


def resolve_header(value: str) -> str:
    """A header value, or the secret it names (``env:NAME``: the variable NAME or the file NAME_FILE)."""
    if value.startswith("env:"):
        name = value[4:]
        secret = named_secret(name)
        if secret is None:
            raise DestinationsError(f"header value names {name}, which is not set")
        return secret
    return value


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: Node | None, message: str) -> DestinationsError:
        return DestinationsError(f"{self.source}:{node.start_mark.line + 1 if node is not None else 1}: {message}")

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or not key_node.value:
                raise self.error(key_node, f"{what} has a key that is not a name")
            if key_node.value in entries:
                raise self.error(key_node, f"{key_node.value!r} appears twice in {what}")
            entries[key_node.value] = (key_node, value_node)
        return entries

    def destinations(self, root: Node | None) -> Destinations:
        if root is None:
            raise self.error(None, "the file is empty; it needs a 'destinations:' mapping")
        top = self.mapping(root, "the file")
        for key, (key_node, _) in top.items():
            if key != "destinations":
                raise self.error(key_node, f"unknown top-level key {key!r} (only 'destinations' is allowed)")
        if "destinations" not in top:
            raise self.error(root, "missing 'destinations:' mapping")
        entries = self.mapping(top["destinations"][1], "'destinations'")
        if not entries:
            raise self.error(top["destinations"][1], "'destinations' is empty")
        return Destinations({name: self.destination(name, node) for name, (_, node) in entries.items()}, self.source)

    def destination(self, name: str, node: Node) -> Destination:
        entries = self.mapping(node, f"destination {name!r}")
        if "type" not in entries:
            raise self.error(node, f"destination {name!r} has no 'type' (one of {', '.join(TYPES)})")
        kind = self.scalar(entries["type"][1], str, f"'type' of {name!r}")
        if kind not in TYPES:
            raise self.error(entries["type"][1], f"unknown type {kind!r} of {name!r}; use one of {', '.join(TYPES)}")
        allowed = (*_COMMON, *_TYPE_KEYS[kind])
        for key, (key_node, _) in entries.items():
            if key not in allowed:
                raise self.error(
                    key_node, f"unknown key {key!r} for a {kind} destination; allowed: {', '.join(allowed)}"
                )
        for key in _REQUIRED[kind]:
            if key not in entries:
                raise self.error(node, f"{kind} destination {name!r} needs {key!r}")
        options = {key: self.plain(value) for key, (_, value) in entries.items() if key in _TYPE_KEYS[kind]}
        self.check_options(name, options, entries)
        kinds = TYPE_KINDS[kind]
        if "kinds" in entries:
            kinds = tuple(self.plain(entries["kinds"][1]) if isinstance(entries["kinds"][1], SequenceNode)
                          else [self.plain(entries["kinds"][1])])
            for item in kinds:
                if item not in TYPE_KINDS[kind]:
                    raise self.error(entries["kinds"][1], f"a {kind} destination cannot carry {item!r} items")
        return Destination(
            name=name,
            type=kind,
            options=options,
            kinds=tuple(kinds),
            concurrency=self.number(entries, "concurrency", int, 4, 1),
            attempts=self.number(entries, "attempts", int, 10, 1),
            timeout=self.number(entries, "timeout", float, 30.0, 0.1),
            backoff=self.backoff(entries.get("backoff")),
            breaker=self.breaker(entries.get("breaker")),
            tls=self.tls(entries.get("tls")),
            line=node.start_mark.line + 1,
        )

    def check_options(self, name: str, options: dict[str, Any], entries: dict[str, tuple[Node, Node]]) -> None:
        if "port" in options and (not isinstance(options["port"], int) or not 0 < options["port"] < 65536):
            raise self.error(entries["port"][1], f"'port' of {name!r} must be a TCP port number")
        for key in ("host", "called_ae", "calling_ae", "url", "path", "topic", "pattern", "method"):
            if key in options and (not isinstance(options[key], str) or not options[key].strip()):
                raise self.error(entries[key][1], f"{key!r} of {name!r} must be a non-empty text")
        for key in ("called_ae", "calling_ae"):
            if key in options and len(options[key]) > 16:
                raise self.error(entries[key][1], f"{key!r} of {name!r} is longer than an AE title (16 characters)")
        if "url" in options and not options["url"].startswith(("http://", "https://")):
            raise self.error(entries["url"][1], f"'url' of {name!r} must start with http:// or https://")
        if "body" in options and options["body"] not in BODIES:
            raise self.error(entries["body"][1], f"'body' of {name!r} must be one of {', '.join(BODIES)}")
        if "headers" in options and (
            not isinstance(options["headers"], dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in options["headers"].items())
        ):
            raise self.error(entries["headers"][1], f"'headers' of {name!r} must map names to texts")
        if "pattern" in options:
            problem = check_pattern(options["pattern"])
            if problem:
                raise self.error(entries["pattern"][1], f"'pattern' of {name!r}: {problem}")

    def plain(self, node: Node) -> Any:
        try:
            return yaml.SafeLoader("").construct_document(node)  # type: ignore[no-untyped-call]
        except yaml.YAMLError as exc:
            raise self.error(node, f"unreadable value: {exc}") from None

    def scalar(self, node: Node, kind: type, what: str) -> Any:
        value = self.plain(node)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.error(node, f"{what} must be a {kind.__name__}")
        return value

    def number(self, entries: Mapping[str, tuple[Node, Node]], key: str, kind: type, default: Any, low: float) -> Any:
        if key not in entries:
            return default
        node = entries[key][1]
        value = self.plain(node)
        wrong = kind is int and not isinstance(value, int)
        if isinstance(value, bool) or not isinstance(value, int | float) or wrong:
            raise self.error(node, f"{key!r} must be a{'n integer' if kind is int else ' number'}")
        if value < low:
            raise self.error(node, f"{key!r} must be at least {low}")
        return kind(value)

    def section(self, node: Node, what: str, keys: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        entries = self.mapping(node, what)
        for key, (key_node, _) in entries.items():
            if key not in keys:
                raise self.error(key_node, f"unknown key {key!r} in {what}; allowed: {', '.join(keys)}")
        return entries

    def backoff(self, entry: tuple[Node, Node] | None) -> Backoff:
        if entry is None:
            return Backoff()
        entries = self.section(entry[1], "'backoff'", ("initial", "maximum", "multiplier", "jitter"))
        backoff = Backoff(
            initial=self.number(entries, "initial", float, 1.0, 0.0),
            maximum=self.number(entries, "maximum", float, 60.0, 0.0),
            multiplier=self.number(entries, "multiplier", float, 2.0, 1.0),
            jitter=self.number(entries, "jitter", float, 0.5, 0.0),
        )
        if backoff.jitter > 1:
            raise self.error(entries["jitter"][1], "'jitter' is a fraction from 0 to 1")
        return backoff

    def breaker(self, entry: tuple[Node, Node] | None) -> BreakerSettings:
        if entry is None:
            return BreakerSettings()
        entries = self.section(entry[1], "'breaker'", ("failures", "open_seconds", "max_open_seconds"))
        return BreakerSettings(
            failures=self.number(entries, "failures", int, 5, 1),
            open_seconds=self.number(entries, "open_seconds", float, 5.0, 0.0),
            max_open_seconds=self.number(entries, "max_open_seconds", float, 60.0, 0.0),
        )

    def tls(self, entry: tuple[Node, Node] | None) -> Tls | None:
        if entry is None:
            return None
        entries = self.section(entry[1], "'tls'", _TLS_KEYS)
        values = {key: self.scalar(value, str, f"'tls.{key}'") for key, (_, value) in entries.items()}
        if ("cert" in values) != ("key" in values):
            raise self.error(entry[1], "'tls' needs both 'cert' and 'key' for a client certificate, or neither")
        return Tls(**values)
