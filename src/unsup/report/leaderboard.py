"""Leaderboard and report page from ``unsup probe --json`` results (evaluation protocol v5).

Input: a list of per-method results, each a dict with keys ``method``,
``family``, ``dataset``, ``budget``, ``results`` (rows with
``labels_per_class`` in 1, 10, 100, ... or ``"all"``, ``classifier`` in
``linear``/``knn``, ``accuracy_mean``, ``accuracy_std``, ``seeds``,
``accuracies``), ``references`` (``raw_pixels``, ``random_encoder``,
``supervised``; supervised rows have classifier ``supervised``; optional
``shipped_note``), and optionally ``figures`` (paths relative to
``run_dir``), ``run_dir``, ``all_labels_per_class`` (the real number of labels
per class behind ``"all"``, used to place ``"all"`` on the curves' x axis),
``pretrain_seeds``, ``pretrain_seconds``, ``probe_seconds``, ``metrics``
(name -> number) and ``floors`` (``name``, ``rule``, ``value``, ``met``).

Protocol v5 rows of a method also carry ``vs_random`` and ``vs_raw``:
``{"diff", "low", "high", "df", "significant"}``, the method minus the
reference with its 95% interval; random-encoder rows carry ``inits``. Results
without these fields (older protocols) render without marks.

Accuracies are fractions in [0, 1]; tables show them in percent with one
decimal. The gap to supervised is, at each label budget, the linear probe minus
the supervised model of the same backbone trained on the same labels, in points
(negative: below supervised).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnsupError
from .figures import Series, _new_figure, atomic_path, atomic_write_text, save_accuracy_curves, save_accuracy_panels, save_figure

DASH = "—"
CLASSIFIER_LABELS = {"linear": "linear", "knn": "k-NN"}
# (row key, mark letter, the reference in words)
INTERVALS = (("vs_random", "R", "the same encoder with random weights"), ("vs_raw", "P", "raw pixels"))
CURVE_NAME = "label-efficiency.png"
TIME_CURVES = "time-to-accuracy.png"

# --------------------------------------------------------------------------- the table model


@dataclass(eq=False)
class Entry:
    """One leaderboard row: a method or a reference, with its probe rows."""

    name: str
    family: str
    role: str  # "method" | "raw" | "random" | "supervised"
    rows: list[dict]
    owner: str | None = None  # the method whose colour it takes ("random <method>" rows)
    note: str = ""  # what the spread is over, when not only label draws ("5 inits")
    supervised: Entry | None = None  # the supervised reference its gap is measured against
    raw: Entry | None = None  # the raw-pixel reference on its probe sets
    time_to_raw: str | None = None  # training time until the k-NN monitor matched raw pixels (methods with a monitor)

    @property
    def kind(self) -> str:
        return "method" if self.role == "method" else "reference"

    def get(self, classifier: str, budget) -> dict | None:
        for row in self.rows:
            if row["classifier"] == classifier and row["labels_per_class"] == budget:
                return row
        return None

    def linear(self, budget) -> dict | None:
        """The linear-probe accuracy; for the supervised reference, its own accuracy."""
        return self.get("supervised" if self.role == "supervised" else "linear", budget)


def _norm_budget(value):
    if isinstance(value, str):
        s = value.strip().lower()
        if s == "all":
            return "all"
        if s.isdigit():
            return int(s)
        raise UnsupError(f"labels_per_class must be a positive integer or 'all', got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise UnsupError(f"labels_per_class must be a positive integer or 'all', got {value!r}")
    return int(value)


def _budget_key(b) -> tuple[int, int]:
    return (1, 0) if b == "all" else (0, int(b))


def _float_or_nan(value) -> float:
    return math.nan if value is None else float(value)


def _norm_rows(rows, where: str) -> list[dict]:
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise UnsupError(f"{where}: expected a list of result rows, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UnsupError(f"{where}[{i}]: expected a dict, got {type(row).__name__}")
        for key in ("labels_per_class", "classifier", "accuracy_mean"):
            if key not in row:
                raise UnsupError(f"{where}[{i}]: missing key {key!r}")
        r = dict(row)
        r["labels_per_class"] = _norm_budget(row["labels_per_class"])
        r["classifier"] = str(row["classifier"])
        r["accuracy_mean"] = _float_or_nan(row["accuracy_mean"])
        std = row.get("accuracy_std")
        r["accuracy_std"] = None if std is None else float(std)
        out.append(r)
    return out


def _validate(results) -> None:
    if not isinstance(results, list) or not results:
        raise UnsupError("no probe results to report: expected a non-empty list of `unsup probe --json` results")
    for i, res in enumerate(results):
        if not isinstance(res, dict):
            raise UnsupError(f"result {i}: expected a dict, got {type(res).__name__}")
        for key in ("method", "results"):
            if key not in res:
                raise UnsupError(f"result {i} ({res.get('method', '?')}): missing key {key!r}")


def _refs(res: dict) -> dict:
    refs = res.get("references")
    return refs if isinstance(refs, dict) else {}


def _ref_rows(res: dict, key: str) -> list[dict]:
    return _norm_rows(_refs(res).get(key), f"{res['method']}: references.{key}")


def _seeds_note(res: dict) -> str:
    seeds = res.get("pretrain_seeds")
    return f"{len(seeds)} pretraining seeds" if isinstance(seeds, list) and len(seeds) > 1 else ""


def _inits_note(rows: list[dict]) -> str:
    inits = sorted({int(r["inits"]) for r in rows if isinstance(r.get("inits"), (int, float))})
    if not inits:
        return ""
    return f"{inits[0]} inits" if len(inits) == 1 else f"{inits[0]}-{inits[-1]} inits"


def _signature(rows: list[dict]) -> tuple:
    """What makes two references' rows the same reference."""
    return tuple(sorted((r["classifier"], str(r["labels_per_class"]), repr(r["accuracy_mean"]), repr(r["accuracy_std"]))
                        for r in rows))


