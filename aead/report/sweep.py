"""Sweep reports (`python -m aead.report`, whose CLI is aead/report/cli.py): reads one sweep's
runs from MLflow and writes report.html (self-contained, images beside it), report.md,
summary.csv and, for a one-class benchmark, one_class.csv.

The numbers in the tables are the metrics the runs logged, aggregated over seeds; nothing is
recomputed, except the overlaid ROC curves, which are drawn from each run's scores.csv.
"""

from __future__ import annotations

import html
import itertools
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from aead import plots
from aead.report import one_class
from aead.tracking.artifacts import MAP_SAMPLE
from aead.tracking.runs import (
    download_artifact,
    run_url,
    search_runs,
)
from aead.tracking.secrets import redact

SWEEP_TAG = "tags.sweep_id"
CONFIG_HASH = "tags.aead.config_hash"
SCENARIO = "params.scenario.name"
# Params that vary across a sweep without defining a variant.
NOT_VARIANT = ("params.seed", "params.run_name", "params.tracking.")
MEAN_STD = ("roc_auc", "average_precision")
# pixel-level figures, where runs have them (data with ground-truth masks): mean ± std too
PIXEL_MEAN_STD = ("pixel_roc_auc", "pixel_aupro")
PIXEL_HEADERS = ("pixel ROC-AUC", "AUPRO")
MEANS = ("accuracy", "precision", "recall", "f1", "threshold_lower", "threshold_upper")
FPR_GRID = np.linspace(0.0, 1.0, 201)


