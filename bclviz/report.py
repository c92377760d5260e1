"""Self-contained HTML reports: one experiment (``bclviz demo``) or your own embeddings (``bclviz inspect``).

One page, readable offline: plotly.js is inlined once in the page head. The experiment
report holds a results table, the compatibility tax and the headroom (what perturbation
can win, see ``docs/metrics.md``), the three-space figure of the preferred perturbation
method and the self-test vs cross-test trade-off plot. The inspection report
(:func:`write_inspection_report`) holds crowding, headroom, the most crowded old-space
pairs, the retrieval baseline of the two embedding sets as they are, the pseudo-old
preview and its three-space figure. Both are written atomically.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

from .evaluation import compatibility_gain, is_compatible, update_gain
from .io import write_text
from .projection import ProjectionMethod

__all__ = [
    "write_report", "report_html", "results_table_html", "readouts_html", "inspection_report_html",
    "write_inspection_report",
]

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
        _figure_html(title, fig, div_id) for title, fig, div_id in (
            (f"Old, pseudo-old and new spaces ({method})", spaces, "three-spaces"),
            ("Self-test vs cross-test", tradeoff, "tradeoff"),
        )
    )
    info = f"dataset <b>{html.escape(str(results['dataset']))}</b> &middot; seed {results['seed']} &middot; k = {results['k']}"
    return _page(f"bclviz report: {html.escape(str(results['dataset']))}", f"""<h1>bclviz report</h1>
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
""")


def _page(title: str, body: str) -> str:
    """A whole offline HTML page: ``title`` (escaped HTML), the shared style, plotly.js inlined, ``body``."""
    from plotly.offline import get_plotlyjs

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
{body}</body>
</html>
"""


def _figure_html(title: str, fig, div_id: str) -> str:
    return (f"<h2>{html.escape(title)}</h2>\n"
            + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_width="100%"))


def write_report(
    path: str | os.PathLike, result, *, projection_method: ProjectionMethod = "auto", method: str | None = None,
) -> Path:
    """Write :func:`report_html` of ``result`` to ``path`` atomically and return the path.

    The page needs no network (plotly.js is inlined, about 4.5 MB). Raises ``OSError``
    naming ``path`` when it cannot be written; nothing partial is left behind.
    """
    return write_text(path, report_html(result, projection_method=projection_method, method=method))