def _shared_reference(results: list[dict], key: str, name: str, role: str) -> tuple[list[Entry], dict[int, Entry]]:
    """A reference the methods usually share (raw pixels, supervised): one entry per distinct set of rows.

    Returns the entries and, per result index, the entry holding that result's rows.
    """
    groups: list[tuple[tuple, Entry, list[str]]] = []
    of: dict[int, Entry] = {}
    for i, res in enumerate(results):
        rows = _ref_rows(res, key)
        if not rows:
            continue
        sig = _signature(rows)
        group = next((g for g in groups if g[0] == sig), None)
        if group is None:
            group = (sig, Entry(name, "reference", role, rows), [])
            groups.append(group)
        group[2].append(str(res["method"]))
        of[i] = group[1]
    if len(groups) > 1:  # the methods disagree (other backbones or splits): say whose each is
        for _, entry, owners in groups:
            entry.name = f"{name} (for {', '.join(owners)})"
    return [g[1] for g in groups], of


def build_entries(results: list[dict]) -> list[Entry]:
    """Methods, then raw pixels, a random encoder per method, supervised; each linked to its supervised reference."""
    _validate(results)
    methods = [Entry(str(res["method"]), str(res.get("family", "")), "method",
                     _norm_rows(res["results"], f"{res['method']}: results"), owner=str(res["method"]), note=_seeds_note(res),
                     time_to_raw=_time_to_raw(res))
               for res in results]
    raws, raw_of = _shared_reference(results, "raw_pixels", "raw pixels", "raw")
    sups, sup_of = _shared_reference(results, "supervised", "supervised", "supervised")
    random_groups: dict[tuple, tuple[Entry, list[str]]] = {}  # methods with the same encoder share one random row
    for i, (res, method) in enumerate(zip(results, methods)):
        method.supervised, method.raw = sup_of.get(i), raw_of.get(i)
        rows = _ref_rows(res, "random_encoder")
        if rows:
            entry, owners = random_groups.setdefault(_signature(rows), (
                Entry(f"random {method.name}", "reference", "random", rows, owner=method.name, note=_inits_note(rows),
                      supervised=sup_of.get(i)), []))
            owners.append(method.name)
            if len(owners) > 1:
                entry.name = f"random encoder (for {', '.join(owners)})"
    randoms = [entry for entry, _ in random_groups.values()]
    for raw in raws:
        raw.supervised = sups[0] if sups else None
    for sup in sups:
        sup.supervised = sup
    return methods + raws + randoms + sups


def _time_to_raw(res: dict) -> str | None:
    tta = res.get("time_to_accuracy")
    if not isinstance(tta, dict) or tta.get("raw_pixels") is None:
        return None
    seconds = tta.get("seconds_to_raw")
    return "not reached" if seconds is None else _duration(seconds)


def budgets_of(entries: list[Entry]) -> list:
    found = {row["labels_per_class"] for e in entries for row in e.rows}
    return sorted(found, key=_budget_key)


def sort_budget(budgets: list):
    """The largest small (integer) budget, else 'all'."""
    small = [b for b in budgets if b != "all"]
    return max(small) if small else ("all" if budgets else None)


def _missing(row: dict | None) -> bool:
    return row is None or row.get("accuracy_mean") is None or math.isnan(row["accuracy_mean"])


def _pct(row: dict | None) -> str:
    if _missing(row):
        return DASH
    mean = 100.0 * row["accuracy_mean"]
    std = row.get("accuracy_std")
    if std is None or math.isnan(std):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100.0 * std:.1f}"


def _budget_name(b) -> str:
    return "all" if b == "all" else f"{b}/class"


# --------------------------------------------------------------------------- significance marks


def _interval(row: dict | None, key: str) -> dict | None:
    """The row's ``vs_random``/``vs_raw`` interval with ``significant`` filled in, or None."""
    iv = (row or {}).get(key)
    if not isinstance(iv, dict) or iv.get("diff") is None:
        return None
    iv = dict(iv)
    if iv.get("significant") is None and iv.get("low") is not None and iv.get("high") is not None:
        iv["significant"] = iv["low"] > 0 or iv["high"] < 0
    return iv


@dataclass
class Mark:
    symbol: str  # "▲R", "▼P"
    direction: str  # "up" | "down"
    title: str  # the difference and its interval, in words


@dataclass
class Cell:
    """A table cell: its text and its significance marks (rendered as plain text or HTML)."""

    text: str
    marks: list[Mark] = field(default_factory=list)

    def __str__(self) -> str:
        return " ".join([self.text] + [m.symbol for m in self.marks])


