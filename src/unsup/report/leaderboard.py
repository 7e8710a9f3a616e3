"""Leaderboard and report page from ``unsup probe --json`` results.

Input: a list of per-method results, each a dict with keys ``method``,
``family``, ``dataset``, ``budget``, ``results`` (rows with
``labels_per_class`` in 1, 10, 100, ... or ``"all"``, ``classifier`` in
``linear``/``knn``, ``accuracy_mean``, ``accuracy_std``, ``seeds``,
``accuracies``), ``references`` (``raw_pixels``, ``random_encoder``,
``supervised``; supervised rows have classifier ``supervised``), and
optionally ``figures`` (paths relative to ``run_dir``), ``run_dir`` and
``all_labels_per_class`` (the real number of labels per class behind
``"all"``, used to place ``"all"`` on the curves' x axis).

Accuracies are fractions in [0, 1]; tables show them in percent with one
decimal. The "gap to supervised" is the linear probe on all labels minus the
supervised model on all labels, in points (negative: below supervised).
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
from .figures import _new_figure, atomic_path, atomic_write_text, save_figure

DASH = "—"
CLASSIFIER_LABELS = {"linear": "linear", "knn": "k-NN"}

# --------------------------------------------------------------------------- the table model


@dataclass
class Entry:
    """One leaderboard row: a method or a reference, with its probe rows."""

    name: str
    family: str
    kind: str  # "method" | "reference"
    rows: list[dict]
    color_of: str | None = None  # the method a "random <method>" row belongs to
    extra: dict = field(default_factory=dict)

    def get(self, classifier: str, budget) -> dict | None:
        for row in self.rows:
            if row["classifier"] == classifier and row["labels_per_class"] == budget:
                return row
        return None

    def linear(self, budget) -> dict | None:
        """The linear-probe accuracy; for the supervised reference, its own accuracy."""
        return self.get("supervised" if self.name == "supervised" else "linear", budget)


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
        r["accuracy_mean"] = float(row["accuracy_mean"])
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


def build_entries(results: list[dict]) -> list[Entry]:
    """Methods, then raw pixels (first result's), a random encoder per method, supervised."""
    _validate(results)
    entries: list[Entry] = []
    for i, res in enumerate(results):
        name = str(res["method"])
        entries.append(Entry(name, str(res.get("family", "")), "method", _norm_rows(res["results"], f"{name}: results"),
                             color_of=name, extra={"index": i}))
    refs0 = results[0].get("references") or {}
    raw = _norm_rows(refs0.get("raw_pixels"), f"{results[0]['method']}: references.raw_pixels")
    if raw:
        entries.append(Entry("raw pixels", "reference", "reference", raw))
    for res in results:
        name = str(res["method"])
        rnd = _norm_rows((res.get("references") or {}).get("random_encoder"), f"{name}: references.random_encoder")
        if rnd:
            entries.append(Entry(f"random {name}", "reference", "reference", rnd, color_of=name))
    for res in results:
        sup = _norm_rows((res.get("references") or {}).get("supervised"), f"{res['method']}: references.supervised")
        if sup:
            entries.append(Entry("supervised", "reference", "reference", sup))
            break
    return entries


def budgets_of(entries: list[Entry]) -> list:
    found = {row["labels_per_class"] for e in entries for row in e.rows}
    return sorted(found, key=_budget_key)


def sort_budget(budgets: list):
    """The largest small (integer) budget, else 'all'."""
    small = [b for b in budgets if b != "all"]
    return max(small) if small else ("all" if budgets else None)


def _pct(row: dict | None) -> str:
    if row is None or row.get("accuracy_mean") is None or math.isnan(row["accuracy_mean"]):
        return DASH
    mean = 100.0 * row["accuracy_mean"]
    std = row.get("accuracy_std")
    if std is None or math.isnan(std):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100.0 * std:.1f}"


def _budget_name(b) -> str:
    return "all" if b == "all" else f"{b}/class"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    kinds: list[str]
    entries: list[Entry]
    budgets: list


def leaderboard_table(results: list[dict]) -> Table:
    """The leaderboard as header strings and cell strings, sorted best first."""
    entries = build_entries(results)
    budgets = budgets_of(entries)
    key_budget = sort_budget(budgets)
    sup = next((e for e in entries if e.name == "supervised"), None)
    sup_all = sup.linear("all") if sup is not None else None

    def sort_key(e: Entry):
        row = e.linear(key_budget) if key_budget is not None else None
        return (0, -row["accuracy_mean"]) if row is not None else (1, 0.0)

    entries = sorted(entries, key=sort_key)
    headers = ["method", "family"]
    headers += [f"linear {_budget_name(b)}" for b in budgets]
    headers += [f"k-NN {_budget_name(b)}" for b in budgets]
    headers.append("gap to supervised (all labels)")
    rows = []
    for e in entries:
        cells = [e.name, e.family]
        cells += [_pct(e.linear(b)) for b in budgets]
        cells += [_pct(e.get("knn", b)) for b in budgets]
        mine = e.linear("all")
        if mine is None or sup_all is None:
            cells.append(DASH)
        else:
            cells.append(f"{100.0 * (mine['accuracy_mean'] - sup_all['accuracy_mean']):+.1f}")
        rows.append(cells)
    return Table(headers, rows, [e.kind for e in entries], entries, budgets)


