"""Protocol v5: intervals, the random reference as a distribution, plans and
floors, and the bench end to end on a tiny dataset."""

from __future__ import annotations

import html.parser
import json
import math
import re
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats

from unsup import cli
from unsup.api import probe_run, validation_split
from unsup.data import load
from unsup.errors import UnsupError
from unsup.evaluate import supervised
from unsup.evaluate.protocol import merge_rows
from unsup.evaluate.stats import difference_interval
from unsup.plan import check_floors, load_plan, parse_plan


def test_interval_matches_a_hand_computed_case():
    method = [[0.80, 0.70, 0.75]]  # one pretraining seed, three label draws
    reference = [[0.70, 0.66, 0.70], [0.72, 0.64, 0.68], [0.68, 0.65, 0.72]]  # three random inits
    out = difference_interval(method, reference, n_test=1000)
    # by hand: per-draw differences 0.10, 0.05, 0.05 -> mean 1/15, variance of the mean 2.7778e-4 (df 2);
    # inits' means 0.68667, 0.68, 0.68333 -> 3.7037e-6 (df 2); test split (0.75*0.25 + 0.68333*0.31667) / 1000
    var = 2.777778e-4 + 3.703704e-6 + 4.038889e-4
    df = var**2 / ((2.777778e-4) ** 2 / 2 + (3.703704e-6) ** 2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(var)
    assert out["diff"] == pytest.approx(1 / 15)
    assert out["df"] == pytest.approx(12.173, abs=1e-3)
    assert (out["low"], out["high"]) == (pytest.approx(1 / 15 - half, abs=1e-6), pytest.approx(1 / 15 + half, abs=1e-6))
    assert out["significant"]
    # the same gain with wildly varying draws is not significant
    noisy = difference_interval([[0.95, 0.55, 0.75]], reference, n_test=1000)
    assert noisy["low"] < 0 < noisy["high"] and not noisy["significant"]


def test_interval_with_one_draw_keeps_the_test_split_term():
    out = difference_interval([[0.90]], [[0.80]], n_test=10_000)
    se = math.sqrt((0.9 * 0.1 + 0.8 * 0.2) / 10_000)
    assert out["df"] is None and out["high"] - out["low"] == pytest.approx(2 * 1.959964 * se, rel=1e-5)
    with pytest.raises(ValueError):
        difference_interval([[0.9, 0.8]], [[0.8]], n_test=100)


def test_merge_rows_keeps_each_encoder_and_pools_the_spread():
    a = [{"labels_per_class": 10, "classifier": "linear", "accuracy_mean": 0.6, "accuracies": [0.5, 0.7], "seeds": [0, 1]}]
    b = [{"labels_per_class": 10, "classifier": "linear", "accuracy_mean": 0.8, "accuracies": [0.7, 0.9], "seeds": [0, 1]}]
    (row,) = merge_rows([a, b], "init")
    assert row["accuracy_mean"] == pytest.approx(0.7) and row["inits"] == 2
    assert row["accuracies"] == pytest.approx([0.6, 0.8]) and row["accuracies_by_init"] == [[0.5, 0.7], [0.7, 0.9]]
    assert row["accuracy_std"] == pytest.approx(math.sqrt(0.02))  # over all four values


def test_the_probe_reads_family_metrics_from_the_whole_trained_method(fm_tiny, tmp_path):
    """Family metrics need the trained heads: the probe's pretext accuracy is the trained network's, not a random head's."""
    import unsup
    from unsup.run import load_method

    run = unsup.pretrain("rotation", data=fm_tiny, budget="1600", out=tmp_path / "r", quiet=True, monitor=False,
                         options={"batch_size": 64}, figures=False)
    # the random references too (they rebuild the backbone), not the supervised one: it trains for minutes
    got = probe_run(run, [10], 1, "cpu", supervised=False, family_metrics=True)["metrics"]
    assert got == load_method(run, whole=True).eval().family_metrics(fm_tiny, "cpu")
    assert got["pretext_accuracy"] > 0.4  # a random head reads about chance (0.25)
    (run / "checkpoint.pt").unlink()
    with pytest.raises(UnsupError, match="no checkpoint.pt; the heads and generators are kept only there"):
        probe_run(run, [10], 1, "cpu", references=False, family_metrics=True)


def test_plan_summary_estimates_only_what_is_left(tmp_path):
    from unsup.api import _plan_summary

    plan = parse_plan({"budget": "10m", "entries": ["kmeans", "rotation", "simclr"]})
    cpu = torch.device("cpu")
    everything = _plan_summary(plan, tmp_path, cpu, jobs=1)
    two_kept = _plan_summary(plan, tmp_path, cpu, jobs=1, kept={"kmeans", "simclr"})
    minutes = [int(re.search(r"estimated wall-clock: about (\d+) min", s).group(1)) for s in (everything, two_kept)]
    assert minutes[0] == 3 * minutes[1]  # three equal entries, two of them reused
    assert "kmeans                   kept result, reused" in two_kept and "2 of them with a kept result" in two_kept


def test_every_shipped_plan_still_parses():
    # the results pages' rerun commands name these plans: an option renamed or removed must not break them
    plans = sorted((Path(__file__).parents[1] / "benchmarks" / "plans").glob("*.yaml"))
    assert len(plans) > 10
    for path in plans:
        assert load_plan(path).entries, path.name


def test_plan_validation_and_floors():
    plan = parse_plan({"budget": "1000", "entries": ["kmeans", {"method": "rotation", "name": "rot-2", "seeds": [0, 1],
                                                               "floors": {"linear@10": ">= 0.5", "gabor_share": ">= 0.2"}}]})
    assert [e.name for e in plan.entries] == ["kmeans", "rot-2"] and plan.entries[1].seeds == [0, 1]
    assert plan.supervised and not parse_plan({"entries": ["kmeans"], "supervised": False}).supervised
    mixed = parse_plan({"entries": ["kmeans", {"method": "rotation", "supervised": False}]})
    assert [e.supervised for e in mixed.entries] == [True, False]
    with pytest.raises(UnsupError, match="entry 1: supervised must be true or false"):
        parse_plan({"entries": [{"method": "kmeans", "supervised": "no"}]})
    bad = [({"entries": []}, "non-empty"), ({"entries": ["kmeans"], "budgets": 3}, "unknown key"),
           ({"entries": [{"method": "nope"}]}, "nope"), ({"entries": ["kmeans", "kmeans"]}, "used twice"),
           ({"entries": [{"method": "kmeans", "floors": {"x": "about 3"}}]}, "bad rule"),
           ({"entries": ["kmeans"], "split": "train"}, "split"), ({"entries": ["kmeans"], "supervised": "no"}, "supervised must be true or false"), ({"entries": [{"method": "kmeans", "options": {"k": 3}}]}, "entry 1: unknown option"), ({"entries": [{"method": "kmeans", "seeds": 3}]}, "seeds"),
           ({"entries": ["kmeans", {"method": "moco", "options": {"backbone_options": {"pool_gird": 3}}}]},
            "entry 2: unknown backbone option.s. pool_gird for small-convnet")]
    for raw, words in bad:
        with pytest.raises(UnsupError, match=words):
            parse_plan(raw)
    gain = {"diff": 0.02, "low": -0.01, "high": 0.05, "significant": False}
    result = {"results": [{"classifier": "linear", "labels_per_class": 10, "accuracy_mean": 0.62, "vs_raw": gain,
                           "vs_random": {**gain, "low": 0.01, "significant": True}}], "metrics": {"x": 0.1}}
    floors = check_floors(result, {"linear@10": ">= 0.6", "x": ">= 0.2", "missing": "< 1"})
    assert [(f["name"], f["met"]) for f in floors] == [("linear@10", True), ("x", False), ("missing", None)]
    floors = [check_floors(result, {"linear@10": f"{w} {ref}"})[0]["met"] for w in ("above", "below") for ref in ("random", "raw")]
    assert floors == [True, False, False, False]
    assert check_floors(result, {"knn@10": "above random"})[0]["met"] is None
    from unsup.report.leaderboard import floor_value

    assert floor_value(check_floors(result, {"linear@10": "above random"})[0]) == "+2.0 [+1.0, +5.0]"
    assert floor_value(check_floors(result, {"x": ">= 0.2"})[0]) == "0.1"


def test_validation_split_is_a_fixed_part_of_the_training_split(fm_tiny):
    train = load(fm_tiny, "train")
    fit, held = validation_split(train)
    assert len(fit) + len(held) == len(train) and len(held) == len(train) // 6
    again = validation_split(train)[1]
    assert (again.images == held.images).all()


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self._in_td = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_td = tag == "td" or (self._in_td and tag != "tr")
        if tag == "td":
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_td = False

    def handle_data(self, data):
        if self._in_td and self.cells:
            self.cells[-1] += data


def test_bench_end_to_end_on_a_tiny_dataset(fm_tiny, tmp_path, monkeypatch, capsys):
    from unsup import api
    from unsup.evaluate import supervised_rows

    # the supervised references capped at 30 steps, as a test can afford
    monkeypatch.setattr(api, "supervised_rows", lambda *a, **k: supervised_rows(*a, **k, max_steps=30))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"data: {fm_tiny}\nbudget: '1500'\nlabels: [1, 10]\nlabel_seeds: 2\nentries:\n"
                    "  - method: kmeans\n    options: {num_centroids: 32, num_patches: 5000}\n"
                    "    floors: {linear@10: '>= 0.3'}\n"
                    "  - {method: rotation, name: rotation-2seeds, seeds: [0, 1]}\n")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--labels", "1,10"]) == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["meta"]["protocol"] == 5 and payload["meta"]["machine"]
    by_name = {r["method"]: r for r in payload["results"]}
    assert set(by_name) == {"kmeans", "rotation-2seeds"}
    for res in by_name.values():
        assert res["references"]["random_encoder"][0]["inits"] == 3
        assert {r["labels_per_class"] for r in res["references"]["supervised"]} == {1, 10}
        for row in res["results"]:
            for field in ("vs_random", "vs_raw"):
                iv = row[field]
                assert iv["low"] <= iv["diff"] <= iv["high"] and iv["significant"] == (iv["low"] > 0 or iv["high"] < 0)
    rot = by_name["rotation-2seeds"]
    assert rot["pretrain_seeds"] == [0, 1] and len(rot["results"][0]["accuracies_by_run"]) == 2
    assert by_name["kmeans"]["floors"][0]["name"] == "linear@10" and by_name["kmeans"]["floors"][0]["met"] is not None
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.images and all((out / src).is_file() for src in page.images)
    text = " ".join(page.cells)
    assert "kmeans" in text and "rotation-2seeds" in text and all(c.strip() for c in page.cells)
    # a second bench on the same folder reuses both unchanged entries instead of training again
    capsys.readouterr()
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--labels", "1,10"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2
    assert Path(probe_run.__module__.replace(".", "/")).name == "api"