def _marks(row: dict | None) -> list[Mark]:
    marks = []
    for key, letter, words in INTERVALS:
        iv = _interval(row, key)
        if iv is None or not iv.get("significant"):
            continue
        up = iv["diff"] > 0
        span = ""
        if iv.get("low") is not None and iv.get("high") is not None:
            span = f", 95% interval {100.0 * iv['low']:+.1f} to {100.0 * iv['high']:+.1f}"
        marks.append(Mark(("▲" if up else "▼") + letter, "up" if up else "down",
                          f"{'above' if up else 'below'} {words}: {100.0 * iv['diff']:+.1f} points{span}"))
    return marks


def accuracy_cell(row: dict | None) -> Cell:
    """Accuracy ``mean ± std`` in percent with a mark per reference it is significantly above or below."""
    return Cell(_pct(row), [] if _missing(row) else _marks(row))


def _gap_cell(entry: Entry, budget) -> Cell:
    mine = entry.linear(budget)
    sup = entry.supervised.linear(budget) if entry.supervised is not None else None
    if _missing(mine) or _missing(sup) or mine is sup:  # the supervised row itself has no gap
        return Cell(DASH)
    return Cell(f"{100.0 * (mine['accuracy_mean'] - sup['accuracy_mean']):+.1f}")


# --------------------------------------------------------------------------- the table

GAP = "gap to supervised"
TIME = "time to raw-pixel k-NN"
GROUPS = ("linear", "k-NN", GAP, TIME)
GROUP_TITLES = {"linear": "linear probe", "k-NN": "k-NN", GAP: "gap to supervised (linear, points)", TIME: TIME}


@dataclass
class Table:
    columns: list[tuple[str, object]]  # (group, label budget) of each accuracy column
    entries: list[Entry]
    cells: list[list[Cell]]
    budgets: list

    @property
    def headers(self) -> list[str]:
        return ["method", "family"] + [group if b is None else f"{group} {_budget_name(b)}" for group, b in self.columns]

    @property
    def rows(self) -> list[list[str]]:
        return [[e.name, family_text(e)] + [str(c) for c in cells] for e, cells in zip(self.entries, self.cells)]

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries]


def family_text(e: Entry) -> str:
    return f"{e.family} ({e.note})" if e.note else e.family


def _column_cell(e: Entry, group: str, budget) -> Cell:
    if group == GAP:
        return _gap_cell(e, budget)
    if group == TIME:
        return Cell(e.time_to_raw or DASH)
    return accuracy_cell(e.linear(budget) if group == "linear" else e.get("knn", budget))


def leaderboard_table(results: list[dict]) -> Table:
    """The leaderboard as cells, sorted best first by the linear probe at the largest small label budget."""
    entries = build_entries(results)
    budgets = budgets_of(entries)
    key_budget = sort_budget(budgets)

    def sort_key(e: Entry):
        row = e.linear(key_budget) if key_budget is not None else None
        return (1, 0.0) if _missing(row) else (0, -row["accuracy_mean"])

    entries = sorted(entries, key=sort_key)
    # a screen without the supervised reference (plan key supervised: false) has no gap to show
    shown = [g for g in GROUPS if g != TIME and (g != GAP or any(e.supervised is not None for e in entries))]
    columns = [(group, b) for group in shown for b in budgets]
    if any(e.time_to_raw for e in entries):
        columns.append((TIME, None))
    cells = [[_column_cell(e, group, b) for group, b in columns] for e in entries]
    return Table(columns, entries, cells, budgets)


# --------------------------------------------------------------------------- words shared by the page and the markdown


def _uniq(results: list[dict], key: str) -> str:
    vals = []
    for r in results:
        v = r.get(key)
        if v is not None and str(v) not in vals:
            vals.append(str(v))
    return ", ".join(vals) if vals else "?"


def _describe(results: list[dict]) -> tuple[str, str]:
    return _uniq(results, "dataset"), _uniq(results, "budget")


def _duration(seconds: float) -> str:
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _number(value) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return DASH if math.isnan(value) else f"{value:.4g}"