def _describe(results: list[dict]) -> tuple[str, str]:
    def uniq(key):
        vals = []
        for r in results:
            v = r.get(key)
            if v is not None and str(v) not in vals:
                vals.append(str(v))
        return ", ".join(vals) if vals else "?"

    return uniq("dataset"), uniq("budget")


# --------------------------------------------------------------------------- markdown / csv / json


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def leaderboard_markdown(results: list[dict], command: str | None = None) -> str:
    table = leaderboard_table(results)
    dataset, budget = _describe(results)
    key = sort_budget(table.budgets)
    lines = [f"# Leaderboard: {dataset}, pretraining budget {budget}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        ("Accuracy in percent on the test split, mean ± std over label seeds. "
        f"Sorted by linear-probe accuracy at {_budget_name(key) if key is not None else '-'}. "
        "Gap: linear probe on all labels minus the supervised model on all labels, in points."),
        "",
        "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(table.headers) - 2)) + "|",
    ]
    for cells in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["method", "kind", "classifier", "labels_per_class", "accuracy_mean", "accuracy_std"]


def leaderboard_csv(results: list[dict]) -> str:
    """Long format: one line per (row of the leaderboard, classifier, budget)."""
    entries = build_entries(results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for e in entries:
        for row in sorted(e.rows, key=lambda r: (r["classifier"], _budget_key(r["labels_per_class"]))):
            std = row.get("accuracy_std")
            writer.writerow([e.name, e.kind, row["classifier"], row["labels_per_class"],
                             repr(row["accuracy_mean"]), "" if std is None else repr(std)])
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


def save_label_curves(results: list[dict], path: Path, title: str | None = None) -> Path:
    """Accuracy vs labels per class (log x), linear probe per method, dashed references."""
    import matplotlib

    entries = build_entries(results)
    budgets = budgets_of(entries)
    pos, actual = _x_positions(results, budgets)
    methods = [e.name for e in entries if e.kind == "method"]
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}

    fig = _new_figure((7.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    for e in entries:
        pts = [(pos[b], e.linear(b)) for b in budgets]
        pts = [(x, r) for x, r in pts if r is not None]
        if not pts:
            continue
        xs = [x for x, _ in pts]
        ys = [100.0 * r["accuracy_mean"] for _, r in pts]
        err = [100.0 * (r.get("accuracy_std") or 0.0) for _, r in pts]
        if e.kind == "method":
            style = {"color": colors[e.name], "linestyle": "-", "marker": "o", "linewidth": 1.8}
        elif e.name == "supervised":
            style = {"color": "black", "linestyle": "--", "marker": "s", "linewidth": 1.5}
        elif e.name == "raw pixels":
            style = {"color": "gray", "linestyle": "--", "marker": "^", "linewidth": 1.5}
        else:
            style = {"color": colors.get(e.color_of, "silver"), "linestyle": "--", "marker": "x", "linewidth": 1.0, "alpha": 0.6}
        ax.errorbar(xs, ys, yerr=err, capsize=3, markersize=4, label=e.name, **style)

    ax.set_xscale("log")
    ticks = [pos[b] for b in budgets]
    labels = [("all" if actual is None else f"all ({int(actual)})") if b == "all" else str(b) for b in budgets]
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.minorticks_off()
    if ticks:
        lo, hi = min(ticks), max(ticks)
        ax.set_xlim(lo / 1.5, hi * 1.5)
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("test accuracy (%)")
    dataset, budget = _describe(results)
    ax.set_title(title or f"Label efficiency on {dataset} (pretraining budget {budget}), linear probe")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- html

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
p.meta, p.note { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; }
td.name, td.family { text-align: left; }
tr.reference td { color: #666; font-style: italic; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 480px; image-rendering: pixelated; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #555; }
img.curves { max-width: 100%; }
.missing { color: #a33; font-size: 0.85em; }
"""


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return s or "method"


def _copy_figures(results: list[dict], out_dir: Path) -> tuple[dict[int, list], dict[str, Path]]:
    """Copy each method's figures to out_dir/figures/<method>/; note the missing ones.

    Returns per-result lists of ("ok", relpath, source) or ("missing", shown path, None),
    and the copied files keyed by their path relative to out_dir.
    """
    per: dict[int, list] = {}
    written: dict[str, Path] = {}
    used_dirs: set[str] = set()
    for i, res in enumerate(results):
        figs = res.get("figures") or []
        items: list = []
        per[i] = items
        if not figs:
            continue
        base = _safe_name(str(res["method"]))
        sub, k = base, 2
        while sub in used_dirs:
            sub, k = f"{base}-{k}", k + 1
        used_dirs.add(sub)
        run_dir = Path(res["run_dir"]) if res.get("run_dir") else None
        taken: set[str] = set()
        for fig in figs:
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
            rel = f"figures/{sub}/{name}"
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


def _html_table(table: Table) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr></thead>", "<tbody>"]
    for cells, kind in zip(table.rows, table.kinds):
        tds = [f'<td class="name">{html.escape(cells[0])}</td>', f'<td class="family">{html.escape(cells[1])}</td>']
        tds += [f"<td>{html.escape(c)}</td>" for c in cells[2:]]
        out.append(f'<tr class="{kind}">' + "".join(tds) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def report_html(results: list[dict], figures: dict[int, list], command: str | None = None,
                curves: str | None = "curves.png") -> str:
    table = leaderboard_table(results)
    dataset, budget = _describe(results)
    key = sort_budget(table.budgets)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>unsup report: {esc(dataset)}, budget {esc(budget)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Unsupervised pretraining, few-label evaluation: {esc(dataset)}</h1>",
        f'<p class="meta">Pretraining budget: {esc(budget)}. Methods: {len(results)}.</p>',
    ]
    if command:
        parts.append(f'<p class="meta">Command: <code>{esc(command)}</code></p>')
    parts += [
        "<h2>Leaderboard</h2>",
        ('<p class="note">Accuracy in percent on the test split, mean ± std over label seeds; sorted by linear-probe '
        f"accuracy at {esc(_budget_name(key)) if key is not None else '-'}. Gap: linear probe on all labels minus the "
        "supervised model on all labels, in points. References in italics.</p>"),
        _html_table(table),
    ]
    if curves:
        parts += ["<h2>Label efficiency</h2>",
                  f'<img class="curves" src="{esc(curves)}" alt="accuracy against labelled images per class">']
    for i, res in enumerate(results):
        name = str(res["method"])
        parts.append(f'<h2 id="{esc(_safe_name(name))}">{esc(name)}'
                     + (f" <small>({esc(str(res['family']))})</small>" if res.get("family") else "") + "</h2>")
        if res.get("run_dir"):
            parts.append(f'<p class="meta">Run directory: <code>{esc(str(res["run_dir"]))}</code></p>')
        items = figures.get(i, [])
        if not items:
            parts.append('<p class="note">No figures.</p>')
        for status, rel, _src in items:
            if status == "ok":
                parts.append(f'<figure><img src="{esc(rel)}" alt="{esc(name)}: {esc(Path(rel).stem)}">'
                             f"<figcaption>{esc(Path(rel).name)}</figcaption></figure>")
            else:
                parts.append(f'<p class="missing">Figure not found, skipped: <code>{esc(rel)}</code></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- public entry points


def write_report(results: list[dict], out_dir: Path, command: str | None = None) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.csv, results.json, curves.png, report.html
    (and copies of each method's figures under figures/<method>/) into ``out_dir``.

    Returns every path written, keyed by its path relative to ``out_dir``.
    Each file is written atomically.
    """
    _validate(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["leaderboard.md"] = atomic_write_text(out_dir / "leaderboard.md", leaderboard_markdown(results, command))
    written["leaderboard.csv"] = atomic_write_text(out_dir / "leaderboard.csv", leaderboard_csv(results))
    payload = {"command": command, "results": results}
    written["results.json"] = atomic_write_text(out_dir / "results.json", json.dumps(payload, indent=2, default=str) + "\n")
    written["curves.png"] = save_label_curves(results, out_dir / "curves.png")
    figures, copied = _copy_figures(results, out_dir)
    written.update(copied)
    written["report.html"] = atomic_write_text(out_dir / "report.html", report_html(results, figures, command))
    return written


def format_rows(result: dict) -> str:
    """A short plain-text table for the terminal: one line per (classifier, budget),
    the method and its references side by side, accuracy in percent."""
    _validate([result])
    name = str(result["method"])
    mine = _norm_rows(result["results"], f"{name}: results")
    refs = result.get("references") or {}
    raw = _norm_rows(refs.get("raw_pixels"), f"{name}: references.raw_pixels")
    rnd = _norm_rows(refs.get("random_encoder"), f"{name}: references.random_encoder")
    sup = _norm_rows(refs.get("supervised"), f"{name}: references.supervised")

    def find(rows, classifier, budget):
        return next((r for r in rows if r["classifier"] == classifier and r["labels_per_class"] == budget), None)

    classifiers = [c for c in ("linear", "knn") if any(r["classifier"] == c for r in mine + raw + rnd)]
    classifiers += sorted({r["classifier"] for r in mine + raw + rnd} - {"linear", "knn", "supervised"})
    budgets = sorted({r["labels_per_class"] for r in mine + raw + rnd + sup}, key=_budget_key)
    header = ["classifier", "labels", name, "raw pixels", "random encoder"] + (["supervised"] if sup else [])
    lines = []
    for c in classifiers:
        for b in budgets:
            cells = [CLASSIFIER_LABELS.get(c, c), str(b), _pct(find(mine, c, b)), _pct(find(raw, c, b)), _pct(find(rnd, c, b))]
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
    return "\n".join([title, fmt(header)] + [fmt(r) for r in lines])