def test_a_failed_entry_does_not_stop_the_bench(fm_tiny, tmp_path, monkeypatch, capsys):
    """An entry that fails is reported in one line; the others run and are kept; the same command retries it."""
    from unsup import api

    real = api.pretrain

    def pretrain(method, *args, **kwargs):
        if method == "rotation":
            raise RuntimeError("simulated crash inside rotation")
        return real(method, *args, **kwargs)

    monkeypatch.setattr(api, "pretrain", pretrain)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"data: {fm_tiny}\nbudget: '1500'\nlabels: [10]\nlabel_seeds: 2\nsupervised: false\nentries:\n"
                    "  - {method: rotation}\n  - method: kmeans\n    options: {num_centroids: 32, num_patches: 5000}\n")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "rotation failed: simulated crash inside rotation" in err
    assert "1 of 2 bench entries failed (rotation" in err.strip().splitlines()[-1]
    assert (out / "results" / "kmeans.json").is_file() and not (out / "results" / "rotation.json").exists()
    assert [r["method"] for r in json.loads((out / "results.json").read_text())["results"]] == ["kmeans"]
    # --report-only trains nothing and names what has no kept result
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--quiet", "--report-only"]) == 0
    assert "not run yet (1 of 2 entries): rotation" in (out / "report.html").read_text()
    assert cli.main(["bench", "--plan", str(plan), "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "run the bench without --report-only first" in capsys.readouterr().err
    monkeypatch.setattr(api, "pretrain", real)
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("reusing") == 1 and (out / "results" / "rotation.json").is_file()
    # a finished pretraining whose probe did not finish is probed again, not pretrained again
    (out / "results" / "rotation.json").unlink()
    monkeypatch.setattr(api, "pretrain", pretrain)
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu"]) == 0
    assert "rotation: reusing the finished pretraining" in capsys.readouterr().out
    # a kept result is judged by the floors of the plan that reuses it
    plan.write_text(plan.read_text().replace("num_patches: 5000}", "num_patches: 5000}\n    floors: {linear@10: '>= 0.01'}"))
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--quiet", "--report-only"]) == 0
    kept = {r["method"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert kept["kmeans"]["floors"][0]["met"] is True and "floors" not in kept["rotation"]


def test_an_entry_given_more_seeds_pretrains_and_probes_only_the_new_ones(fm_tiny, tmp_path, monkeypatch, capsys):
    """A one-seed entry that gains pretraining seeds keeps its finished run and probe; only the new seed is run."""
    from unsup import api

    calls = {"pretrain": [], "probe": []}
    real_pretrain, real_probe = api.pretrain, api.probe_run
    monkeypatch.setattr(api, "pretrain", lambda *a, **kw: calls["pretrain"].append(kw["seed"]) or real_pretrain(*a, **kw))
    monkeypatch.setattr(api, "probe_run", lambda run, *a, **kw: calls["probe"].append(Path(run).name) or real_probe(run, *a, **kw))
    plan = tmp_path / "plan.yaml"
    entry = "  - method: kmeans\n    options: {num_centroids: 32, num_patches: 5000}\n"
    plan.write_text(f"data: {fm_tiny}\nbudget: '1500'\nlabels: [10]\nlabel_seeds: 2\nsupervised: false\nentries:\n{entry}")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    one = json.loads((out / "results" / "kmeans.json").read_text())
    plan.write_text(plan.read_text() + "    seeds: [0, 1]\n")
    capsys.readouterr()
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "(1 pretrained, 1 probed already)" in said and "reusing the finished pretraining and probe" in said
    assert calls == {"pretrain": [0, 1], "probe": ["kmeans", "kmeans-seed1"]}  # seed 0 once, in the first bench
    two = json.loads((out / "results" / "kmeans.json").read_text())
    assert two["pretrain_seeds"] == [0, 1] and two["runs"][0] == one["run_dir"]
    row = two["results"][0]
    assert row["accuracies_by_run"][0] == one["results"][0]["accuracies"] and "vs_random" in row
    # a probe with other settings is not reused: two label budgets probe both seeds again
    plan.write_text(plan.read_text().replace("labels: [10]", "labels: [1, 10]"))
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    assert calls["pretrain"] == [0, 1] and calls["probe"][2:] == ["kmeans", "kmeans-seed1"]


def test_entries_side_by_side_equal_one_after_another(fm_tiny, tmp_path, capsys):
    """--jobs 2 runs entries in two processes with the results of one process; a failing entry is reported."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"data: {fm_tiny}\nbudget: '1500'\nlabels: [10]\nlabel_seeds: 2\nsupervised: false\nentries:\n"
                    "  - {method: rotation}\n  - method: kmeans\n    options: {num_centroids: 32, num_patches: 5000}\n"
                    f"  - {{method: rotation, name: broken, data: {tmp_path / 'missing.npz'}}}\n")
    runs = {}
    for name, extra in (("one", ["--threads", "1"]), ("two", ["--jobs", "2", "--threads", "1"])):
        out = tmp_path / name
        assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", *extra]) == 2
        captured = capsys.readouterr()
        assert "broken failed:" in captured.err and "missing.npz" in captured.err
        runs[name] = {r["method"]: r for r in json.loads((out / "results.json").read_text())["results"]}
        header = (out / "leaderboard.md").read_text()
        assert ("1 threads each, 2 entries side by side" in header) == (name == "two") and "1 threads" in header
    assert "2 processes side by side" in captured.out
    assert set(runs["one"]) == set(runs["two"]) == {"rotation", "kmeans"}
    for method in ("rotation", "kmeans"):
        assert [r["accuracies"] for r in runs["one"][method]["results"]] == [r["accuracies"] for r in runs["two"][method]["results"]]


def test_a_screen_without_the_supervised_reference_trains_none(fm_tiny, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("a plan with supervised: false trained the supervised reference")

    monkeypatch.setattr(supervised, "supervised_references", refuse)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"data: {fm_tiny}\nbudget: '1500'\nlabels: [10]\nlabel_seeds: 2\nsplit: validation\nsupervised: false\n"
                    "entries:\n  - method: kmeans\n    options: {num_centroids: 32, num_patches: 5000}\n")
    out = tmp_path / "bench"
    assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    result = json.loads((out / "results.json").read_text())["results"][0]
    assert not result["references"].get("supervised") and result["spec"]["supervised"] is False
    assert result["references"]["random_encoder"] and (out / "report.html").is_file()
    # no supervised reference, so no (empty) gap-to-supervised columns
    assert "gap to supervised" not in (out / "leaderboard.md").read_text().lower()
    assert "gap to supervised" not in (out / "report.html").read_text().lower()
    # a kept result is reused only if the method's resolved options (defaults included) are unchanged;
    # one written before specs held them is compared on the rest
    kept = out / "results" / "kmeans.json"
    config = json.loads(kept.read_text())["spec"]["config"]
    for edit, reused in ((lambda spec: spec.pop("config"), True),
                         (lambda spec: spec.update(config={**config, "num_centroids": 16}), False)):
        stored = json.loads(kept.read_text())
        edit(stored["spec"])
        kept.write_text(json.dumps(stored))
        capsys.readouterr()
        assert cli.main(["bench", "--plan", str(plan), "--out", str(out), "--device", "cpu"]) == 0
        assert (f"reusing {kept}" in capsys.readouterr().out) == reused
    assert json.loads(kept.read_text())["spec"]["config"]["num_centroids"] == 32


def test_random_reference_of_a_non_backbone_encoder_is_a_distribution(fm_tiny, tmp_path):
    """k-means' random reference keeps the learned whitening: each init draws its own centroids."""
    from unsup.api import pretrain
    from unsup.evaluate.protocol import random_encoder_rows
    from unsup.run import RunDir, load_method

    run = pretrain("kmeans", data=fm_tiny, budget="3000", out=tmp_path / "km", device="cpu", quiet=True,
                   options={"num_centroids": 32, "num_patches": 5000}, monitor=False, figures=False)
    method = load_method(run)
    train, test = load(fm_tiny, "train"), load(fm_tiny, "test")
    rows = random_encoder_rows(method, train, test, budgets=(10,), seeds=1, device="cpu")
    by_init = rows[0]["accuracies_by_init"]
    assert rows[0]["inits"] == 3 and len({a for (a,) in by_init}) > 1
    # without the run's settings, cached by the initial weights: the same whitening is read back, another one is recomputed
    assert random_encoder_rows(method, train, test, budgets=(10,), seeds=1, device="cpu")[0]["source"] == "cache"
    method.encoder.mean += 1.0
    assert random_encoder_rows(method, train, test, budgets=(10,), seeds=1, device="cpu")[0]["source"] == "computed"
    # with them (as `unsup probe` and the bench pass them), cached by those settings: a whitening whose
    # last bits differ (another CPU's run of the same settings) finds the reference; another seed does not
    config = RunDir(run).read_config()

    def source(config) -> str:
        return random_encoder_rows(method, train, test, budgets=(10,), seeds=1, device="cpu", run_config=config)[0]["source"]

    assert source(config) == "computed" and source(config) == "cache"
    method.encoder.whiten.mul_(1 + 1e-6)
    assert source(config) == "cache"
    assert source({**config, "seed": config["seed"] + 1}) == "computed"
