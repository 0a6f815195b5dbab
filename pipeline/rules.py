"""Routing rules from YAML, checked before anything starts; every error names its file and line.

The file (``MEDROUTE_ROUTES``, default ``pipeline/routes.default.yaml``)::

    rules:
      - name: radiology-reports       # required, unique; decisions name it
        label: radiology_report       # conditions (all optional; all must hold):
        destinations: [ris]           # required, one or more names

Conditions: ``kind`` (hl7 | dicom), ``message_type`` (glob such as ``ORU^R01*`` or ``DICOM^CR``),
``label``, ``sending_application`` (for DICOM: the calling AE title), ``sending_facility``,
``modality`` and ``body_part`` (DICOM only; globs, case-insensitive) (each one value or a list of
alternatives), ``min_confidence`` / ``max_confidence`` (0..1, inclusive), ``below_threshold`` and
``has_text`` (true | false). The last rule must have no conditions: it is the default.

Label names are checked against the labels of the models loaded for each kind: a rule limited to
``kind: dicom`` against the image model's, a rule without ``kind`` against those of every loaded
model. A kind without a model (``MEDROUTE_IMAGE_MODEL=none``) is not checked: its label rules
cannot fire.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from medroute.config import SettingsArea
from pipeline.routing import CONDITIONS, Rule, Rules

DEFAULT_ROUTES = Path(__file__).with_name("routes.default.yaml")
# The worker's settings (pipeline.settings); declared here because the rules file is one of them.
WORKER = SettingsArea("Worker", ("worker",))
ROUTES = WORKER("MEDROUTE_ROUTES", None, "the routing rules file", shown_default="`pipeline/routes.default.yaml`",
                processes=("worker", "web", "tools"))
KINDS = ("hl7", "dicom")
_LIST_CONDITIONS = ("kind", "message_type", "label", "sending_application", "sending_facility", "modality", "body_part")
_BOOL_CONDITIONS = ("below_threshold", "has_text")
_CONFIDENCE_CONDITIONS = ("min_confidence", "max_confidence")
KEYS = ("name", "destinations", *CONDITIONS)


class RulesError(Exception):
    """An unusable rules file; the message reads ``file:line: what is wrong``."""


def routes_path() -> Path:
    return Path(ROUTES() or DEFAULT_ROUTES)


LabelSets = Mapping[str, Collection[str]] | Collection[str]


def load_rules(path: str | Path | None = None, labels: LabelSets | None = None) -> Rules:
    """Read and check a rules file; ``labels``, when given, are the only labels a rule may name.

    ``labels`` maps a kind to the labels of the model loaded for it; a plain collection is the
    labels of the HL7 text model.
    """
    path = Path(path) if path is not None else routes_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the routing rules: {exc}") from None
    return parse_rules(text, str(path), labels)


def parse_rules(text: str, source: str = "<rules>", labels: LabelSets | None = None) -> Rules:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise RulesError(f"{source}:{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}:1: invalid YAML: {exc}") from None
    return _Reader(source, labels).rules(root)


class _Reader:
    def __init__(self, source: str, labels: LabelSets | None) -> None:
        self.source = source
        # A plain collection is the text model's labels (how the worker called this before images).
        self.labels_by_kind = labels if labels is None or isinstance(labels, Mapping) else {"hl7": labels}

    def known_labels(self, kinds: Collection[str] | None) -> set[str] | None:
        """The labels a rule for ``kinds`` (None: any kind) may name; None when they are not checked."""
        if self.labels_by_kind is None:
            return None
        checked = [kind for kind in (kinds or self.labels_by_kind) if kind in self.labels_by_kind]
        if not checked:
            return None
        return {label for kind in checked for label in self.labels_by_kind[kind]}

    def error(self, node: Node | None, message: str) -> RulesError:
        line = node.start_mark.line + 1 if node is not None else 1
        return RulesError(f"{self.source}:{line}: {message}")

    def rules(self, root: Node | None) -> Rules:
        if root is None:
            raise self.error(None, "the file is empty; it needs a 'rules:' list ending in a default rule")
        top = self.mapping(root, "the file")
        unknown = [key for key in top if key != "rules"]
        if unknown:
            raise self.error(top[unknown[0]][0], f"unknown top-level key {unknown[0]!r} (only 'rules' is allowed)")
        if "rules" not in top:
            raise self.error(root, "missing 'rules:' list")
        rules_node = top["rules"][1]
        if not isinstance(rules_node, SequenceNode) or not rules_node.value:
            raise self.error(rules_node, "'rules' must be a non-empty list of rules")
        rules = [self.rule(node) for node in rules_node.value]
        self.check_order(rules)
        return Rules(tuple(rules), self.source)

    def check_order(self, rules: list[Rule]) -> None:
        seen: dict[str, int] = {}
        for rule in rules:
            if rule.name in seen:
                raise RulesError(
                    f"{self.source}:{rule.line}: rule name {rule.name!r} is already used on line {seen[rule.name]}"
                )
            seen[rule.name] = rule.line
        for rule in rules[:-1]:
            if rule.is_default:
                raise RulesError(
                    f"{self.source}:{rule.line}: rule {rule.name!r} has no conditions, so the rules "
                    "after it could never fire; only the last rule may be the default"
                )
        last = rules[-1]
        if not last.is_default:
            raise RulesError(
                f"{self.source}:{last.line}: the last rule ({last.name!r}) has conditions; the rules "
                "must end with a default rule that has none"
            )

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping node, each with its key node (for its line) and its value node."""
        if not isinstance(node, MappingNode):
            raise self.error(node, f"{what} must be a mapping of keys to values")
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                raise self.error(key_node, f"{what} has a key that is not a name")
            if key in entries:
                raise self.error(key_node, f"key {key!r} appears twice in {what}")
            entries[key] = (key_node, value_node)
        return entries

    def rule(self, node: Node) -> Rule:
        entries = self.mapping(node, "a rule")
        for key, (key_node, _) in entries.items():
            if key not in KEYS:
                raise self.error(key_node, f"unknown key {key!r} in a rule; allowed: {', '.join(KEYS)}")
        if "name" not in entries:
            raise self.error(node, "rule without a 'name'")
        name = self.text(entries["name"][1], "'name'")
        if "destinations" not in entries:
            raise self.error(node, f"rule {name!r} has no 'destinations'")
        values: dict[str, Any] = {
            "name": name,
            "destinations": self.names(entries["destinations"][1], f"'destinations' of rule {name!r}", single=False),
            "line": node.start_mark.line + 1,
        }
        for key in _LIST_CONDITIONS:
            if key in entries:
                values[key] = self.names(entries[key][1], f"'{key}' of rule {name!r}")
        for key in _BOOL_CONDITIONS:
            if key in entries:
                values[key] = self.boolean(entries[key][1], f"'{key}' of rule {name!r}")
        for key in _CONFIDENCE_CONDITIONS:
            if key in entries:
                values[key] = self.confidence(entries[key][1], f"'{key}' of rule {name!r}")
        self.check_values(values, entries)
        return Rule(**values)

    def check_values(self, values: dict[str, Any], entries: dict[str, tuple[Node, Node]]) -> None:
        name = values["name"]
        for kind in values.get("kind") or ():
            if kind not in KINDS:
                raise self.error(entries["kind"][1], f"unknown kind {kind!r} in rule {name!r}; use one of {KINDS}")
        known = self.known_labels(values.get("kind"))
        if known is not None:
            for label in values.get("label") or ():
                if label not in known:
                    raise self.error(
                        entries["label"][1],
                        f"rule {name!r} names label {label!r}, which the model "
                        f"does not have; its labels are: {', '.join(sorted(known))}",
                    )
        low, high = values.get("min_confidence"), values.get("max_confidence")
        if low is not None and high is not None and low > high:
            raise self.error(
                entries["min_confidence"][1],
                f"rule {name!r}: min_confidence {low} is above max_confidence {high}, so it could never match",
            )

    def value(self, node: Node) -> Any:
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.error(node, f"unreadable value: {exc.problem}") from None

    def text(self, node: Node, what: str) -> str:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip():
            raise self.error(node, f"{what} must be a non-empty text")
        return value.strip()

    def names(self, node: Node, what: str, single: bool = True) -> tuple[str, ...]:
        """A list of non-empty texts; with ``single``, one text alone is accepted too."""
        if single and isinstance(node, ScalarNode):
            return (self.text(node, what),)
        if not isinstance(node, SequenceNode) or not node.value:
            expected = "a text or a non-empty list of texts" if single else "a non-empty list, e.g. [ehr-inbox]"
            raise self.error(node, f"{what} must be {expected}")
        return tuple(self.text(item, what) for item in node.value)

    def boolean(self, node: Node, what: str) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise self.error(node, f"{what} must be true or false")
        return value

    def confidence(self, node: Node, what: str) -> float:
        value = self.value(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise self.error(node, f"{what} must be a number from 0 to 1")
        return float(value)
