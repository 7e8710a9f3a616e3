import csv
import itertools
import json
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from unsup.errors import UnsupError
from unsup.report import format_rows, save_curve, save_embedding_plot, save_image_grid, write_report

BUDGETS = [1, 10, 100, "all"]


def _rows(classifier, means, std=0.02):
    return [
        {"labels_per_class": b, "classifier": classifier, "accuracy_mean": m, "accuracy_std": std if b != "all" else 0.0,
         "seeds": [0, 1, 2] if b != "all" else [0], "accuracies": [m] * (3 if b != "all" else 1)}
        for b, m in zip(BUDGETS, means)
    ]


def _result(method, family, linear, knn, rnd, run_dir=None, figures=None):
    res = {
        "method": method, "family": family, "dataset": "fashion-mnist", "budget": "20k",
        "results": _rows("linear", linear) + _rows("knn", knn),
        "references": {
            "raw_pixels": _rows("linear", [0.40, 0.60, 0.72, 0.84]) + _rows("knn", [0.38, 0.58, 0.70, 0.85]),
            "random_encoder": _rows("linear", rnd) + _rows("knn", rnd),
            "supervised": _rows("supervised", [0.35, 0.62, 0.80, 0.93]),
        },
    }
    if figures is not None:
        res["figures"] = figures
    if run_dir is not None:
        res["run_dir"] = str(run_dir)
    return res


@pytest.fixture
def results(tmp_path):
    run = tmp_path / "runs" / "simclr"
    (run / "figures").mkdir(parents=True)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(run / "figures" / "filters.png")
    simclr = _result("simclr", "joint embedding", [0.55, 0.70, 0.80, 0.88], [0.52, 0.68, 0.78, 0.87],
                     [0.30, 0.50, 0.62, 0.75], run_dir=run, figures=["figures/filters.png", "figures/gone.png"])
    kmeans = _result("kmeans", "clustering", [0.45, 0.65, 0.82, 0.86], [0.44, 0.60, 0.76, 0.85],
                     [0.31, 0.49, 0.60, 0.70], figures=[str(tmp_path / "nowhere" / "atoms.png")])
    return [simclr, kmeans]


def _md_table(md):
    """The first table of a markdown page (the leaderboard; the floors table follows it)."""
    all_lines = md.splitlines()
    start = next(i for i, ln in enumerate(all_lines) if ln.startswith("|"))
    lines = list(itertools.takewhile(lambda ln: ln.startswith("|"), all_lines[start:]))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return header, {r[0]: dict(zip(header, r)) for r in rows}, [r[0] for r in rows]


def test_write_report_files(tmp_path, results):
    out = tmp_path / "report"
    paths = write_report(results, out, command="unsup bench --budget 20k")
    for name in ["leaderboard.md", "leaderboard.csv", "results.json", "curves.png", "report.html"]:
        assert paths[name] == out / name
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert paths["figures/simclr/filters.png"] == out / "figures" / "simclr" / "filters.png"
    assert paths["figures/kmeans/label-efficiency.png"].is_file() and paths["figures/simclr/label-efficiency.png"].is_file()
    assert all(p.exists() for p in paths.values())
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_markdown(tmp_path, results):
    write_report(results, tmp_path, command="unsup bench --budget 20k")
    md = (tmp_path / "leaderboard.md").read_text()
    assert "fashion-mnist" in md and "20k" in md and "`unsup bench --budget 20k`" in md
    header, rows, order = _md_table(md)
    assert header[:2] == ["method", "family"]
    assert "linear 100/class" in header and "k-NN all" in header and header[-1] == "gap to supervised all"
    assert set(order) == {"simclr", "kmeans", "raw pixels", "random simclr", "random kmeans", "supervised"}
    # sorted by linear accuracy at 100 labels per class, descending
    assert order == ["kmeans", "simclr", "supervised", "raw pixels", "random simclr", "random kmeans"]
    assert rows["simclr"]["linear 1/class"] == "55.0 ± 2.0"
    assert rows["simclr"]["k-NN 10/class"] == "68.0 ± 2.0"
    assert rows["simclr"]["linear all"] == "88.0 ± 0.0"
    assert rows["simclr"]["family"] == "joint embedding"
    # the gap to supervised at each label budget: linear probe minus supervised on the same labels
    assert rows["simclr"]["gap to supervised all"] == "-5.0"
    assert rows["kmeans"]["gap to supervised all"] == "-7.0"
    assert rows["kmeans"]["gap to supervised 1/class"] == "+10.0"
    assert rows["simclr"]["gap to supervised 10/class"] == "+8.0"
    assert rows["raw pixels"]["gap to supervised 100/class"] == "-8.0"
    assert rows["supervised"]["linear 100/class"] == "80.0 ± 2.0"
    assert rows["supervised"]["k-NN 1/class"] == "—"
    assert rows["supervised"]["gap to supervised all"] == "—"  # no gap to itself
    assert rows["random kmeans"]["linear 10/class"] == "49.0 ± 2.0"
    assert rows["raw pixels"]["k-NN all"] == "85.0 ± 0.0"


