import os
import re
import tempfile

import pytest

from bclviz.report import results_table_html, write_report


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
    for uid in ("pseudo_old_arrows", "pseudo_old_protos", "points-ndpp", "criterion", "pareto"):
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
