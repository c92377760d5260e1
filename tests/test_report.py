import os
import re
import tempfile

import pytest

from bclviz.cli import _format_table
from bclviz.proxies import format_headroom
from bclviz.report import readouts_html, results_table_html, write_report
from bclviz.readouts import format_tax
from bclviz.stats import compatibility_tax


@pytest.fixture(scope="session")
def report_experiment(tiny_experiment):
    return tiny_experiment[1]


@pytest.fixture(scope="module")
def report(report_experiment, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "out" / "report.html"
    written = write_report(path, report_experiment, projection_method="pca")
    return written, path.read_text(encoding="utf-8")


def test_report_is_written_and_offline(report):
    path, text = report
    assert path.is_file() and text.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.I)  # nothing fetched
    assert not re.search(r"<link[^>]*https?://", text, flags=re.I)
    assert text.count("Plotly.newPlot") == 2
    assert len(text) > 1_000_000  # plotly.js inlined
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_report_header_and_table(report, report_experiment):
    _, text = report
    results = report_experiment.results
    assert "dataset <b>toy</b>" in text and f"seed {results['seed']}" in text
    for name in ("old", "independent", "proto", "ndpp"):
        assert f"<tr><td>{name}</td>" in text
    rec = results["methods"]["ndpp"]
    row = re.search(r"<tr><td>ndpp</td>(.*?)</tr>", text).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells == [
        f"{rec['self']['mAP@100']:.3f}", f"{rec['cross']['mAP@100']:.3f}",
        f"{rec['self']['R@1']:.3f}", f"{rec['cross']['R@1']:.3f}",
        "yes" if rec["compatible"] else "no", f"{rec['update_gain']:.3f}", f"{rec['compatibility_gain']:.3f}",
        *[f"{rec['vs_proto'][side]['mean_diff']:+.3f} ({rec['vs_proto'][side]['verdict']})" for side in ("self", "cross")],
    ]
    old_row = re.search(r"<tr><td>old</td>(.*?)</tr>", text).group(1)
    assert re.findall(r"<td>(.*?)</td>", old_row)[0] == f"{results['old']['self']['mAP@100']:.3f}"
    assert results_table_html(results) in text


def test_report_holds_both_figures(report):
    _, text = report
    assert 'id="three-spaces"' in text and 'id="tradeoff"' in text
    for uid in ("pseudo_old_arrows", "pseudo_old_protos", "points-ndpp", "criterion", "pareto", "tax"):
        assert f'"uid":"{uid}"' in text
    assert "ndpp: old | pseudo-old | new (pca)" in text


