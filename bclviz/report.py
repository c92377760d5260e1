"""A self-contained HTML report of one experiment (``bclviz demo``).

One page, readable offline: plotly.js is inlined once in the page head, followed by a
results table, the compatibility tax and the headroom (what perturbation can win, see
``docs/metrics.md``), the three-space figure of the preferred perturbation method and
the self-test vs cross-test trade-off plot. Written atomically.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

from .evaluation import compatibility_gain, is_compatible, update_gain
from .io import write_text
from .projection import ProjectionMethod

__all__ = ["write_report", "report_html", "results_table_html", "readouts_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #555; font-size: 0.9em; }
"""


def _fmt(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    value = float(value)
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _pm(rec: dict | None, side: str, key: str) -> str:
    """``mean &plusmn; half-width`` over seeds (just the value with one seed)."""
    if rec is None or side not in rec:
        return "&ndash;"
    half = (rec.get(f"{side}_ci") or {}).get(key)
    text = _fmt(rec[side].get(key))
    return text if half is None else f"{text} &plusmn; {half:.3f}"


def _versus(rec: dict, ref: str, side: str) -> str:
    diff = rec.get(f"vs_{ref}", {}).get(side)
    if diff is None:
        return "&ndash;"
    half = "" if diff["half_width"] is None else f" &plusmn; {diff['half_width']:.3f}"
    return f"{diff['mean_diff']:+.3f}{half} ({html.escape(diff['verdict'])})"


def results_table_html(results: dict) -> str:
    """HTML table of a ``results.json`` dict: old, independent and every method.

    Columns: self and cross ``mAP@k`` (mean &plusmn; 95% half-width over seeds) and
    ``R@1``, compatible (``M(n,o) > M(o,o)`` on the means), update gain, compatibility
    gain and the paired difference to the reference method with its verdict;
    ``&ndash;`` where a column does not apply.
    """
    key = f"mAP@{results['k']}"
    ref = results.get("reference", "proto")
    m_oo = results["old"]["self"][key]
    ind = results["independent"]
    rows = [("old", results["old"], None, None, None)]
    rows.append(("independent", ind, is_compatible(ind["cross"][key], m_oo),
                 update_gain(ind["self"][key], m_oo, ind["self"][key]), compatibility_gain(ind["cross"][key], m_oo)))
    for name, rec in results["methods"].items():
        rows.append((name, rec, rec["compatible"], rec["update_gain"], rec["compatibility_gain"]))
    head = ["model", f"self {key}", f"cross {key}", "self R@1", "cross R@1", "compatible",
            "update gain", "compatibility gain", f"self vs {ref}", f"cross vs {ref}"]
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for name, rec, compatible, ug, cg in rows:
        cells = [_pm(rec, "self", key), _pm(rec, "cross", key), _pm(rec, "self", "R@1"), _pm(rec, "cross", "R@1"),
                 _fmt(compatible), _fmt(ug), _fmt(cg), _versus(rec, ref, "self"), _versus(rec, ref, "cross")]
        lines.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def readouts_html(results: dict) -> str:
    """HTML table of the compatibility tax and the headroom of a ``results.json`` dict.

    The tax (:func:`bclviz.stats.compatibility_tax`; from ``results["tax"]``, else computed
    from the per-seed records) with its paired 95% interval and verdict, and the headroom
    (``results["headroom"]``, :func:`bclviz.experiment.prototype_headroom`) with the
    crowding of both prototype sets; ``n/a (reason)`` where one is missing.
    """
    from .proxies import format_headroom
    from .readouts import format_tax, tax_of

    tax = tax_of(results)
    rows = [
        (f"compatibility tax: independent self &minus; proto self ({html.escape(str(tax['metric']))})",
         html.escape(format_tax(tax, plus_minus="\u00b1"))),
        ("headroom: mean max(0, S<sub>o</sub> &minus; S<sub>n</sub>) over old-space neighbours, "
         "old vs independent prototypes", html.escape(format_headroom(results.get("headroom")))),
    ]
    return "\n".join(["<table>", "<tr><th>readout</th><th>value</th></tr>",
                      *(f"<tr><td>{name}</td><td>{value}</td></tr>" for name, value in rows), "</table>"])


def report_html(result, *, projection_method: ProjectionMethod = "auto", method: str | None = None) -> str:
    """The report page of an :class:`~bclviz.experiment.ExperimentResult` as a string.

    Parameters
    ----------
    result : ExperimentResult
    projection_method : {"auto", "umap", "pca", "raw"}, default "auto"
        Projection of the three-space figure; ``"pca"`` is fastest.
    method : str, optional
        Method shown in the three-space figure; default
        :func:`bclviz.views.preferred_method` (``ndpp``, else ``odpp``, ...).
    """
    from plotly.offline import get_plotlyjs

    from .plots import tradeoff_figure, tradeoff_points
    from .readouts import tax_of
    from .views import preferred_method, three_spaces_from_result

    results = result.results
    key = f"mAP@{results['k']}"
    method = preferred_method(list(results["methods"]) or list(result.new)) if method is None else method
    spaces = three_spaces_from_result(result, method, projection=projection_method, random_state=results["seed"])
    tax = tax_of(results, metric=key)  # the plot shows mAP@k; the headline may be another metric
    tradeoff = tradeoff_figure(tradeoff_points(results), old_old=results["old"]["self"][key], metric=key, tax=tax)
    figures = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n"
        + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_width="100%")
        for title, fig, div_id in (
            (f"Old, pseudo-old and new spaces ({method})", spaces, "three-spaces"),
            ("Self-test vs cross-test", tradeoff, "tradeoff"),
        )
    )
    info = f"dataset <b>{html.escape(str(results['dataset']))}</b> &middot; seed {results['seed']} &middot; k = {results['k']}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>bclviz report: {html.escape(str(results['dataset']))}</title>
<style>{_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>bclviz report</h1>
<p>{info}</p>
<h2>Results</h2>
{results_table_html(results)}
<p class="note">self = M(new, new), cross = M(new, old) (queries from the new model, gallery from
the old one). Compatible means cross &gt; M(old, old), strictly. Update gain =
(M(n,n) - M(o,o)) / (M(ind,ind) - M(o,o)); compatibility gain = (M(n,o) - M(o,o)) / M(o,o).</p>
<h2>What perturbation can win</h2>
{readouts_html(results)}
<p class="note">Compatibility tax: what aligning with the old model costs the new model's self-test
(paired by seed; "above zero" when the whole 95% interval is). Near zero, aligning costs nothing: a
relaxation has no self-test to win back. Headroom: how much closer neighbouring classes sit in the old space
than the independent model places them (NDPP's own weight, first seed). Near zero, the new model does
not separate what the old one crowds, so a perturbation has nothing to relax. See docs/metrics.md.</p>
{figures}
</body>
</html>
"""


def write_report(
    path: str | os.PathLike, result, *, projection_method: ProjectionMethod = "auto", method: str | None = None,
) -> Path:
    """Write :func:`report_html` of ``result`` to ``path`` atomically and return the path.

    The page needs no network (plotly.js is inlined, about 4.5 MB). Raises ``OSError``
    naming ``path`` when it cannot be written; nothing partial is left behind.
    """
    return write_text(path, report_html(result, projection_method=projection_method, method=method))