def _table(head, rows) -> str:
    """An HTML table; ``head`` is escaped, cells are HTML already."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join([*lines, "</table>"])


def inspection_report_html(embeddings, inspection, *, projection_method: ProjectionMethod = "auto",
                           max_points: int = 2000, seed: int = 0) -> str:
    """The report page of loaded embeddings and their inspection (``bclviz inspect``) as a string.

    Parameters
    ----------
    embeddings : :class:`~bclviz.features.Embeddings`
    inspection : :class:`~bclviz.inspection.Inspection` of ``embeddings``
    projection_method : {"auto", "umap", "pca", "raw"}, default "auto"
        Projection of the three-space figure; ``"pca"`` is fastest.
    max_points, seed : items drawn for the figure (:func:`bclviz.views.three_spaces_from_embeddings`).
    """
    from .proxies import format_headroom
    from .views import three_spaces_from_embeddings

    r = inspection.results
    esc = lambda v: html.escape(str(v))  # noqa: E731
    split = ("leave-one-out: every item a query against all others" if r["gallery"] == r["items"]
             and r["queries"] == r["items"] else f"{r['queries']:,} queries, {r['gallery']:,} gallery items")
    sources = " &middot; ".join(f"{esc(k)}: <code>{esc(v)}</code>" for k, v in r["sources"].items())
    info = f"{r['items']:,} items &middot; {r['classes']:,} classes &middot; d = {r['dim']} &middot; {esc(split)}"
    crowd = r["crowding"]
    readouts = _table(["readout", "value"], [
        ("crowding of the old prototypes (mean largest cosine to another class)", _fmt(crowd["old"])),
        ("crowding of the new prototypes", _fmt(crowd["new"])),
        ("headroom: mean max(0, S<sub>o</sub> &minus; S<sub>n</sub>) over old-space neighbours",
         esc(format_headroom(r["headroom"]))),
    ])
    pairs = _table(["class", "nearest old-space neighbour", "cos old", "cos new", "excess max(0, old - new)"], [
        (esc(p["class_name"]), esc(p["neighbor_name"]), _fmt(p["cos_old"]), _fmt(p["cos_new"]), _fmt(p["excess"]))
        for p in r["crowded_pairs"]])
    ret = r["retrieval"]
    if ret is None:
        retrieval = '<p class="note">not computed</p>'
    else:
        metrics = [ret["metric"], *(key for key in ret["old_old"] if key.startswith("R@"))]
        rows = [(name, *(_fmt(ret[key][m]) for m in metrics), str(ret[key]["n_queries"]))
                for name, key in (("M(new, new)", "new_new"), ("M(new, old)", "new_old"), ("M(old, old)", "old_old"))]
        retrieval = (_table(["pair (queries, gallery)", *metrics, "queries scored"], rows)
                     + f"\n<p>compatible as they are (M(new, old) &gt; M(old, old) on {esc(ret['metric'])}): "
                       f"<b>{_fmt(ret['compatible'])}</b> &middot; compatibility gain {_fmt(ret['compatibility_gain'])}"
                       f" &middot; {esc(ret['protocol'])}</p>")
    pert = r["perturbation"]
    setting = ", ".join(f"{k} = {v}" for k, v in pert.items() if k in ("eps", "k", "eps_mode", "gamma"))
    preview = _table(["proxy", "value"], [
        ("crowding of the pseudo-old prototypes", _fmt(crowd["pseudo_old"])),
        ("mean ||delta||", _fmt(pert["delta_mean"])),
        ("drift (mean angle between pseudo-old and old prototypes, degrees)", f"{pert['drift_deg']:.2f}"),
        (f"old-embedding recognisability by the old prototypes ({pert['recognisability_items']:,} items)",
         _fmt(pert["recognisability_old"])),
        ("old-embedding recognisability by the pseudo-old prototypes", _fmt(pert["recognisability_pseudo_old"])),
    ])
    spaces = three_spaces_from_embeddings(embeddings, inspection, projection=projection_method,
                                          random_state=seed, max_points=max_points)
    return _page("bclviz inspect report", f"""<h1>bclviz inspect report</h1>
<p>{info}</p>
<p class="note">{sources}</p>
<h2>Where the old space is crowded, and whether the new model separates it</h2>
{readouts}
<p class="note">Prototypes are the normalised means of each class's normalised embeddings. Headroom near
zero: the new model does not separate what the old one crowds, so a perturbation has nothing to relax;
clearly positive: pairs crowded in the old space sit apart in the new one. See docs/metrics.md.</p>
<h3>Most crowded old-space pairs</h3>
{pairs}
<h2>Retrieval of the two embedding sets as they are</h2>
{retrieval}
<p class="note">For a new model trained without a compatibility term (an independent model) M(new, old)
is near chance: the baseline that backward-compatible training starts from. M(new, new) against M(old, old)
is what the update is worth once the gallery is re-embedded.</p>
<h2>Pseudo-old preview: {esc(pert['method'].upper())} ({esc(setting)})</h2>
{preview}
{_figure_html("Old, pseudo-old and new spaces", spaces, "three-spaces")}
""")


def write_inspection_report(path: str | os.PathLike, embeddings, inspection, *,
                            projection_method: ProjectionMethod = "auto", max_points: int = 2000,
                            seed: int = 0) -> Path:
    """Write :func:`inspection_report_html` to ``path`` atomically and return the path.

    Offline like :func:`write_report`; raises ``OSError`` naming ``path`` when it cannot
    be written, and leaves nothing partial behind.
    """
    return write_text(path, inspection_report_html(embeddings, inspection, projection_method=projection_method,
                                                   max_points=max_points, seed=seed))
