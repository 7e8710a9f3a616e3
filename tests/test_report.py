import csv
import json

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
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
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
    assert all(p.exists() for p in paths.values())
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_markdown(tmp_path, results):
    write_report(results, tmp_path, command="unsup bench --budget 20k")
    md = (tmp_path / "leaderboard.md").read_text()
    assert "fashion-mnist" in md and "20k" in md and "`unsup bench --budget 20k`" in md
    header, rows, order = _md_table(md)
    assert header[:2] == ["method", "family"]
    assert "linear 100/class" in header and "k-NN all" in header and header[-1] == "gap to supervised (all labels)"
    assert set(order) == {"simclr", "kmeans", "raw pixels", "random simclr", "random kmeans", "supervised"}
    # sorted by linear accuracy at 100 labels per class, descending
    assert order == ["kmeans", "simclr", "supervised", "raw pixels", "random simclr", "random kmeans"]
    assert rows["simclr"]["linear 1/class"] == "55.0 ± 2.0"
    assert rows["simclr"]["k-NN 10/class"] == "68.0 ± 2.0"
    assert rows["simclr"]["linear all"] == "88.0 ± 0.0"
    assert rows["simclr"]["family"] == "joint embedding"
    assert rows["simclr"]["gap to supervised (all labels)"] == "-5.0"
    assert rows["kmeans"]["gap to supervised (all labels)"] == "-7.0"
    assert rows["supervised"]["linear 100/class"] == "80.0 ± 2.0"
    assert rows["supervised"]["k-NN 1/class"] == "—"
    assert rows["supervised"]["gap to supervised (all labels)"] == "+0.0"
    assert rows["random kmeans"]["linear 10/class"] == "49.0 ± 2.0"
    assert rows["raw pixels"]["k-NN all"] == "85.0 ± 0.0"


def test_csv_and_json(tmp_path, results):
    write_report(results, tmp_path, command="unsup bench")
    with open(tmp_path / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "kind", "classifier", "labels_per_class", "accuracy_mean", "accuracy_std"]
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
    assert data["command"] == "unsup bench"
    assert [r["method"] for r in data["results"]] == ["simclr", "kmeans"]
    assert data["results"][0]["results"] == results[0]["results"]


def test_html_and_pngs(tmp_path, results):
    out = tmp_path / "out"
    write_report(results, out)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert 'src="curves.png"' in page
    assert 'src="figures/simclr/filters.png"' in page
    assert "<table>" in page and "88.0 ± 0.0" in page and "random kmeans" in page
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
    assert rows["simclr"]["gap to supervised (all labels)"] == "—"
    assert "linear all" not in rows["simclr"]


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