def test_csv_and_json(tmp_path, results):
    write_report(results, tmp_path, command="unsup bench")
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["method", "kind", "classifier", "labels_per_class", "accuracy_mean", "accuracy_std"]
    assert {"vs_random_diff", "vs_random_low", "vs_raw_high", "vs_raw_significant", "inits"} <= set(rows[0])
    assert all(r["vs_random_diff"] == "" for r in rows)  # old results: no intervals
    # 2 methods x 8 + raw pixels 8 + 2 random encoders x 8 + supervised 4
    assert len(rows) == 2 * 8 + 8 + 2 * 8 + 4
    simclr = {(r["classifier"], r["labels_per_class"]): r for r in rows if r["method"] == "simclr"}
    assert simclr[("linear", "100")]["kind"] == "method"
    assert float(simclr[("linear", "100")]["accuracy_mean"]) == pytest.approx(0.80)
    assert float(simclr[("knn", "all")]["accuracy_mean"]) == pytest.approx(0.87)
    kinds = {r["method"]: r["kind"] for r in rows}
    assert kinds["supervised"] == kinds["raw pixels"] == kinds["random kmeans"] == "reference"
    assert {r["classifier"] for r in rows if r["method"] == "supervised"} == {"supervised"}

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["command"] == "unsup bench" and data["meta"] == {}
    assert [r["method"] for r in data["results"]] == ["simclr", "kmeans"]
    assert data["results"][0]["results"] == results[0]["results"]


def test_html_and_pngs(tmp_path, results):
    out = tmp_path / "out"
    write_report(results, out)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert 'src="curves.png"' in page
    assert 'src="figures/simclr/filters.png"' in page
    assert '<table class="leaderboard">' in page and "88.0 ± 0.0" in page and "random kmeans" in page
    assert 'src="figures/simclr/label-efficiency.png"' in page and "no significance intervals" in page
    assert "▲" not in page and "▼" not in page
    # missing figures are noted, not fatal
    assert "figures/gone.png" in page and "atoms.png" in page and page.count('class="missing"') == 2
    copied = Image.open(out / "figures" / "simclr" / "filters.png")
    assert copied.size == (20, 10)
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_report_overwrites_and_bad_input(tmp_path, results):
    write_report(results, tmp_path)
    write_report(results[:1], tmp_path)  # rewrite in place
    _, rows, _ = _md_table((tmp_path / "leaderboard.md").read_text())
    assert "kmeans" not in rows and "simclr" in rows
    with pytest.raises(UnsupError, match="no probe results"):
        write_report([], tmp_path)
    bad = dict(results[0], results=[{"classifier": "linear", "accuracy_mean": 0.5}])
    with pytest.raises(UnsupError, match="labels_per_class"):
        write_report([bad], tmp_path)


def test_curves_with_actual_all_count_and_no_all(tmp_path, results):
    results[0]["all_labels_per_class"] = 6000
    write_report(results, tmp_path / "a")
    assert Image.open(tmp_path / "a" / "curves.png").size[0] > 100
    small = [dict(r, results=[x for x in r["results"] if x["labels_per_class"] != "all"]) for r in results]
    for r in small:
        r["references"] = {k: [x for x in v if x["labels_per_class"] != "all"] for k, v in r["references"].items()}
    write_report(small, tmp_path / "b")
    _, rows, _ = _md_table((tmp_path / "b" / "leaderboard.md").read_text())
    assert "gap to supervised all" not in rows["simclr"] and rows["simclr"]["gap to supervised 100/class"] == "+0.0"
    assert "linear all" not in rows["simclr"]