def header_facts(results: list[dict], meta: dict | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs for the page header: what was run, where, when, how long, under which protocol."""
    meta = meta or {}
    dataset, budget = _describe(results)
    facts = [("Dataset", dataset), ("Pretraining budget", str(meta.get("budget") or budget))]
    if meta.get("machine") or meta.get("device"):
        machine = str(meta.get("machine") or "")
        device = f"device {meta['device']}" if meta.get("device") else ""
        facts.append(("Machine", f"{machine} ({device})" if machine and device else machine or device))
    if meta.get("wall_clock_seconds") is not None:
        facts.append(("Wall-clock", _duration(meta["wall_clock_seconds"])))
    else:
        spent = [r.get(k) for r in results for k in ("pretrain_seconds", "probe_seconds")]
        spent = [float(s) for s in spent if isinstance(s, (int, float))]
        if spent:
            facts.append(("Wall-clock", f"{_duration(sum(spent))} (pretraining + probing, summed over methods)"))
    if meta.get("date"):
        facts.append(("Date", str(meta["date"])))
    if meta.get("protocol") is not None:
        p = str(meta["protocol"])
        facts.append(("Protocol", f"v{p}" if p.isdigit() else p))
    facts.append(("Methods", str(len(results))))
    if meta.get("note"):
        facts.append(("Note", str(meta["note"])))
    return facts


def legend(table: Table, results: list[dict]) -> list[str]:
    """The sentences under the table that say how to read it."""
    key = sort_budget(table.budgets)
    where = {"validation": "a fixed hold-out of the training split (the validation split; the test split is not read)"}
    on = " or ".join(where.get(s, f"the {s} split") for s in sorted({r.get("split", "test") for r in results} or {"test"}))
    lines = [
        f"Accuracy in percent on {on}, mean ± std over label draws (random-encoder rows: over random "
        "initialisations and label draws; methods with several pretraining seeds: over those too). Sorted by "
        f"linear-probe accuracy at {_budget_name(key) if key is not None else '-'}.",
    ]
    if any(_interval(row, k) for e in table.entries for row in e.rows for k, _, _ in INTERVALS):
        lines.append("▲R / ▼R: significantly above / below the same encoder with random weights; ▲P / ▼P: significantly "
                     "above / below raw pixels (same classifier, same labels). Significant: the 95% interval of the "
                     "difference excludes zero. No mark: the difference is within the noise at this budget.")
    else:
        lines.append("These results carry no significance intervals (made before protocol v5), so no cell is marked.")
    if any(c[0] == GAP for c in table.columns):
        lines.append("Gap to supervised: the linear probe minus the supervised model of the same backbone trained on the "
                     "same labels, at each label budget, in points (negative: below supervised).")
    if any(c[0] == TIME for c in table.columns):
        lines.append("Time to raw-pixel k-NN: training time until the k-NN monitor (a labelled subset of the training split, "
                     "never the test split) first matched raw pixels' k-NN accuracy on the same images; \"not reached\": "
                     "not within the budget; \u2014: the method has no monitor. The monitor's own time is not counted.")
    notes = []
    for res in results:
        note = _refs(res).get("shipped_note")
        if note and str(note) not in notes:
            notes.append(str(note))
    lines += [f"References {n}" for n in notes]
    return lines


def _beats(rows: list[dict], key: str) -> bool | None:
    """Whether any row is significantly above the reference; None when no row carries an interval."""
    ivs = [iv for iv in (_interval(r, key) for r in rows) if iv is not None]
    if not ivs:
        return None
    return any(iv.get("significant") and iv["diff"] > 0 for iv in ivs)


def verdicts(result: dict) -> list[str]:
    """Plain sentences for a method that beats a reference at no label budget (empty when it does, or no intervals)."""
    name = str(result["method"])
    rows = _norm_rows(result["results"], f"{name}: results")
    losing = [words for key, words in (("vs_raw", "raw pixels"), ("vs_random", "its own encoder with random weights"))
              if _beats(rows, key) is False]
    if not losing:
        return []
    budget = result.get("budget")
    at = f"At this budget ({budget})" if budget is not None else "At this budget"
    return [f"{at} {name} does not beat {' or '.join(losing)}: no linear-probe or k-NN result is significantly above "
            f"{'it' if len(losing) == 1 else 'them'} at any label budget. This is a statement about this budget, not a verdict on the method."]


def floor_status(floor: dict) -> str:
    met = floor.get("met")
    return "not measured" if met is None else ("met" if met else "MISSED")


def floor_value(floor: dict) -> str:
    """A floor's measurement: a difference to a reference in points with its interval, or the plain value."""
    value = floor.get("value")
    if str(floor.get("rule", "")).startswith(("above", "below")) and isinstance(value, (int, float)):
        interval = f" [{100 * floor['low']:+.1f}, {100 * floor['high']:+.1f}]" if "low" in floor and "high" in floor else ""
        return f"{100 * value:+.1f}{interval}"
    return _number(value)


def _floors(result: dict) -> list[dict]:
    floors = result.get("floors")
    return [f for f in floors if isinstance(f, dict)] if isinstance(floors, list) else []


def _metrics(result: dict) -> dict:
    metrics = result.get("metrics")
    return metrics if isinstance(metrics, dict) else {}


# --------------------------------------------------------------------------- markdown / csv / json


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(_md_cell(c) for c in cells) + " |"


def leaderboard_markdown(results: list[dict], command: str | None = None, meta: dict | None = None) -> str:
    table = leaderboard_table(results)
    facts = header_facts(results, meta)
    lines = [f"# Leaderboard: {facts[0][1]}, pretraining budget {facts[1][1]}", ""]
    lines += [f"- {label}: {value}" for label, value in facts[2:]]  # dataset and budget are in the title
    if command:
        lines.append(f"- Command: `{command}`")
    lines += ["", _md_row(table.headers), "|" + "|".join(["---", "---"] + ["---:"] * len(table.columns)) + "|"]
    lines += [_md_row(cells) for cells in table.rows]
    lines += [""] + [f"{line}  " for line in legend(table, results)]
    floors = [(res["method"], f) for res in results for f in _floors(res)]
    if floors:
        held = sum(f.get("met") is True for _, f in floors)
        lines += ["", f"## Floors ({held} of {len(floors)} met)", "", _md_row(["method", "floor", "rule", "measured", "status"]),
                  "|---|---|---|---:|---|"]
        lines += [_md_row([name, str(f.get("name", "?")), str(f.get("rule", "")), floor_value(f), floor_status(f)])
                  for name, f in floors]
        lines += ["", "Measured: for a rule against a reference, the difference in points with its 95% interval; "
                  "otherwise the accuracy or the method's own metric."]
    notes = [v for res in results for v in verdicts(res)]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["method", "kind", "classifier", "labels_per_class", "accuracy_mean", "accuracy_std", "inits"]
CSV_FIELDS += [f"{key}_{part}" for key, _, _ in INTERVALS for part in ("diff", "low", "high", "df", "significant")]


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(float(value)) if isinstance(value, float) else str(value)


def leaderboard_csv(results: list[dict]) -> str:
    """Long format: one line per (row of the leaderboard, classifier, budget), with the intervals of protocol v5."""
    entries = build_entries(results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for e in entries:
        for row in sorted(e.rows, key=lambda r: (r["classifier"], _budget_key(r["labels_per_class"]))):
            line = [e.name, e.kind, row["classifier"], row["labels_per_class"], repr(row["accuracy_mean"]),
                    _csv_value(row.get("accuracy_std")), _csv_value(row.get("inits"))]
            for key, _, _ in INTERVALS:
                iv = _interval(row, key) or {}
                line += [_csv_value(iv.get(part)) for part in ("diff", "low", "high", "df", "significant")]
            writer.writerow(line)
    return buf.getvalue()


# --------------------------------------------------------------------------- curves


def _x_positions(results: list[dict], budgets: list) -> tuple[dict, int | None]:
    ints = [b for b in budgets if b != "all"]
    actual = next((r.get("all_labels_per_class") for r in results if r.get("all_labels_per_class")), None)
    if actual is not None and (not ints or float(actual) > max(ints)):
        all_x = float(actual)
    else:
        all_x = float(max(ints) * 10) if ints else 1.0
    pos = {b: float(b) for b in ints}
    if "all" in budgets:
        pos["all"] = all_x
    return pos, actual


def _ticks(pos: dict, actual) -> list[tuple[float, str]]:
    return [(x, ("all" if actual is None else f"all ({int(actual)})") if b == "all" else str(b)) for b, x in pos.items()]


def _points(entry: Entry, pos: dict) -> list[tuple[float, float, float]]:
    rows = [(x, entry.linear(b)) for b, x in pos.items()]
    return [(x, 100.0 * r["accuracy_mean"], 100.0 * (r.get("accuracy_std") or 0.0)) for x, r in rows if not _missing(r)]


RAW_STYLE = {"color": "gray", "linestyle": "--", "marker": "^", "linewidth": 1.5}
SUPERVISED_STYLE = {"color": "black", "linestyle": "--", "marker": "s", "linewidth": 1.5}


def save_label_curves(results: list[dict], path: Path, title: str | None = None) -> Path:
    """Accuracy vs labels per class (log x), linear probe per method, dashed references."""
    import matplotlib

    entries = build_entries(results)
    pos, actual = _x_positions(results, budgets_of(entries))
    methods = [e.name for e in entries if e.role == "method"]
    dataset, budget = _describe(results)
    title = title or f"Label efficiency on {dataset} (pretraining budget {budget}), linear probe"
    if len(methods) > MAX_METHODS_WITH_RANDOM and len({e.family for e in entries if e.role == "method"}) > 1:
        return save_accuracy_panels(_family_panels(entries, pos), _ticks(pos, actual), path, title)
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    styles = {
        "method": lambda e: {"color": colors[e.name], "linestyle": "-", "marker": "o", "linewidth": 1.8},
        "raw": lambda e: RAW_STYLE,
        "supervised": lambda e: SUPERVISED_STYLE,
        "random": lambda e: {"color": colors.get(e.owner, "silver"), "linestyle": "--", "marker": "x", "linewidth": 1.0, "alpha": 0.6},
    }
    # with many methods their random references would double the lines: each method's own figure has its band
    shown = [e for e in entries if e.role != "random" or len(methods) <= MAX_METHODS_WITH_RANDOM]
    series = [Series(_legend_label(e.name), _points(e, pos), style=styles[e.role](e)) for e in shown]
    return save_accuracy_curves(series, _ticks(pos, actual), path, title)


def _family_panels(entries: list[Entry], pos: dict) -> list[tuple[str, list[Series]]]:
    """One panel per method family: its methods (tab10 colours), and the raw-pixel and supervised
    references of their probe sets, dashed and named without the list of every method they serve."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    panels = []
    for family in dict.fromkeys(e.family for e in entries if e.role == "method"):
        members = [e for e in entries if e.role == "method" and e.family == family]
        series = [Series(e.name, _points(e, pos), style={"color": cmap(i % cmap.N), "marker": "o", "linewidth": 1.6})
                  for i, e in enumerate(members)]
        for key, name, style in (("raw", "raw pixels", RAW_STYLE), ("supervised", "supervised", SUPERVISED_STYLE)):
            refs = list({id(r): r for r in (getattr(e, key) for e in members) if r is not None}.values())
            series += [Series(name if len(refs) == 1 else f"{name} ({k + 1})", _points(r, pos), style=style)
                       for k, r in enumerate(refs)]
        panels.append((family or "methods", series))
    return panels


MAX_METHODS_WITH_RANDOM = 10  # the combined label-efficiency figure leaves random references out beyond this
LEGEND_CHARS = 60


def _legend_label(name: str) -> str:
    """A legend entry short enough to leave room for the plot (shared references name every method they serve)."""
    return name if len(name) <= LEGEND_CHARS else name[: LEGEND_CHARS - 1].rstrip(", ") + "…"


def save_time_curves(results: list[dict], path: Path) -> Path | None:
    """k-NN monitor accuracy against training time for every method with a
    monitor, and raw pixels' k-NN accuracy on the same images (dashed); None
    (nothing written) when no method has a monitor trace."""
    traces = [(str(r["method"]), r["time_to_accuracy"]) for r in results if isinstance(r.get("time_to_accuracy"), dict)
              and r["time_to_accuracy"].get("trace")]
    if not traces:
        return None
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(traces) <= 10 else "tab20"]
    fig = _new_figure((7.5, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    raws = set()
    for i, (name, tta) in enumerate(traces):
        xs, _, ys = zip(*tta["trace"])
        ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, color=cmap(i % cmap.N), label=name)
        if tta.get("raw_pixels") is not None:
            raws.add(round(100 * tta["raw_pixels"], 2))
    for k, raw in enumerate(sorted(raws)):
        ax.axhline(raw, **{k2: v for k2, v in RAW_STYLE.items() if k2 != "marker"}, label="raw pixels" if k == 0 else None)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("k-NN monitor accuracy (%)")
    ax.set_title("Time to accuracy (k-NN monitor on a held-in subset of the training split)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return save_figure(fig, path)


def save_method_curve(result: dict, path: Path) -> Path | None:
    """One method's label efficiency: its linear probe, raw pixels, the random encoder as a band
    (mean ± std over inits), and the supervised model. None (nothing written) without linear rows."""
    entries = build_entries([result])
    method = entries[0]
    pos, actual = _x_positions([result], budgets_of(entries))
    if not _points(method, pos):
        return None
    series = [Series(f"{method.name} (linear probe)", _points(method, pos),
                     style={"color": "tab:blue", "marker": "o", "linewidth": 2.0})]
    for e in entries[1:]:
        if e.role == "random":
            label = "random encoder" + (f", ± std over {e.note}" if e.note else "")
            series.append(Series(label, _points(e, pos), band=True, style={"color": "tab:orange", "linestyle": ":"}))
        else:
            series.append(Series(e.name, _points(e, pos), style=RAW_STYLE if e.role == "raw" else SUPERVISED_STYLE))
    title = f"{method.name} on {result.get('dataset', '?')}, pretraining budget {result.get('budget', '?')}"
    return save_accuracy_curves(series, _ticks(pos, actual), path, title, figsize=(5.6, 3.6), legend_inside=True)


# --------------------------------------------------------------------------- html

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1240px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin: 1.2em 0 0.4em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em; font-size: 0.9em; margin: 1em 0; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
p.meta, p.note, ul.legend { color: #555; font-size: 0.9em; }
ul.legend { padding-left: 1.2em; } ul.legend li { margin: 0.2em 0; }
p.verdict { background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.4em 0.8em; }
code { background: #f3f3f3; padding: 0 0.3em; overflow-wrap: anywhere; }
div.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; } thead th { text-align: center; }
th.first, td.first { border-left: 2px solid #999; }
td.name { text-align: left; white-space: normal; min-width: 10em; max-width: 20em; } td.name small { display: block; color: #777; font-style: normal; }
tr.reference td { color: #555; font-style: italic; background: #fafafa; }
span.marks { display: block; font-size: 0.78em; line-height: 1.15; letter-spacing: 0.02em; }
span.mark + span.mark { margin-left: 0.35em; }
span.up { color: #176d2b; } span.down { color: #b02020; }
table.facts td, table.facts th { text-align: left; }
td.met { color: #176d2b; } td.MISSED { color: #b02020; font-weight: bold; } td.not-measured { color: #777; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 480px; image-rendering: pixelated; border: 1px solid #eee; }
figure.curve { margin-right: 2em; } figure.curve img { max-width: 100%; image-rendering: auto; }
div.top { display: flex; flex-wrap: wrap; align-items: flex-start; } div.top h3 { margin-top: 0.5em; }
figcaption { font-size: 0.8em; color: #555; }
img.curves { max-width: 100%; }
.missing { color: #a33; font-size: 0.85em; }
"""


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return s or "method"


def _method_dirs(results: list[dict]) -> dict[int, str]:
    """A distinct folder name under figures/ for each result."""
    dirs: dict[int, str] = {}
    for i, res in enumerate(results):
        base = _safe_name(str(res["method"]))
        sub, k = base, 2
        while sub in dirs.values():
            sub, k = f"{base}-{k}", k + 1
        dirs[i] = sub
    return dirs


def _copy_figures(results: list[dict], out_dir: Path, dirs: dict[int, str]) -> tuple[dict[int, list], dict[str, Path]]:
    """Copy each method's figures to out_dir/figures/<method>/; note the missing ones.

    Returns per-result lists of ("ok", relpath, source) or ("missing", shown path, None),
    and the copied files keyed by their path relative to out_dir.
    """
    per: dict[int, list] = {}
    written: dict[str, Path] = {}
    for i, res in enumerate(results):
        items: list = []
        per[i] = items
        run_dir = Path(res["run_dir"]) if res.get("run_dir") else None
        taken: set[str] = {CURVE_NAME}  # the report's own curve for this method
        for fig in res.get("figures") or []:
            src = Path(fig)
            if not src.is_absolute() and run_dir is not None:
                src = run_dir / src
            if not src.is_file():
                items.append(("missing", str(fig), None))
                continue
            stem, suffix = os.path.splitext(_safe_name(src.name))
            name, k = stem + suffix, 2
            while name in taken:
                name, k = f"{stem}-{k}{suffix}", k + 1
            taken.add(name)
            rel = f"figures/{dirs[i]}/{name}"
            dest = out_dir / rel
            try:
                if not (dest.exists() and os.path.samefile(src, dest)):
                    with atomic_path(dest) as tmp:
                        shutil.copyfile(src, tmp)
            except OSError as exc:
                items.append(("missing", f"{fig} ({exc.strerror or exc})", None))
                continue
            written[rel] = dest
            items.append(("ok", rel, src))
    return per, written


def _html_text(text: str) -> str:
    """Escaped text with its `backticked` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_cell(cell: Cell, cls: str = "") -> str:
    marks = "".join(f'<span class="mark {m.direction}" title="{html.escape(m.title)}">{html.escape(m.symbol)}</span>'
                    for m in cell.marks)
    marks = f'<span class="marks">{marks}</span>' if marks else ""
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(cell.text)}{marks}</td>"


def _html_table(table: Table) -> str:
    esc = html.escape
    groups = [g for g in GROUPS if any(c[0] == g for c in table.columns)]
    top = ['<th rowspan="2">method</th>']
    top += [f'<th class="first" colspan="{sum(c[0] == g for c in table.columns)}">{esc(GROUP_TITLES[g])}</th>' for g in groups]
    first = {i for i, c in enumerate(table.columns) if i == 0 or table.columns[i - 1][0] != c[0]}
    sub = [f'<th{" class=first" if i in first else ""}>{esc("training" if b is None else _budget_name(b))}</th>'
           for i, (_, b) in enumerate(table.columns)]
    out = ['<div class="scroll"><table class="leaderboard">',
           "<thead><tr>" + "".join(top) + "</tr><tr>" + "".join(sub) + "</tr></thead>", "<tbody>"]
    for e, cells in zip(table.entries, table.cells):
        family = family_text(e)
        name = f'<td class="name">{esc(e.name)}' + (f"<small>{esc(family)}</small>" if family else "") + "</td>"
        tds = [_html_cell(c, "first" if i in first else "") for i, c in enumerate(cells)]
        out.append(f'<tr class="{e.kind}">' + name + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table></div>"]
    return "\n".join(out)


def _html_facts(rows: list[tuple[str, str]], headers: list[str], status_col: int | None = None) -> str:
    esc = html.escape
    out = ['<table class="facts"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for row in rows:
        tds = [f'<td class="{esc(c.replace(" ", "-"))}">' if i == status_col else "<td>" for i, c in enumerate(row)]
        out.append("<tr>" + "".join(f"{td}{esc(c)}</td>" for td, c in zip(tds, row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _method_section(res: dict, items: list, curve: str | None) -> list[str]:
    esc = html.escape
    name = str(res["method"])
    parts = [f'<h2 id="{esc(_safe_name(name))}">{esc(name)}'
             + (f" <small>({esc(str(res['family']))})</small>" if res.get("family") else "") + "</h2>"]
    facts = []
    if res.get("budget") is not None:
        facts.append(f"pretraining budget {esc(str(res['budget']))}")
    if isinstance(res.get("pretrain_seeds"), list):
        seeds = res["pretrain_seeds"]
        facts.append(f"pretraining seed{'s' if len(seeds) != 1 else ''} {esc(', '.join(str(s) for s in seeds))}")
    for key, words in (("pretrain_seconds", "pretraining"), ("probe_seconds", "probing")):
        if isinstance(res.get(key), (int, float)):
            facts.append(f"{words} {_duration(res[key])}")
    if facts:
        parts.append(f'<p class="meta">{"; ".join(facts)}.</p>')
    if res.get("run_dir"):
        parts.append(f'<p class="meta">Run directory: <code>{esc(str(res["run_dir"]))}</code></p>')
    parts += [f'<p class="verdict">{_html_text(v)}</p>' for v in verdicts(res)]
    parts.append('<div class="top">')
    if curve:
        refs = res.get("references") or {}
        drawn = [words for key, words in (("raw_pixels", "raw pixels"), ("random_encoder", "random encoder (band: mean ± std over inits)"),
                                          ("supervised", "supervised")) if refs.get(key)]
        parts.append(f'<figure class="curve"><img src="{esc(curve)}" alt="{esc(name)}: accuracy against labelled images '
                     f'per class"><figcaption>Label efficiency: {esc(", ".join(["linear probe", *drawn]))}.</figcaption></figure>')
    parts.append("<div>")
    metrics = _metrics(res)
    if metrics:
        parts += ["<h3>Family metrics</h3>", _html_facts([(str(k), _number(v)) for k, v in metrics.items()], ["metric", "value"])]
    floors = _floors(res)
    if floors:
        rows = [(str(f.get("name", "?")), str(f.get("rule", "")), floor_value(f), floor_status(f)) for f in floors]
        parts += ["<h3>Floors</h3>", _html_facts(rows, ["floor", "rule", "measured", "status"], status_col=3)]
    parts += ["</div></div>", "<h3>Figures</h3>"]
    if not items:
        parts.append('<p class="note">No figures.</p>')
    for status, rel, _src in items:
        if status == "ok":
            parts.append(f'<figure><img src="{esc(rel)}" alt="{esc(name)}: {esc(Path(rel).stem)}">'
                         f"<figcaption>{esc(Path(rel).name)}</figcaption></figure>")
        else:
            parts.append(f'<p class="missing">Figure not found, skipped: <code>{esc(rel)}</code></p>')
    return parts


def report_html(results: list[dict], figures: dict[int, list], command: str | None = None,
                curves: str | None = "curves.png", meta: dict | None = None, method_curves: dict[int, str] | None = None,
                time_curves: str | None = None) -> str:
    """The report page. ``figures``: per result index, the items of ``_copy_figures``; ``method_curves``:
    per result index, the path (relative to the page) of its label-efficiency figure."""
    table = leaderboard_table(results)
    esc = html.escape
    facts = header_facts(results, meta)
    dataset, budget = facts[0][1], facts[1][1]
    dl = "".join(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>" for label, value in facts)
    if command:
        dl += f"<dt>Command</dt><dd><code>{esc(command)}</code></dd>"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>unsup report: {esc(dataset)}, budget {esc(budget)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Unsupervised pretraining, few-label evaluation: {esc(dataset)}</h1>",
        f'<dl class="facts">{dl}</dl>',
        "<h2>Leaderboard</h2>",
        _html_table(table),
        '<ul class="legend">' + "".join(f"<li>{_html_text(line)}</li>" for line in legend(table, results))
        + "<li>References in italics.</li></ul>",
    ]
    if curves:
        parts += ["<h2>Label efficiency</h2>",
                  f'<img class="curves" src="{esc(curves)}" alt="accuracy against labelled images per class">']
        if len(results) > MAX_METHODS_WITH_RANDOM:
            parts.append('<p class="note">With this many methods the random-weights references are left out of this '
                         "figure; each method's own figure below shows its random band.</p>")
    if time_curves:
        parts += ["<h2>Time to accuracy</h2>",
                  f'<img class="curves" src="{esc(time_curves)}" alt="k-NN monitor accuracy against training time">']
    for i, res in enumerate(results):
        parts += _method_section(res, figures.get(i, []), (method_curves or {}).get(i))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- public entry points


def write_report(results: list[dict], out_dir: Path, command: str | None = None, meta: dict | None = None) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.csv, results.json, curves.png, report.html, a label-efficiency
    figure per method (figures/<method>/label-efficiency.png) and copies of each method's figures
    (figures/<method>/) into ``out_dir``.

    ``meta`` (optional keys ``machine``, ``device``, ``budget``, ``wall_clock_seconds``, ``date``,
    ``protocol``, ``note``) goes into results.json and the page header.
    Returns every path written, keyed by its path relative to ``out_dir``. Each file is written atomically.
    """
    _validate(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["leaderboard.md"] = atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(results, command, meta))
    written["leaderboard.csv"] = atomic_write_text(out_dir / "leaderboard.csv", leaderboard_csv(results))
    payload = {"command": command, "meta": meta or {}, "results": results}
    written["results.json"] = atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2, default=str) + "\n")
    written["curves.png"] = save_label_curves(results, out_dir / "curves.png")
    if save_time_curves(results, out_dir / TIME_CURVES) is not None:
        written[TIME_CURVES] = out_dir / TIME_CURVES
    dirs = _method_dirs(results)
    method_curves = {}
    for i, res in enumerate(results):
        rel = f"figures/{dirs[i]}/{CURVE_NAME}"
        if save_method_curve(res, out_dir / rel) is not None:
            written[rel] = out_dir / rel
            method_curves[i] = rel
    figures, copied = _copy_figures(results, out_dir, dirs)
    written.update(copied)
    page = report_html(results, figures, command, meta=meta, method_curves=method_curves,
                       time_curves=TIME_CURVES if TIME_CURVES in written else None)
    written["report.html"] = atomic_write_text(out_dir / "report.html", page)
    return written


