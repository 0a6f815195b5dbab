"""Replayed decisions against the live ones for the same messages: pure counting, no Kafka.

``compute_diff`` takes the message ids of the replayed range and the last decision of each side by
message id, and returns a JSON-ready report: how many were compared, how many changed label or
destinations, the label transition matrix (rows: live, columns: replay), the destination changes,
example message ids per change, and the ids missing on either side.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_LABEL = "(no text)"  # decided on metadata alone: nothing was classified


@dataclass(frozen=True)
class DecisionView:
    """What a diff compares of one ``RoutingDecision``."""

    label: str
    destinations: tuple[str, ...]  # sorted: the same set in another order is no routing change
    rule: str
    model: str | None

    @classmethod
    def of(cls, decision: Mapping[str, Any]) -> DecisionView:
        return cls(
            label=decision.get("label") or NO_LABEL,
            destinations=tuple(sorted(decision.get("destinations") or ())),
            rule=str(decision.get("rule", "")),
            model=decision.get("model"),
        )


def label_order(labels: Iterable[str]) -> list[str]:
    """Labels sorted by name, the no-text row/column last."""
    unique = set(labels)
    return sorted(unique - {NO_LABEL}) + ([NO_LABEL] if NO_LABEL in unique else [])


def compute_diff(
    range_ids: Sequence[str],
    replayed: Mapping[str, DecisionView],
    live: Mapping[str, DecisionView],
    examples: int = 5,
) -> dict[str, Any]:
    """The report for the messages of ``range_ids`` (see the module docstring)."""
    ids = list(dict.fromkeys(range_ids))  # source order, each once
    compared = [m for m in ids if m in replayed and m in live]
    only_replayed = [m for m in ids if m in replayed and m not in live]
    only_live = [m for m in ids if m in live and m not in replayed]
    neither = [m for m in ids if m not in live and m not in replayed]

    transitions: dict[tuple[str, str], list[str]] = defaultdict(list)
    routes: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    rules: Counter[tuple[str, str]] = Counter()
    for m in compared:
        before, after = live[m], replayed[m]
        transitions[(before.label, after.label)].append(m)
        if before.destinations != after.destinations:
            routes[(before.destinations, after.destinations)].append(m)
        if before.rule != after.rule:
            rules[(before.rule, after.rule)] += 1

    labels = label_order(label for pair in transitions for label in pair)
    index = {label: n for n, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for (before, after), members in transitions.items():
        matrix[index[before]][index[after]] = len(members)
    label_changed = sum(len(members) for (before, after), members in transitions.items() if before != after)
    destinations_changed = sum(len(members) for members in routes.values())
    changed = sum(
        1 for m in compared if live[m].label != replayed[m].label or live[m].destinations != replayed[m].destinations
    )

    return {
        "counts": {
            "in_range": len(ids),
            "replayed": len(compared) + len(only_replayed),
            "live": len(compared) + len(only_live),
            "compared": len(compared),
            "unchanged": len(compared) - changed,
            "changed": changed,
            "label_changed": label_changed,
            "destinations_changed": destinations_changed,
            "rule_changed": sum(rules.values()),
        },
        "missing": {
            "live": {"count": len(only_replayed), "examples": only_replayed[:examples]},
            "replay": {"count": len(only_live), "examples": only_live[:examples]},
            "both": {"count": len(neither), "examples": neither[:examples]},
        },
        "labels": labels,
        "matrix": matrix,
        "label_transitions": [
            {"live": before, "replay": after, "count": len(members), "examples": members[:examples]}
            for (before, after), members in _by_count(transitions)
            if before != after
        ],
        "destination_changes": [
            {"live": list(before), "replay": list(after), "count": len(members), "examples": members[:examples]}
            for (before, after), members in _by_count(routes)
        ],
        "rule_changes": [
            {"live": before, "replay": after, "count": count} for (before, after), count in rules.most_common()
        ],
        "models": {
            "live": dict(Counter(live[m].model or "(none)" for m in compared).most_common()),
            "replay": dict(Counter(replayed[m].model or "(none)" for m in compared).most_common()),
        },
    }


def _by_count(groups: Mapping[Any, list[str]]) -> list[tuple[Any, list[str]]]:
    """Groups largest first, ties in a stable order."""
    return sorted(groups.items(), key=lambda item: (-len(item[1]), str(item[0])))


def summary_lines(report: Mapping[str, Any], top: int = 10) -> list[str]:
    """A human-readable summary of a report, for the terminal."""
    counts = report["counts"]
    missing = report["missing"]
    lines = [
        f"in range {counts['in_range']}, replayed {counts['replayed']}, live {counts['live']}, "
        f"compared {counts['compared']}",
        f"changed {counts['changed']}: label {counts['label_changed']}, destinations {counts['destinations_changed']}"
        f" (rule {counts['rule_changed']}); unchanged {counts['unchanged']}",
        f"missing: no live decision {missing['live']['count']}, not replayed {missing['replay']['count']}, "
        f"neither {missing['both']['count']}",
    ]
    if report["label_transitions"]:
        lines.append("label transitions (live -> replay):")
        lines += [f"  {t['count']:>7}  {t['live']} -> {t['replay']}" for t in report["label_transitions"][:top]]
    if report["destination_changes"]:
        lines.append("destination changes (live -> replay):")
        lines += [
            f"  {c['count']:>7}  {','.join(c['live']) or '-'} -> {','.join(c['replay']) or '-'}"
            for c in report["destination_changes"][:top]
        ]
    return lines