def test_many_methods_draw_one_panel_per_family(tmp_path, monkeypatch):
    """Beyond ten methods the label-efficiency figure has a panel per family, each with its methods and references."""
    from unsup.report import leaderboard
    from unsup.report.leaderboard import _family_panels, _x_positions, budgets_of, build_entries

    many = [_result(f"m{i}", "clustering" if i < 7 else "pretext", [0.4 + i / 100, 0.6, 0.7, 0.8], [0.4, 0.6, 0.7, 0.8],
                    [0.3, 0.5, 0.6, 0.7]) for i in range(12)]
    entries = build_entries(many)
    panels = _family_panels(entries, _x_positions(many, budgets_of(entries))[0])
    assert [name for name, _ in panels] == ["clustering", "pretext"]
    assert [s.label for s in panels[1][1]] == ["m7", "m8", "m9", "m10", "m11", "raw pixels", "supervised"]
    assert panels[1][1][0].points[0][1] == pytest.approx(47.0)  # m7 at 1 label per class, in percent
    drawn = []
    real = leaderboard.save_accuracy_panels
    monkeypatch.setattr(leaderboard, "save_accuracy_panels", lambda panels, *a, **k: drawn.append(len(panels)) or real(panels, *a, **k))
    for n, out in ((12, tmp_path / "many"), (3, tmp_path / "few")):  # ten or fewer methods: one plot
        write_report(many[:n], out)
        with Image.open(out / "curves.png") as im:
            assert im.size[0] > 1.5 * im.size[1] > 400
    assert drawn == [2]


def test_format_rows(results):
    text = format_rows(results[0])
    lines = text.splitlines()
    assert "simclr" in lines[0] and "fashion-mnist" in lines[0]
    assert lines[1].split()[:3] == ["classifier", "labels", "simclr"] and "supervised" in lines[1]
    body = lines[2:]
    assert len(body) == 8  # (linear, knn) x (1, 10, 100, all)
    first = body[0]
    assert first.split()[:2] == ["linear", "1"]
    # method, raw pixels, random encoder, supervised side by side
    assert "55.0 ± 2.0" in first and "40.0 ± 2.0" in first and "30.0 ± 2.0" in first and "35.0 ± 2.0" in first
    knn_all = next(ln for ln in body if ln.split()[:2] == ["k-NN", "all"])
    assert "87.0 ± 0.0" in knn_all and "93.0 ± 0.0" in knn_all


def test_format_rows_without_references():
    text = format_rows({"method": "rotation", "results": _rows("linear", [0.5, 0.6, 0.7, 0.8])})
    assert len(text.splitlines()) == 2 + 4
    assert "supervised" not in text and "—" in text


# --------------------------------------------------------------------------- protocol v5: intervals, meta, floors


def _iv(diff, half=0.015):
    return {"diff": diff, "low": diff - half, "high": diff + half, "df": 4.0, "significant": abs(diff) > half}


def _v5_result(method, linear, knn, rnd, raw, seeds=(0,), **extra):
    """A protocol-v5 result: every method row carries vs_random and vs_raw; random rows carry inits."""
    def with_ivs(rows, ref):
        return [dict(r, vs_random=_iv(r["accuracy_mean"] - ref["random"][i]), vs_raw=_iv(r["accuracy_mean"] - ref["raw"][i]))
                for i, r in enumerate(rows)]

    res = _result(method, extra.pop("family", "clustering"), linear, knn, rnd)
    res["results"] = (with_ivs(_rows("linear", linear), {"random": rnd, "raw": raw})
                      + with_ivs(_rows("knn", knn), {"random": rnd, "raw": raw}))
    refs = res["references"]
    refs["raw_pixels"] = _rows("linear", raw) + _rows("knn", raw)
    refs["random_encoder"] = [dict(r, inits=5) for r in refs["random_encoder"]]
    refs["shipped_note"] = "supervised: shipped with the package, made by `python benchmarks/references.py`"
    res.update(pretrain_seeds=list(seeds), all_labels_per_class=6000, pretrain_seconds=100.0, probe_seconds=20.0, **extra)
    return res


RAW = [0.40, 0.60, 0.72, 0.84]


@pytest.fixture
def v5_results():
    floors = [{"name": "gabor share", "rule": ">= 0.5", "value": 0.62, "met": True},
              {"name": "linear@10 above random", "rule": ">= 0.01", "value": 0.004, "met": False},
              {"name": "next-frame MSE", "rule": "< 1.0", "value": None, "met": None}]
    # kmeans: above both references everywhere; 1/class below raw pixels (significant), 10/class within the noise
    kmeans = _v5_result("kmeans", [0.30, 0.61, 0.80, 0.90], [0.44, 0.65, 0.76, 0.88], [0.31, 0.49, 0.60, 0.70], RAW,
                        metrics={"gabor_share": 0.62, "atoms": 512}, floors=floors)
    # dae: never significantly above raw pixels
    dae = _v5_result("denoising-autoencoder", [0.40, 0.605, 0.725, 0.84], [0.39, 0.60, 0.72, 0.845],
                     [0.30, 0.50, 0.62, 0.75], RAW, seeds=(0, 1, 2), family="direct mapping")
    return [kmeans, dae]


