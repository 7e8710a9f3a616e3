"""Benchmark plans: what ``unsup bench`` runs, as data.

A plan is a YAML file (or the same as a dict)::

    title: Generative family
    data: fashion-mnist        # default for every entry
    budget: 10m                # default pretraining budget: images (60k) or time (90s, 10m)
    labels: [1, 10, 100, all]
    label_seeds: 3
    split: test                # or "validation": probe on a fixed hold-out of the training split
    family_metrics: true       # each method's own numbers (Gabor share, FCD, next-frame MSE, ...)
    supervised: true           # the supervised reference (false: a screen that compares entries only)
    entries:
      - method: infogan
        name: infogan-300k     # the row's label (default: the method's name), unique
        options: {lr: 0.0002}  # method config options, as `-o key=value`
        budget: 300k
        seeds: [0, 1, 2]       # pretraining seeds (default [0])
        supervised: false      # this entry without the supervised reference (default: the plan's)
        floors:                # reported met / MISSED on the results page
          code_accuracy: ">= 0.5"     # a key of the method's family_metrics
          linear@100: ">= 0.844"      # or a probe number: linear@N / knn@N
          knn@10: "above random"      # significantly above a reference (random, raw or supervised)

Every entry runs through the same protocol (``unsup.evaluate``) and the same
report writer; the plan only says what to run.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .data import parse_label_budgets
from .errors import UnsupError
from .methods.base import config_from_dict
from .train.budget import parse_budget

PLAN_KEYS = {"title", "data", "budget", "labels", "label_seeds", "split", "family_metrics", "supervised", "entries"}
ENTRY_KEYS = {"method", "name", "options", "budget", "seeds", "data", "floors", "supervised"}
SPLITS = ("test", "validation")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass
class Entry:
    method: str
    name: str
    data: str
    budget: str
    options: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    floors: dict = field(default_factory=dict)
    supervised: bool | None = None  # None: the plan's setting

    def spec(self) -> dict:
        """What a result must match to be reused by a resumed bench."""
        return {"method": self.method, "data": self.data, "budget": self.budget, "options": self.options, "seeds": self.seeds}


@dataclass
class Plan:
    entries: list[Entry]
    title: str = ""
    labels: list = field(default_factory=lambda: [1, 10, 100, "all"])
    label_seeds: int = 3
    split: str = "test"
    family_metrics: bool = True
    supervised: bool = True


def _check_keys(where: str, given: dict, allowed: set) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UnsupError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def parse_plan(raw: dict, where: str = "plan", data: str = "fashion-mnist", budget: str = "2m") -> Plan:
    """A validated plan from its dict form; ``data`` and ``budget`` are the defaults."""
    from .registry import get_method

    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        raise UnsupError(f"{where}: a plan is a mapping with a non-empty list under 'entries'")
    _check_keys(where, raw, PLAN_KEYS)
    data, budget = str(raw.get("data", data)), str(raw.get("budget", budget))
    labels = raw.get("labels", [1, 10, 100, "all"])
    labels = parse_label_budgets(",".join(str(x) for x in labels) if isinstance(labels, list) else str(labels))
    label_seeds = raw.get("label_seeds", 3)
    if not isinstance(label_seeds, int) or isinstance(label_seeds, bool) or label_seeds < 1:
        raise UnsupError(f"{where}: label_seeds must be a whole number >= 1, got {label_seeds!r}")
    split = raw.get("split", "test")
    if split not in SPLITS:
        raise UnsupError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    entries, names = [], set()
    for i, e in enumerate(raw["entries"]):
        at = f"{where}: entry {i + 1}"
        if isinstance(e, str):
            e = {"method": e}
        if not isinstance(e, dict) or "method" not in e:
            raise UnsupError(f"{at}: give at least 'method', e.g. {{method: simclr}}")
        _check_keys(at, e, ENTRY_KEYS)
        cls = get_method(str(e["method"]))  # an unknown method or option fails before anything runs
        name = str(e.get("name", e["method"]))
        if name in names or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise UnsupError(f"{at}: the name {name!r} is {'used twice' if name in names else 'not a plain file name'}")
        names.add(name)
        seeds = e.get("seeds", [0])
        if not isinstance(seeds, list) or not seeds or not all(type(s) is int and 0 <= s < 2**31 for s in seeds):
            raise UnsupError(f"{at}: seeds must be a list of whole numbers from 0 to 2^31-1, e.g. [0, 1, 2]")
        options = e.get("options") or {}
        floors = e.get("floors") or {}
        if not isinstance(options, dict) or not isinstance(floors, dict):
            raise UnsupError(f"{at}: options and floors must be mappings")
        for key, rule in floors.items():
            parse_rule(f"{at}: floor {key}", rule)
        try:
            config_from_dict(cls.Config, options)
        except UnsupError as exc:
            raise UnsupError(f"{at}: {exc}") from None
        entry_budget = str(e.get("budget", budget))
        parse_budget(entry_budget)
        supervised = e.get("supervised")
        if supervised is not None and not isinstance(supervised, bool):
            raise UnsupError(f"{at}: supervised must be true or false, got {supervised!r}")
        entries.append(Entry(str(e["method"]), name, str(e.get("data", data)), entry_budget, dict(options), list(seeds),
                             dict(floors), supervised))
    flags = {key: raw.get(key, True) for key in ("family_metrics", "supervised")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise UnsupError(f"{where}: {key} must be true or false, got {value!r}")
    plan = Plan(entries, str(raw.get("title", "")), labels, label_seeds, split, **flags)
    for entry in plan.entries:
        if entry.supervised is None:
            entry.supervised = plan.supervised
    return plan


def load_plan(path: str | Path, data: str = "fashion-mnist", budget: str = "2m") -> Plan:
    path = Path(path)
    if not path.is_file():
        raise UnsupError(f"plan {path} not found; give a YAML file such as benchmarks/plans/landscape.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UnsupError(f"plan {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    return parse_plan(raw, str(path), data, budget)


REFERENCE_FIELDS = {"random": "vs_random", "raw": "vs_raw", "supervised": "vs_supervised"}


def parse_rule(where: str, rule) -> tuple[str, float | str]:
    """``>= 0.5`` -> (">=", 0.5); ``above random`` -> ("above", "random")."""
    text = str(rule).strip()
    m = re.fullmatch(r"(above|below)\s+(random|raw|supervised)", text)
    if m:
        return m.group(1), m.group(2)
    m = re.fullmatch(r"(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)", text)
    if not m:
        raise UnsupError(f"{where}: bad rule {rule!r}; write e.g. '>= 0.5' or 'above random' (also raw, supervised)")
    return m.group(1), float(m.group(2))


def probe_row(result: dict, key: str) -> dict | None:
    """``linear@100`` / ``knn@all``: that probe row of the result."""
    m = re.fullmatch(r"(linear|knn)@(\d+|all)", key)
    if not m:
        return None
    n = m.group(2) if m.group(2) == "all" else int(m.group(2))
    return next((r for r in result["results"] if r["classifier"] == m.group(1) and r["labels_per_class"] == n), None)


def check_floors(result: dict, floors: dict) -> list[dict]:
    """Each floor with its measured value and whether it holds (None: not measured)."""
    out = []
    for key, rule in floors.items():
        op, bound = parse_rule(f"floor {key}", rule)
        row = probe_row(result, key)
        if op in ("above", "below"):  # significance against a reference: the 95% interval excludes zero
            iv = (row or {}).get(REFERENCE_FIELDS[bound])
            value = None if iv is None else iv["diff"]
            met = None if iv is None else bool(iv["significant"] and (iv["diff"] > 0) == (op == "above"))
            out.append({"name": key, "rule": f"{op} {bound}", "value": value, "met": met,
                        **({"low": iv["low"], "high": iv["high"]} if iv is not None else {})})
            continue
        value = row["accuracy_mean"] if row is not None else (result.get("metrics") or {}).get(key)
        met = None if value is None else bool(_OPS[op](value, bound))
        out.append({"name": key, "rule": f"{op} {bound:g}", "value": value, "met": met})
    return out