def format_rows(result: dict) -> str:
    """A short plain-text table for the terminal: one line per (classifier, budget),
    the method (with its significance marks) and its references side by side, accuracy in percent."""
    _validate([result])
    name = str(result["method"])
    mine = _norm_rows(result["results"], f"{name}: results")
    raw, rnd, sup = (_ref_rows(result, k) for k in ("raw_pixels", "random_encoder", "supervised"))

    def find(rows, classifier, budget):
        return next((r for r in rows if r["classifier"] == classifier and r["labels_per_class"] == budget), None)

    classifiers = [c for c in ("linear", "knn") if any(r["classifier"] == c for r in mine + raw + rnd)]
    classifiers += sorted({r["classifier"] for r in mine + raw + rnd} - {"linear", "knn", "supervised"})
    budgets = sorted({r["labels_per_class"] for r in mine + raw + rnd + sup}, key=_budget_key)
    header = ["classifier", "labels", name, "raw pixels", "random encoder"] + (["supervised"] if sup else [])
    lines = []
    for c in classifiers:
        for b in budgets:
            cells = [CLASSIFIER_LABELS.get(c, c), str(b), str(accuracy_cell(find(mine, c, b))), _pct(find(raw, c, b)),
                     _pct(find(rnd, c, b))]
            if sup:
                cells.append(_pct(find(sup, "supervised", b)))
            if any(x != DASH for x in cells[2:]):
                lines.append(cells)
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    title = f"{name}" + (f" ({result['family']})" if result.get("family") else "")
    if result.get("dataset") or result.get("budget"):
        title += f" on {result.get('dataset', '?')}, budget {result.get('budget', '?')}"
    title += ": test accuracy %, mean ± std over seeds"
    if any(_interval(r, k) for r in mine for k, _, _ in INTERVALS):
        title += "; ▲/▼R, ▲/▼P: significantly above/below the random encoder, raw pixels"
    return "\n".join([title, fmt(header)] + [fmt(r) for r in lines] + [f"note: {v}" for v in verdicts(result)])