META = {"machine": "x86_64 CPU: AMD EPYC 7B13, 2 threads", "device": "cpu", "budget": "2m", "wall_clock_seconds": 948,
        "date": "2026-11-28", "protocol": 5, "note": "a smoke run"}


class _Page(HTMLParser):
    """The report's images, and the leaderboard's rows as (name, [(cell text, [mark symbols])])."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.text = [], [], []
        self._in_board = self._cell = self._mark = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table" and attrs.get("class") == "leaderboard":
            self._in_board = True
        elif self._in_board and tag == "tr":
            self.rows.append([])
        elif self._in_board and tag == "td":
            self._cell = ["", []]
        elif self._cell is not None and tag == "span" and "mark" in (attrs.get("class") or "").split():
            self._mark = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_board = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "span" and self._mark is not None:
            self._cell[1].append(self._mark)
            self._mark = None

    def handle_data(self, data):
        self.text.append(data)
        if self._mark is not None:
            self._mark += data
        elif self._cell is not None:
            self._cell[0] += data

    @property
    def board(self):
        return {cells[0][0]: cells for cells in self.rows if cells}


def _parse(path):
    page = _Page()
    page.feed(path.read_text())
    return page


def test_v5_report_page_structure(tmp_path, v5_results):
    out = tmp_path / "out"
    write_report(v5_results, out, command="unsup bench --budget 2m", meta=META)
    page = _parse(out / "report.html")
    # every image exists: the combined curves, one label-efficiency figure per method
    assert "curves.png" in page.images and len(page.images) == 3
    assert all((out / src).is_file() for src in page.images)
    board = page.board
    # a row per method and per reference; the name cell holds the family (or the spread) under the name
    names = {"kmeans", "denoising-autoencoder", "raw pixels", "random kmeans", "random denoising-autoencoder", "supervised"}
    assert {n for n in board for m in names if n.startswith(m)} == set(board) and len(board) == len(names)
    assert board["random kmeansreference (5 inits)"]
    assert "denoising-autoencoderdirect mapping (3 pretraining seeds)" in board
    # 1 name cell + (linear, k-NN, gap) x 4 budgets, none empty
    assert all(len(cells) == 13 and all(text for text, _ in cells) for cells in board.values())
    # the marks sit exactly where the interval excludes zero
    budgets, results = BUDGETS, {r["method"]: r for r in v5_results}
    for name, res in results.items():
        cells = next(c for n, c in board.items() if n.startswith(name) and not n.startswith("random"))
        for row in res["results"]:
            col = 1 + (0 if row["classifier"] == "linear" else 4) + budgets.index(row["labels_per_class"])
            marks = cells[col][1]
            for key, letter in (("vs_random", "R"), ("vs_raw", "P")):
                iv = row[key]
                expected = [("▲" if iv["diff"] > 0 else "▼") + letter] if iv["significant"] else []
                assert [m for m in marks if m.endswith(letter)] == expected, (name, row["classifier"], row["labels_per_class"], key)
    kmeans = next(c for n, c in board.items() if n.startswith("kmeans"))
    assert kmeans[1] == ("30.0 ± 2.0", ["▼P"]) and kmeans[2] == ("61.0 ± 2.0", ["▲R"])
    assert not any(marks for n, cells in board.items() if not n.startswith(("kmeans", "denoising")) for _, marks in cells)
    # gap to supervised per budget (supervised: 35, 62, 80, 93)
    assert [text for text, _ in kmeans[9:]] == ["-5.0", "-1.0", "+0.0", "-3.0"]
    text = " ".join(" ".join(page.text).split())
    # the header: budget, machine, wall-clock, date, protocol, command, note
    for fact in ["2m", "AMD EPYC 7B13", "15 min 48 s", "2026-11-28", "v5", "unsup bench --budget 2m", "a smoke run"]:
        assert fact in text
    assert "▲R / ▼R" in text and "benchmarks/references.py" in text
    # family metrics and floors for kmeans; the verdict only for the method that never beats raw pixels
    assert "gabor_share" in text and "MISSED" in text and "not measured" in text and " met " in text
    assert "At this budget (20k) denoising-autoencoder does not beat raw pixels" in text
    assert "kmeans does not beat" not in text
    # a method's figure caption names the references it draws: a result without the supervised one leaves it out
    assert "raw pixels, random encoder (band: mean ± std over inits), supervised." in text
    bare = [{**r, "references": {k: v for k, v in r["references"].items() if k != "supervised"}} for r in v5_results]
    write_report(bare, tmp_path / "bare", command="unsup bench", meta=META)
    bare_text = " ".join(" ".join(_parse(tmp_path / "bare" / "report.html").text).split())
    assert "random encoder (band: mean ± std over inits)." in bare_text and "), supervised." not in bare_text


def test_v5_csv_json_markdown(tmp_path, v5_results):
    write_report(v5_results, tmp_path, command="unsup bench", meta=META)
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by = {(r["method"], r["classifier"], r["labels_per_class"]): r for r in rows}
    for res in v5_results:
        for row in res["results"]:
            line = by[(res["method"], row["classifier"], str(row["labels_per_class"]))]
            for key in ("vs_random", "vs_raw"):
                for part in ("diff", "low", "high", "df"):
                    assert float(line[f"{key}_{part}"]) == pytest.approx(row[key][part])
                assert line[f"{key}_significant"] == ("true" if row[key]["significant"] else "false")
    assert by[("random kmeans", "linear", "10")]["inits"] == "5" and by[("raw pixels", "knn", "1")]["vs_raw_diff"] == ""

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"] == META and data["command"] == "unsup bench"
    assert data["results"][0]["results"][0]["vs_raw"] == v5_results[0]["results"][0]["vs_raw"]

    md = (tmp_path / "leaderboard.md").read_text()
    _, rows, _ = _md_table(md)
    assert rows["kmeans"]["linear 1/class"] == "30.0 ± 2.0 ▼P" and rows["kmeans"]["k-NN 1/class"] == "44.0 ± 2.0 ▲R ▲P"
    assert rows["random kmeans"]["family"] == "reference (5 inits)"
    assert "Protocol: v5" in md and "AMD EPYC" in md and "does not beat raw pixels" in md and "MISSED" in md
    assert "## Floors (1 of 3 met)" in md and "| kmeans | gabor share | >= 0.5 | 0.62 | met |" in md

    text = format_rows(v5_results[0])
    assert "30.0 ± 2.0 ▼P" in text and "significantly above/below" in text


def test_the_legend_names_the_split_it_read(tmp_path, v5_results):
    write_report(v5_results, tmp_path / "test", meta=META)
    assert "Accuracy in percent on the test split" in (tmp_path / "test" / "leaderboard.md").read_text()
    screen = [{**res, "split": "validation"} for res in v5_results]  # a screen on the training split's hold-out
    write_report(screen, tmp_path / "val", meta=META)
    md = (tmp_path / "val" / "leaderboard.md").read_text()
    assert "on the test split" not in md and "the validation split; the test split is not read" in md


def test_methods_with_different_supervised_references(tmp_path, v5_results):
    """Each method's gap is measured against its own supervised reference; both are shown, named."""
    v5_results[1]["references"]["supervised"] = _rows("supervised", [0.30, 0.55, 0.70, 0.80])
    write_report(v5_results, tmp_path)
    _, rows, _ = _md_table((tmp_path / "leaderboard.md").read_text())
    assert {"supervised (for kmeans)", "supervised (for denoising-autoencoder)"} <= set(rows)
    assert rows["kmeans"]["gap to supervised 100/class"] == "+0.0"
    assert rows["denoising-autoencoder"]["gap to supervised 100/class"] == "+2.5"
    assert rows["random denoising-autoencoder"]["gap to supervised all"] == "-5.0"