def _progress(i: int, n: int, what: str) -> None:
    """One self-overwriting line on a terminal; in a log, a line per tenth of the way."""
    if sys.stderr.isatty():
        end = "\n" if i == n else ""
        print(f"\r[aead.report] {what} {i}/{n}", end=end, file=sys.stderr, flush=True)
    elif i == n or i % max(1, n // 10) == 0:
        print(f"[aead.report] {what} {i}/{n}", file=sys.stderr, flush=True)


def load_sweep(tracking_uri: str, experiment: str | None, sweep_id: str | None):
    """The runs of one sweep (the latest one when sweep_id is None) and its id. A
    comma-separated list of sweep ids reports their runs together (seeds run as separate
    sweeps, say); a job run in more than one is counted once (`latest_attempts`)."""
    names = [experiment] if experiment else None
    if sweep_id is None:
        tagged = search_runs(tracking_uri, names, "tags.sweep_id != ''", max_results=1)
        if tagged.empty or SWEEP_TAG not in tagged:
            raise SystemExit(
                f"no sweep found at {redact(tracking_uri)}: run one with "
                "`python -m aead.run -m ...`"
            )
        sweep_id = str(tagged.iloc[0][SWEEP_TAG])  # newest first
    ids = [part.strip() for part in sweep_id.split(",") if part.strip()]
    found = []
    for one in ids:
        runs = search_runs(tracking_uri, names, f"tags.sweep_id = '{one}'")
        if runs.empty:
            raise SystemExit(f"no runs with sweep id '{one}' at {redact(tracking_uri)}")
        found.append(runs)
    runs = found[0] if len(found) == 1 else pd.concat(found, ignore_index=True)
    return "+".join(ids), latest_attempts(with_added_defaults(runs))


def with_added_defaults(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs recorded before a setting existed hold no param for it: they ran at what is now
    its default (settings.ADDED_DEFAULTS), and are shown as such, beside newer runs."""
    from aead.settings import ADDED_DEFAULTS

    runs = runs.copy()
    for group, defaults in ADDED_DEFAULTS.items():
        for key, value in defaults.items():
            column = f"params.{group}.{key}"
            if column in runs:
                runs[column] = runs[column].fillna("null" if value is None else str(value))
    return runs


def latest_attempts(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per job of a resumed sweep: a job (same config hash) that failed or was killed
    and then re-run is represented by its FINISHED run, else by its newest attempt."""
    if CONFIG_HASH not in runs:
        return runs
    tagged = runs[runs[CONFIG_HASH].notna()]
    order = tagged.assign(_done=tagged["status"] == "FINISHED").sort_values(
        ["_done", "start_time"], ascending=[False, False], kind="stable"
    )
    kept = order.drop_duplicates(CONFIG_HASH).drop(columns="_done")
    superseded = len(tagged) - len(kept)
    if superseded:
        print(
            f"[aead.report] {superseded} earlier attempt(s) of re-run jobs left out",
            file=sys.stderr,
        )
    untagged = runs[runs[CONFIG_HASH].isna()]
    return pd.concat([kept, untagged]).sort_values("start_time", ascending=False)


def _determines(runs: pd.DataFrame, a: str, b: str) -> bool:
    """True when each value of column a comes with a single value of column b."""
    pairs = runs[[a, b]].fillna("null").astype(str).drop_duplicates()
    return pairs[a].is_unique


def variant_columns(runs: pd.DataFrame) -> list[str]:
    """The param columns that differ across the sweep (seed excluded), scenario first; a column
    that another one determines (loss.score follows loss.name, say) adds nothing and is left out."""
    differing = [
        c
        for c in runs.columns
        if c.startswith("params.")
        and not c.startswith(NOT_VARIANT)
        and runs[c].fillna("null").nunique() > 1
    ]
    # the groups' names first, so that they are kept and their details dropped
    differing.sort(key=lambda c: (c != SCENARIO, not c.endswith(".name"), c))
    kept: list[str] = []
    for column in differing:
        if not any(_determines(runs, k, column) for k in kept):
            kept.append(column)
    if SCENARIO in runs and SCENARIO not in kept:
        kept.insert(0, SCENARIO)
    return kept


def _is_complete(runs: pd.DataFrame) -> pd.Series:
    has_auc = runs["metrics.roc_auc"].notna() if "metrics.roc_auc" in runs else False
    return (runs["status"] == "FINISHED") & has_auc


def summarize(runs: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """One row per variant: metrics as logged, mean (± sample std for ROC-AUC and AP) over seeds."""
    done = runs[_is_complete(runs)].copy()
    rows = []
    for key, group in done.groupby([c for c in variants], sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {c.removeprefix("params."): v for c, v in zip(variants, key, strict=True)}
        row["n_runs"] = len(group)
        for metric in MEAN_STD + PIXEL_MEAN_STD + MEANS:
            values = group.get(f"metrics.{metric}", pd.Series(dtype=float)).dropna()
            row[metric] = float(values.mean()) if len(values) else math.nan
            if metric in MEAN_STD + PIXEL_MEAN_STD:
                # one run: no spread can be known (NaN, shown without ±)
                row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        ordered = group.sort_values(["params.seed", "run_id"]) if "params.seed" in group else group
        row["run_ids"] = list(ordered["run_id"])
        row["experiment_ids"] = list(ordered["experiment_id"])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    sort_by = ["scenario.name", "roc_auc"] if "scenario.name" in table else ["roc_auc"]
    ascending = [True, False] if len(sort_by) == 2 else [False]
    return table.sort_values(sort_by, ascending=ascending, kind="stable").reset_index(drop=True)


def problems(runs: pd.DataFrame, variants: list[str]) -> list[dict]:
    """Failed or unfinished runs, and grid combinations that no run covers."""
    found = []
    for _, run in runs[~_is_complete(runs)].sort_values("run_id").iterrows():
        found.append(
            {
                "what": f"run {run['status'].lower()}"
                + ("" if run["status"] != "FINISHED" else " without roc_auc"),
                "run_id": run["run_id"],
                "config": _config_label(run, variants + ["params.seed"]),
            }
        )
    # Expected: every variant seen in the sweep, in every scenario, with every seed. (Variants
    # are taken as observed, not as a product of their columns: a sweep may pair them, e.g.
    # the CNN baseline comes with one loss only.)
    axes = [c for c in (SCENARIO, "params.seed") if c in runs]
    others = [c for c in variants if c not in axes]
    frame = runs[others + axes].fillna("null").astype(str)
    present = set(map(tuple, frame.values))
    variant_rows = sorted(set(map(tuple, frame[others].values)))
    levels = [sorted(frame[c].unique()) for c in axes]
    for variant in variant_rows:
        for combo in itertools.product(*levels):
            if (*variant, *combo) not in present:
                label = " ".join(
                    f"{c.removeprefix('params.')}={v}"
                    for c, v in zip(others + axes, (*variant, *combo), strict=True)
                )
                found.append({"what": "missing from the sweep", "run_id": "", "config": label})
    return found


def _config_label(run: pd.Series, columns: list[str]) -> str:
    return " ".join(f"{c.removeprefix('params.')}={run.get(c)}" for c in columns if c in run)


def _variant_label(row: pd.Series, variants: list[str]) -> str:
    names = [c.removeprefix("params.") for c in variants if c != SCENARIO]
    # a setting the variant does not have (score.normalize of score=raw) is left out
    present = [n for n in names if not one_class.is_unset(row[n])]
    return " ".join(f"{n}={row[n]}" for n in present) or "(single variant)"


def _fmt(value: float, std: float | None = None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    known = std is not None and not (isinstance(std, float) and math.isnan(std))
    return f"{text} ± {std:.{digits}f}" if known else text


def _mean_roc(tracking_uri: str, run_ids: list[str], workdir: Path) -> np.ndarray | None:
    """TPR on FPR_GRID, averaged over the runs' ROC curves (from their scores.csv)."""
    curves = []
    for run_id in run_ids:
        path = download_artifact(tracking_uri, run_id, "scores.csv", workdir / run_id)
        if path is None:
            continue
        scores = pd.read_csv(path)
        if scores["label"].nunique() == 2:
            fpr, tpr, _ = roc_curve(scores["label"], scores["score"])
            curves.append(np.interp(FPR_GRID, fpr, tpr))
    return np.mean(curves, axis=0) if curves else None


def write_figures(
    tracking_uri: str, table: pd.DataFrame, variants: list[str], out_dir: Path
) -> dict[str, list[tuple[str, str]]]:
    """ROC overlays per scenario and each variant's error histogram, as files in out_dir."""
    images: dict[str, list[tuple[str, str]]] = {"roc": [], "histograms": []}
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    total = len(table)
    with tempfile.TemporaryDirectory(prefix="aead-report-") as tmp:
        workdir = Path(tmp)
        curves_by_scenario: dict[str, dict] = {}
        for i, (_, row) in enumerate(table.iterrows(), start=1):
            _progress(i, total, "reading runs of variant")
            scenario = str(row.get("scenario.name", "all"))
            label = _variant_label(row, variants)
            tpr = _mean_roc(tracking_uri, row["run_ids"], workdir)
            curves = curves_by_scenario.setdefault(scenario, {})
            # variants that share a model (threshold variants) share a curve: draw it once
            if tpr is not None and not any(np.array_equal(tpr, t) for _, t in curves.values()):
                curves[f"{label} (AUC {row['roc_auc']:.3f})"] = (FPR_GRID, tpr)
            hist = download_artifact(
                tracking_uri, row["run_ids"][0], "plots/error_histogram.png", workdir / "h"
            )
            if hist is not None:
                name = f"images/histogram_{i:02d}.png"
                shutil.copyfile(hist, out_dir / name)
                images["histograms"].append((name, f"{scenario}: {label}"))
        for scenario, curves in sorted(curves_by_scenario.items()):
            name = f"images/roc_{scenario}.png"
            figure = plots.roc_overlay(curves, f"ROC curves, {scenario} (mean over seeds)")
            figure.savefig(out_dir / name, dpi=100, metadata={"Software": None})
            plots.close(figure)
            images["roc"].append((name, scenario))
    return images


MAX_MAP_ROWS = 12  # variants per maps figure


def write_map_figures(
    tracking_uri: str, table: pd.DataFrame, variants: list[str], out_dir: Path
) -> list[tuple[str, str]]:
    """One figure per set of test images that variants share (their runs' maps/sample.npz):
    the images on top, each variant's maps of the same images below. Variants whose runs saw
    other test images (another category, another scenario) get a figure of their own."""
    import hashlib

    by_images: dict[str, dict] = {}  # digest of the sample images -> images, masks, rows
    with tempfile.TemporaryDirectory(prefix="aead-report-maps-") as tmp:
        for i, (_, row) in enumerate(table.iterrows(), start=1):
            _progress(i, len(table), "reading anomaly maps of variant")
            label = _variant_label(row, variants)
            for run_id in row["run_ids"]:
                path = download_artifact(tracking_uri, run_id, MAP_SAMPLE, Path(tmp) / run_id)
                if path is None:
                    continue
                with np.load(path) as sample:
                    arrays = {k: sample[k] for k in sample.files}
                digest = hashlib.sha1(arrays["images"].tobytes()).hexdigest()
                group = by_images.setdefault(digest, {"arrays": arrays, "rows": {}})
                group["rows"].setdefault(label, arrays["maps"])
    figures, shown = [], set()
    # the image sets most variants share first; a set adds a figure only for new variants
    for n, group in enumerate(sorted(by_images.values(), key=lambda g: -len(g["rows"])), 1):
        if set(group["rows"]) <= shown:
            continue
        shown |= set(group["rows"])
        arrays, rows = group["arrays"], dict(list(group["rows"].items())[:MAX_MAP_ROWS])
        captions = [
            f"#{i}{' anomaly' if y else ' normal'}"
            for i, y in zip(arrays["index"], arrays["labels"], strict=True)
        ]
        images = arrays["images"]
        figure = plots.maps_by_variant(
            images[..., 0] if images.shape[-1] == 1 else images, rows, arrays.get("masks"),
            captions, f"Anomaly maps of the same test images ({len(rows)} variants)",
        )  # fmt: skip
        name = f"images/maps_{n:02d}.png"
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        figure.savefig(out_dir / name, dpi=100, metadata={"Software": None})
        plots.close(figure)
        figures.append((name, ", ".join(rows)))
    return figures


TABLE_HEADERS = [
    "variant", "runs", "ROC-AUC", "AP", "accuracy", "precision", "recall", "F1",
    "threshold lower", "threshold upper", "MLflow runs",
]  # fmt: skip


def _has_pixels(table: pd.DataFrame) -> bool:
    return any(m in table and table[m].notna().any() for m in PIXEL_MEAN_STD)


def _headers(table: pd.DataFrame) -> list[str]:
    if not _has_pixels(table):
        return TABLE_HEADERS
    return [*TABLE_HEADERS[:4], *PIXEL_HEADERS, *TABLE_HEADERS[4:]]


def _table_cells(row: pd.Series, variants: list[str], pixels: bool = False) -> list[str]:
    pixel_cells = [_fmt(row[m], row[f"{m}_std"]) for m in PIXEL_MEAN_STD] if pixels else []
    return [
        _variant_label(row, variants),
        str(row["n_runs"]),
        _fmt(row["roc_auc"], row["roc_auc_std"]),
        _fmt(row["average_precision"], row["average_precision_std"]),
        *pixel_cells,
        *(_fmt(row[m]) for m in MEANS),
    ]


def render_markdown(
    sweep_id: str, table: pd.DataFrame, variants, issues: list[dict], extra: str = "", maps=()
) -> str:
    lines = [f"# Sweep `{sweep_id}`", ""]
    if extra:  # the one-class benchmark's table comes first: it is the sweep's headline
        lines += [extra, ""]
    headers, pixels = _headers(table), _has_pixels(table)
    for scenario, part in _by_scenario(table):
        lines += [f"## {scenario}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * len(headers))
        for _, row in part.iterrows():
            ids = ", ".join(f"`{r[:8]}`" for r in row["run_ids"])
            cells = _table_cells(row, variants, pixels)
            lines.append("| " + " | ".join([*cells, ids]) + " |")
        lines.append("")
    lines += ["ROC-AUC and AP: mean ± sample std over seeds, as logged by each run.", ""]
    if maps:
        lines += ["## Anomaly maps", "", "The same test images for each variant; "
                  "white: the ground-truth mask.", ""]  # fmt: skip
        lines += [f"![anomaly maps: {caption}]({name})" for name, caption in maps] + [""]
    if issues:
        lines += ["## Failed or missing runs", ""]
        lines += [f"- {p['what']}: {p['config']} {p['run_id']}".rstrip() for p in issues]
        lines.append("")
    return "\n".join(lines)


def _by_scenario(table: pd.DataFrame):
    if table.empty:
        return []
    if "scenario.name" not in table:
        return [("all runs", table)]
    return [(s, table[table["scenario.name"] == s]) for s in table["scenario.name"].unique()]


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}
td:first-child,th:first-child{text-align:left}
tr:first-child td{background:#eef7ee}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
figure{margin:0}figcaption{font-size:12px;color:#555}img{max-width:100%}
"""


def render_html(
    sweep_id: str, tracking_uri: str, table, variants, images, issues: list[dict], extra=""
) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>aead sweep {esc(sweep_id)}</title><style>{CSS}</style></head><body>",
        f"<h1>Sweep <code>{esc(sweep_id)}</code></h1>",
        f"<p>{int(table['n_runs'].sum()) if not table.empty else 0} finished runs from "
        f"<code>{esc(redact(tracking_uri))}</code>. Rows sorted by ROC-AUC within each scenario "
        "(best first); ROC-AUC and AP are mean ± sample std over seeds, as logged.</p>",
        extra,
    ]
    roc_images = dict((s, n) for n, s in images["roc"])
    for scenario, part in _by_scenario(table):
        parts.append(f"<h2>{esc(str(scenario))}</h2><table id='table-{esc(str(scenario))}'>")
        headers, pixels = _headers(table), _has_pixels(table)
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>")
        for _, row in part.iterrows():
            links = " ".join(
                f"<a href='{esc(run_url(tracking_uri, e, r))}'>{esc(r[:8])}</a>"
                for r, e in zip(row["run_ids"], row["experiment_ids"], strict=True)
            )
            cells = "".join(f"<td>{esc(c)}</td>" for c in _table_cells(row, variants, pixels))
            parts.append(f"<tr>{cells}<td>{links}</td></tr>")
        parts.append("</table>")
        if scenario in roc_images:
            parts.append(f"<figure><img src='{roc_images[scenario]}' alt='ROC {esc(scenario)}'>")
            parts.append("</figure>")
    if images["histograms"]:
        parts.append("<h2>Error histograms</h2><div class='grid'>")
        for name, caption in images["histograms"]:
            parts.append(
                f"<figure><img src='{name}' alt='{esc(caption)}'>"
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    if images.get("maps"):
        parts.append(
            "<h2>Anomaly maps</h2><p>The same test images for each variant (one colour scale "
            "per variant); white: the ground-truth mask.</p>"
        )
        for name, caption in images["maps"]:
            parts.append(
                f"<figure><img src='{name}' alt='anomaly maps'>"
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    parts.append("<h2>Failed or missing runs</h2>")
    if issues:
        parts.append("<ul id='problems'>")
        parts += [
            f"<li>{esc(p['what'])}: {esc(p['config'])} <code>{esc(p['run_id'])}</code></li>"
            for p in issues
        ]
        parts.append("</ul>")
    else:
        parts.append("<p id='problems'>None: every run of the sweep finished.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def run_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its id, status, config and metrics."""
    keep = ["run_id", "status", SWEEP_TAG] + sorted(
        c for c in runs.columns if c.startswith(("params.", "metrics."))
    )
    frame = runs[[c for c in keep if c in runs]].copy()
    order = [c for c in (SCENARIO, "params.model.name", "params.seed", "run_id") if c in frame]
    frame = frame.sort_values(order, kind="stable")
    return frame.rename(columns=lambda c: c.split(".", 1)[1] if c.startswith("params.") else c)


def write_report(
    tracking_uri: str,
    experiment: str | None = None,
    sweep_id: str | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    sweep_id, runs = load_sweep(tracking_uri, experiment, sweep_id)
    out = Path(out_dir) if out_dir else Path("reports") / sweep_id
    out.mkdir(parents=True, exist_ok=True)
    print(f"[aead.report] sweep {sweep_id}: {len(runs)} runs", file=sys.stderr)
    variants = variant_columns(runs)
    table = summarize(runs, variants)
    issues = problems(runs, variants)
    benchmark = one_class.write(runs, variants, out)  # None unless normal_class varies
    extra_md, extra_html = benchmark or ("", "")
    images = write_figures(tracking_uri, table, variants, out)
    images["maps"] = write_map_figures(tracking_uri, table, variants, out)
    (out / "report.md").write_text(
        render_markdown(sweep_id, table, variants, issues, extra_md, images["maps"])
    )
    (out / "report.html").write_text(
        render_html(sweep_id, tracking_uri, table, variants, images, issues, extra_html)
    )
    run_summary(runs).to_csv(out / "summary.csv", index=False)
    return out / "report.html"
