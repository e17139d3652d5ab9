"""The one-class benchmark as the papers print it: per dataset, one row per normal class, one
column per detector (ROC-AUC %, mean ± std over seeds), the mean over the classes, and the
published methods' figures (from aead/report/published/one_class.yaml) as extra columns.

Built from the runs' logged metrics only; the report adds it when a sweep varies
`scenario.normal_class`.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import pandas as pd
import yaml

PUBLISHED = Path(__file__).parent / "published" / "one_class.yaml"
NORMAL_CLASS = "params.scenario.normal_class"
DATASET = "params.scenario.dataset"
OVERRIDES = "tags.overrides"
CELL = re.compile(r"(?:^|\s)\+{0,2}detector=(\S+)")
SEED = "params.seed"
DURATION = "metrics.duration_s"  # the whole job's wall time, training included
CSV_COLUMNS = ["dataset", "normal_class", "detector", "roc_auc_mean", "roc_auc_std", "n_runs"]
SEED_COLUMNS = ["dataset", "detector", "seed", "roc_auc_mean", "n_classes", "duration_s_mean"]


def is_benchmark(runs: pd.DataFrame) -> bool:
    return NORMAL_CLASS in runs and runs[NORMAL_CLASS].nunique() > 1


def published_methods(path: Path = PUBLISHED) -> list[dict]:
    """[{name, citation, mean: {dataset: %}, per_class: {dataset: [10 x %]}}]."""
    return yaml.safe_load(path.read_text())["methods"]


def detector_columns(variants: list[str]) -> list[str]:
    """The variant columns that tell detectors apart (not the scenario's)."""
    return [c for c in variants if not c.startswith("params.scenario.")]


def is_unset(value) -> bool:
    """A setting a run does not have (score.normalize of score=raw): NaN in a runs table."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == "nan"


def detector_label(values: dict[str, str]) -> str:
    """'model=conv loss=mse score=latent_knn' from {'params.model.name': 'conv', ...}."""
    parts = []
    for column, value in values.items():
        if is_unset(value):
            continue
        name = column.removeprefix("params.").removesuffix(".name")
        parts.append(f"{name}={value}")
    return " ".join(parts) or "detector"


def detector_cell(overrides) -> str | None:
    """The conf/detector cell a run was started with (`+detector=conv_mse_raw`), if any."""
    match = CELL.search(overrides) if isinstance(overrides, str) else None
    return match.group(1) if match else None


def detector_labels(runs: pd.DataFrame, variants: list[str]) -> list[str]:
    """Each run's detector: its conf/detector cell's name where every run has one and each
    name stands for one set of settings; otherwise the settings that tell detectors apart."""
    detectors = detector_columns(variants)
    settings = [detector_label({c: row[c] for c in detectors}) for _, row in runs.iterrows()]
    cells = [detector_cell(v) for v in runs[OVERRIDES]] if OVERRIDES in runs else [None]
    if None in cells or len(set(cells)) != len(set(zip(cells, settings, strict=True))):
        return settings
    return cells


def _finished(runs: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The FINISHED runs with a logged roc_auc, with their dataset, detector, class, seed."""
    done = runs[(runs["status"] == "FINISHED") & runs["metrics.roc_auc"].notna()].copy()
    if DATASET not in done:
        done[DATASET] = "dataset"
    done["_detector"] = detector_labels(done, variants)
    done["_class"] = done[NORMAL_CLASS].astype(int)
    done["_seed"] = done[SEED].astype(int) if SEED in done else 0
    return done


def per_seed(runs: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """One row per (dataset, detector, seed): the mean ROC-AUC over the classes that seed has
    runs for, and how many classes that is."""
    if "metrics.roc_auc" not in runs:
        return pd.DataFrame(columns=SEED_COLUMNS)
    done = _finished(runs, variants)
    if DURATION not in done:
        done[DURATION] = math.nan
    # one value per class and seed first (a class run twice with one seed counts once)
    by_class = done.groupby([DATASET, "_detector", "_seed", "_class"])[
        ["metrics.roc_auc", DURATION]
    ].mean()
    rows = []
    for (dataset, detector, seed), values in by_class.groupby(level=[0, 1, 2], sort=True):
        rows.append(
            {
                "dataset": dataset,
                "detector": detector,
                "seed": int(seed),
                "roc_auc_mean": float(values["metrics.roc_auc"].astype(float).mean()),
                "n_classes": len(values),
                "duration_s_mean": float(values[DURATION].astype(float).mean()),
            }
        )
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def per_class(runs: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """One row per (dataset, normal class, detector): ROC-AUC mean, sample std, n_runs, from
    the FINISHED runs' logged `roc_auc`."""
    if "metrics.roc_auc" not in runs:
        return pd.DataFrame(columns=CSV_COLUMNS)
    done = _finished(runs, variants)
    rows = []
    for (dataset, normal_class, detector), group in done.groupby(
        [DATASET, "_class", "_detector"], sort=True
    ):
        values = group["metrics.roc_auc"].astype(float)
        rows.append(
            {
                "dataset": dataset,
                "normal_class": int(normal_class),
                "detector": detector,
                "roc_auc_mean": float(values.mean()),
                "roc_auc_std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n_runs": len(values),
            }
        )
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def _pct(mean: float, std: float | None = None) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def mean_cell(seeds: pd.DataFrame, n_classes: int) -> str:
    """The mean row's cell of one detector: over the seeds that have every class, the mean
    ± sample std of the per-seed means over the classes, then each seed's mean, e.g.
    '98.57 ± 0.07 (seed 0: 98.61, 1: 98.49, 2: 98.61)'. Seeds that miss a class are left out
    and counted; with no complete seed, the mean over what there is, marked partial."""
    complete = seeds[seeds["n_classes"] == n_classes].sort_values("seed")
    partial = len(seeds) - len(complete)
    if complete.empty:
        return _pct(seeds["roc_auc_mean"].mean()) + " (partial)" if len(seeds) else "–"
    values = complete["roc_auc_mean"]
    cell = _pct(values.mean(), values.std(ddof=1) if len(values) > 1 else None)
    each = ", ".join(
        f"{'seed ' if i == 0 else ''}{seed}: {100 * v:.2f}"
        for i, (seed, v) in enumerate(zip(complete["seed"], values, strict=True))
    )
    cell += f" ({each})"
    if partial:
        cell += f"; {partial} seed{'s' if partial > 1 else ''} with classes missing left out"
    return cell


def tables(
    results: pd.DataFrame, methods: list[dict], seeds: pd.DataFrame | None = None
) -> dict[str, tuple[list, list]]:
    """Per dataset: (header, rows) with one row per class and a final row with each
    detector's mean over the classes: mean ± std over seeds of the per-seed means, and each
    seed's (from `seeds`, per_seed's table; without it, the mean of the per-class means)."""
    out = {}
    for dataset, part in results.groupby("dataset", sort=True):
        detectors = sorted(part["detector"].unique())
        cited = [m for m in methods if dataset in (m.get("mean") or {})]
        header = ["class", *detectors, *(f"{m['name']} (published)" for m in cited)]
        rows = []
        classes = sorted(part["normal_class"].unique())
        for normal_class in classes:
            cells = [str(normal_class)]
            for detector in detectors:
                hit = part[(part["normal_class"] == normal_class) & (part["detector"] == detector)]
                if not len(hit):
                    cells.append("–")
                    continue
                one = hit.iloc[0]  # a single run has no spread to show
                cells.append(
                    _pct(one["roc_auc_mean"], one["roc_auc_std"] if one["n_runs"] > 1 else None)
                )
            for method in cited:
                figures = (method.get("per_class") or {}).get(dataset)
                cells.append(f"{figures[normal_class]:.1f}" if figures else "–")
            rows.append(cells)
        mean_row = [f"mean ({len(classes)} classes)"]
        for detector in detectors:
            if seeds is not None:
                mine = seeds[(seeds["dataset"] == dataset) & (seeds["detector"] == detector)]
                mean_row.append(mean_cell(mine, len(classes)))
                continue
            means = part[part["detector"] == detector]["roc_auc_mean"]
            complete = len(means) == len(classes)
            mean_row.append(_pct(means.mean()) + ("" if complete else " (partial)"))
        mean_row += [f"{m['mean'][dataset]:.1f}" for m in cited]
        rows.append(mean_row)
        if seeds is not None:  # what a run costs here: its models trained or reused
            time_row = ["seconds per run"]
            for detector in detectors:
                mine = seeds[(seeds["dataset"] == dataset) & (seeds["detector"] == detector)]
                seconds = mine["duration_s_mean"].mean()
                time_row.append("–" if math.isnan(seconds) else f"{seconds:.0f}")
            rows.append(time_row + ["–"] * len(cited))
        out[dataset] = (header, rows)
    return out


def citations(methods: list[dict]) -> list[str]:
    return [f"{m['name']}: {m['citation']}" for m in methods]


NOTE = (
    "ROC-AUC in %, mean ± sample std over seeds of the runs' logged roc_auc; the last row is "
    "the mean over the classes: per seed, the mean over the ten classes, then the mean ± "
    "sample std of those over the seeds, and each seed's mean. Seconds per run: the mean "
    "duration_s (the whole job: its models trained, or reused from the cache, and scoring). "
    "Published columns: the papers' figures (means only where the data file has no "
    "per-class figures)."
)


def markdown(results: pd.DataFrame, methods: list[dict], seeds: pd.DataFrame | None = None) -> str:
    lines = ["## One-class benchmark", ""]
    for dataset, (header, rows) in tables(results, methods, seeds).items():
        lines += [f"### {dataset}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    lines += [NOTE, ""] + [f"- {c}" for c in citations(methods)] + [""]
    return "\n".join(lines)


def html_section(
    results: pd.DataFrame, methods: list[dict], seeds: pd.DataFrame | None = None
) -> str:
    esc = html.escape
    parts = ["<h2>One-class benchmark</h2>", f"<p>{esc(NOTE)}</p>"]
    for dataset, (header, rows) in tables(results, methods, seeds).items():
        parts.append(f"<h3>{esc(dataset)}</h3><table id='one-class-{esc(dataset)}'>")
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append("<ul>" + "".join(f"<li>{esc(c)}</li>" for c in citations(methods)) + "</ul>")
    return "\n".join(parts)


def write(runs: pd.DataFrame, variants: list[str], out: Path) -> tuple[str, str] | None:
    """Writes one_class.csv (per class) and one_class_seeds.csv (per seed); returns the
    (markdown, html) sections, or None when the sweep is not a one-class benchmark."""
    if not is_benchmark(runs):
        return None
    results = per_class(runs, variants)
    results.to_csv(out / "one_class.csv", index=False)
    seeds = per_seed(runs, variants)
    seeds.to_csv(out / "one_class_seeds.csv", index=False)
    methods = published_methods()
    return markdown(results, methods, seeds), html_section(results, methods, seeds)