def test_methods_sharing_a_random_encoder_share_its_row(tmp_path, v5_results):
    v5_results[1]["references"]["random_encoder"] = v5_results[0]["references"]["random_encoder"]
    write_report(v5_results, tmp_path)
    _, rows, _ = _md_table((tmp_path / "leaderboard.md").read_text())
    assert "random encoder (for kmeans, denoising-autoencoder)" in rows
    assert not {"random kmeans", "random denoising-autoencoder"} & set(rows)


def test_bare_old_result_renders(tmp_path):
    """A result with only a method and its rows (no references, family, intervals or meta) still makes a full page."""
    write_report([{"method": "rotation", "results": _rows("linear", [0.5, 0.6, 0.7, 0.8])}], tmp_path)
    page = _parse(tmp_path / "report.html")
    assert all((tmp_path / src).is_file() for src in page.images) and len(page.images) == 2
    assert list(page.board) == ["rotation"] and all(text for text, _ in page.board["rotation"])
    _, rows, _ = _md_table((tmp_path / "leaderboard.md").read_text())
    # no supervised reference: no gap columns (they would be empty)
    assert rows["rotation"]["linear 10/class"] == "60.0 ± 2.0" and "gap to supervised 10/class" not in rows["rotation"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_save_image_grid(tmp_path, dtype):
    images = torch.rand(10, 1, 28, 28)
    if dtype == torch.uint8:
        images = (images * 255).to(torch.uint8)
    path = save_image_grid(images, tmp_path / "grid.png", nrow=4)
    with Image.open(path) as im:
        # 3 rows x 4 columns of 28x28 tiles with 2-pixel padding
        assert im.format == "PNG"
        assert im.size == (4 * 30 + 2, 3 * 30 + 2)
    rgb = save_image_grid(torch.rand(6, 3, 8, 8), tmp_path / "rgb.png", nrow=3, scale=2)
    assert Image.open(rgb).size == (2 * (3 * 10 + 2), 2 * (2 * 10 + 2))
    titled = save_image_grid(images, tmp_path / "titled.png", nrow=5, title="samples")
    assert Image.open(titled).size[0] > 0
    with pytest.raises(ValueError):
        save_image_grid(torch.rand(2, 5, 4, 4), tmp_path / "bad.png", nrow=2)


def test_save_embedding_plot(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    features = torch.randn(300, 16, generator=g) + 4.0 * torch.nn.functional.one_hot(labels, 16).float()
    path = save_embedding_plot(features, labels, ["tee", "trouser", "bag"], tmp_path / "emb" / "tsne.png", "t-SNE")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_save_curve(tmp_path):
    path = save_curve([1, 10, 100], {"a": [0.1, 0.5, 0.9], "b": [0.2, None, 0.8]}, tmp_path / "c.png",
                      "labels", "accuracy", "curve", logx=True)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_time_to_accuracy_from_metrics_column_and_figure(tmp_path, v5_results):
    from unsup.curves import time_to_accuracy

    records = [{"step": 0, "seconds": 0.0, "images_seen": 0, "knn_monitor_raw": 0.80},
               {"step": 0, "seconds": 0.0, "images_seen": 0, "knn_monitor": 0.55},
               {"step": 10, "seconds": 20.5, "images_seen": 2560, "loss": 1.0},
               {"step": 20, "seconds": 41.0, "images_seen": 5120, "knn_monitor": 0.79},
               {"step": 30, "seconds": 62.0, "images_seen": 7680, "knn_monitor": 0.81},
               {"step": 40, "seconds": 80.0, "images_seen": 10240, "knn_monitor": 0.83}]
    tta = time_to_accuracy(records)
    assert tta["raw_pixels"] == 0.80 and tta["seconds_to_raw"] == 62.0 and tta["images_to_raw"] == 7680 and len(tta["trace"]) == 4
    assert time_to_accuracy(records[:2] + records[3:4])["seconds_to_raw"] is None  # 0.79 < 0.80: not reached
    assert time_to_accuracy([r for r in records if "knn_monitor" not in r]) is None

    results = [dict(r) for r in v5_results]
    results[0]["time_to_accuracy"] = tta
    results[1]["time_to_accuracy"] = time_to_accuracy(records[:2] + records[3:4])
    out = tmp_path / "out"
    written = write_report(results, out, meta=META)
    assert "time-to-accuracy.png" in written and (out / "time-to-accuracy.png").stat().st_size > 1000
    page = _parse(out / "report.html")
    assert "time-to-accuracy.png" in page.images
    cells = {n: [t for t, _ in c] for n, c in page.board.items()}
    assert next(c for n, c in cells.items() if n.startswith(results[0]["method"]))[-1] == "1 min 2 s"
    assert next(c for n, c in cells.items() if n.startswith(results[1]["method"]) and not n.startswith("random"))[-1] == "not reached"
    assert next(c for n, c in cells.items() if n.startswith("raw pixels"))[-1] == "—"
    assert "time to raw-pixel k-NN" in (out / "leaderboard.md").read_text()