def test_unwritable_folder_raises_and_leaves_nothing(report_experiment, tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: refuse the write the same way
            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(OSError, match="report.html"):
            write_report(folder / "report.html", report_experiment, projection_method="pca")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_folder_that_is_a_file_raises_and_leaves_nothing(report_experiment, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(OSError, match="report.html"):
        write_report(blocker / "report.html", report_experiment, projection_method="pca")
    assert blocker.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == ["not_a_folder"]


def test_table_and_tradeoff_show_intervals_over_seeds():
    from bclviz.plots import tradeoff_figure, tradeoff_points

    def rec(mean, half, **extra):
        return {"self": {"mAP@100": mean, "R@1": mean}, "cross": {"mAP@100": mean / 2, "R@1": mean / 2},
                "self_ci": {"mAP@100": half, "R@1": half}, "cross_ci": {"mAP@100": half / 2, "R@1": half / 2}, **extra}

    diff = {"mean_diff": 0.02, "half_width": 0.01, "verdict": "better"}
    results = {"k": 100, "reference": "proto", "old": {"self": {"mAP@100": 0.3, "R@1": 0.4}},
               "independent": rec(0.8, 0.02),
               "methods": {"proto": rec(0.7, 0.03, compatible=True, update_gain=0.8, compatibility_gain=0.1),
                           "ndpp": rec(0.72, 0.01, compatible=True, update_gain=0.84, compatibility_gain=0.2,
                                       vs_proto={"self": diff, "cross": diff})}}
    table = results_table_html(results)
    row = re.search(r"<tr><td>ndpp</td>(.*?)</tr>", table).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells[0] == "0.720 &plusmn; 0.010" and cells[1] == "0.360 &plusmn; 0.005"
    assert cells[-2] == "+0.020 &plusmn; 0.010 (better)"
    fig = tradeoff_figure(tradeoff_points(results), old_old=0.3)
    ndpp = next(t for t in fig.data if (t.uid or t.meta) in ("points-ndpp",) or t.name == "ndpp")
    assert list(ndpp.error_y.array) == [0.01] and list(ndpp.error_x.array) == [0.005]


def test_experiment_results_hold_tax_and_headroom(report, report_experiment):
    _, text = report
    results = report_experiment.results
    assert results["tax"] == compatibility_tax(results)
    assert results["tax"]["metric"] == results["headline"] and results["tax"]["seeds"] == len(results["seeds"])
    room = results["headroom"]
    assert set(room) == {"value", "k", "crowding_old", "crowding_new"}
    assert room["k"] == min(5, report_experiment.data.num_classes - 1) and 0.0 <= room["value"] <= 2.0
    assert readouts_html(results) in text and "What perturbation can win" in text
    table = _format_table(results)
    assert f"compatibility tax (independent self - proto self, {results['headline']}): {format_tax(results['tax'])}" in table
    assert format_headroom(room) in table


def _synthetic_results(proto=True):
    def rec(values, **extra):
        per_seed = [{"self": {"mAP@100": v, "R@1": v}, "cross": {"mAP@100": v / 2, "R@1": v / 2}} for v in values]
        mean = sum(values) / len(values)
        return {"self": {"mAP@100": mean, "R@1": mean}, "cross": {"mAP@100": mean / 2, "R@1": mean / 2},
                "self_ci": {"mAP@100": 0.01, "R@1": 0.01}, "cross_ci": {"mAP@100": 0.005, "R@1": 0.005},
                "per_seed": per_seed, **extra}

    methods = {"ndpp": rec([0.74, 0.75, 0.73], compatible=True, update_gain=0.8, compatibility_gain=0.2)}
    if proto:
        methods["proto"] = rec([0.70, 0.72, 0.71], compatible=True, update_gain=0.7, compatibility_gain=0.1)
    results = {"k": 100, "headline": "mAP@100", "reference": "proto", "old": {"self": {"mAP@100": 0.3, "R@1": 0.4}},
               "independent": rec([0.80, 0.81, 0.79]), "methods": methods,
               "headroom": {"value": 0.0412, "k": 5, "crowding_old": 0.61, "crowding_new": 0.40}}
    results["tax"] = compatibility_tax(results)
    return results


def test_table_report_and_plot_show_tax_and_headroom():
    from bclviz.plots import tradeoff_figure, tradeoff_points

    results = _synthetic_results()
    assert results["tax"]["tax"] == pytest.approx(0.09) and results["tax"]["verdict"] == "above zero"
    table = _format_table(results)
    assert table.splitlines()[-2] == f"compatibility tax (independent self - proto self, mAP@100): {format_tax(results['tax'])}"
    assert table.splitlines()[-1].endswith("0.041 (k = 5; crowding old 0.610, new 0.400)")
    html_ = readouts_html(results)
    assert f"+0.090 \u00b1 {results['tax']['half_width']:.3f} (above zero)" in html_
    assert "0.041 (k = 5; crowding old 0.610, new 0.400)" in html_
    fig = tradeoff_figure(tradeoff_points(results), old_old=0.3, tax=results["tax"])
    seg = next(t for t in fig.data if t.uid == "tax")
    ind, proto = results["independent"], results["methods"]["proto"]
    assert list(seg.x) == [ind["cross"]["mAP@100"], proto["cross"]["mAP@100"]]
    assert list(seg.y) == [ind["self"]["mAP@100"], proto["self"]["mAP@100"]]
    assert "+0.090 &plusmn;" in seg.name and "(above zero)" in seg.name
    assert any(a.text.startswith("tax +0.090") for a in fig.layout.annotations)
    # one seed: a value, no interval
    one = _synthetic_results()
    for rec in (one["independent"], one["methods"]["proto"]):
        rec["per_seed"] = rec["per_seed"][:1]
    one["tax"] = compatibility_tax(one)
    assert "+0.100 (no interval (1 seed))" in _format_table(one)  # 0.80 - 0.70 on the first seed


def test_readouts_without_proto_or_headroom():
    from bclviz.plots import tradeoff_figure, tradeoff_points

    results = _synthetic_results(proto=False)
    del results["headroom"]
    assert results["tax"]["tax"] is None
    table = _format_table(results)
    assert table.splitlines()[-1].startswith("compatibility tax (independent self - proto self, mAP@100): n/a (proto not run")
    assert "headroom" not in table
    assert "n/a (proto not run" in readouts_html(results) and "n/a (not computed)" in readouts_html(results)
    fig = tradeoff_figure(tradeoff_points(results), old_old=0.3, tax=results["tax"])
    assert "tax" not in {t.uid for t in fig.data}
    # results.json written before the tax existed: computed from the per-seed records
    old = _synthetic_results()
    del old["tax"]
    assert format_tax(compatibility_tax(old)) in _format_table(old)
