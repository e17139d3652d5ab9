"""Sweep reports from a small real sweep, checked against MLflow's own records and in a real
headless browser."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
from hydra import compose
from mlflow.tracking import MlflowClient

from aead import pipeline
from aead.pipeline import RunContext, run
from aead.report.cli import main as report_main
from aead.report.sweep import write_report
from tests.helpers import QUICK, hydra_config

SWEEP = "sweep-test"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    """Four finished one-epoch runs (loss bce/mse x seed 0/1) and one failed, one sweep id."""
    root = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    jobs = [(loss, seed) for loss in ("bce", "mse") for seed in (0, 1)]
    with hydra_config():
        configs = [
            compose(
                "config",
                [
                    *QUICK,
                    f"tracking.uri={uri}",
                    "tracking.log_model=false",
                    f"loss={loss}",
                    f"seed={seed}",
                    "model=dense",
                    f"cache.dir={root / 'cache'}",
                ],
            )
            for loss, seed in jobs
        ]
        broken = compose(
            "config",
            [*QUICK, f"tracking.uri={uri}", "tracking.log_model=false", "loss=bce", "seed=2",
             "model=dense", f"cache.dir={root / 'cache'}"],
        )  # fmt: skip
    ids = {}
    for (loss, seed), cfg in zip(jobs, configs, strict=True):
        ids[(loss, seed)] = run(cfg, RunContext(str(root), sweep_id=SWEEP, job_num=0)).run_id

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after training")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr(pipeline, "fit_threshold", crash)
        run(broken, RunContext(str(root), sweep_id=SWEEP, job_num=4))
    return root, uri, ids


@pytest.mark.slow
def test_report_table_holds_the_logged_values(sweep, capsys):
    root, uri, ids = sweep
    out = root / "report-a"
    report_main(["--tracking-uri", uri, "--out", str(out)])  # latest sweep by default
    assert capsys.readouterr().out.strip().splitlines()[-1] == str((out / "report.html").resolve())

    client = MlflowClient(uri)
    markdown = (out / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| loss.name=")]
    assert sorted(r.split("|")[1].strip() for r in rows) == ["loss.name=bce", "loss.name=mse"]
    assert [r.split("|")[1].strip() for r in rows] == sorted(
        [r.split("|")[1].strip() for r in rows],
        key=lambda label: -_mean_auc(client, ids, label.split("=")[1]),
    )  # best ROC-AUC first
    for row in rows:
        loss = row.split("|")[1].strip().split("=")[1]
        aucs = [client.get_run(ids[(loss, s)]).data.metrics["roc_auc"] for s in (0, 1)]
        f1s = [client.get_run(ids[(loss, s)]).data.metrics["f1"] for s in (0, 1)]
        mean, std = sum(aucs) / 2, abs(aucs[0] - aucs[1]) / 2**0.5
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[1] == "2"
        assert cells[2] == f"{mean:.4f} ± {std:.4f}"
        assert cells[7] == f"{sum(f1s) / 2:.4f}"
        for seed in (0, 1):
            assert ids[(loss, seed)][:8] in cells[-1]

    assert "run failed" in markdown and "seed=2" in markdown  # failed runs are listed
    # the failed bce seed-2 run implies a seed-2 run for mse that never happened
    assert "missing from the sweep: loss.name=mse scenario.name=mnist_vs_fashion seed=2" in markdown
    assert markdown.count("missing from the sweep") == 1
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 5  # header + every run, the failed one too

    again = root / "report-b"
    write_report(uri, sweep_id=SWEEP, out_dir=again)
    comparison = filecmp.dircmp(out, again)
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
    assert filecmp.cmpfiles(out / "images", again / "images", _names(out / "images"),
                            shallow=False)[1:] == ([], [])  # fmt: skip


@pytest.mark.slow
def test_report_shows_each_variants_maps_of_the_same_test_images(sweep):
    import matplotlib.image
    import numpy as np

    from aead.tracking.runs import download_artifact

    root, uri, ids = sweep
    samples = {}
    for key, run_id in ids.items():
        path = download_artifact(uri, run_id, "maps/sample.npz", root / "samples" / run_id)
        with np.load(path) as sample:
            samples[key] = {k: sample[k] for k in sample.files}
    first = samples[("bce", 0)]
    # chosen from the test set alone: the first 5 anomalies and the first 2 normal images
    assert first["labels"].tolist() == [1] * 5 + [0] * 2
    assert first["maps"].shape == (7, 28, 28) and first["images"].shape == (7, 28, 28, 1)
    for seed in (0, 1):  # both variants, one seed: the same images (data.test_limit draws
        bce, mse = samples[("bce", seed)], samples[("mse", seed)]  # its slice with the seed)
        assert np.array_equal(bce["index"], mse["index"])
        assert np.array_equal(bce["images"], mse["images"])
    assert not np.array_equal(samples[("bce", 0)]["maps"], samples[("mse", 0)]["maps"])

    out = root / "report-maps"
    write_report(uri, sweep_id=SWEEP, out_dir=out)
    markdown = (out / "report.md").read_text()
    shown = [line for line in markdown.splitlines() if line.startswith("![anomaly maps")]
    assert len(shown) == 1 and shown[0].endswith("(images/maps_01.png)")  # one shared image set
    assert sorted(shown[0][len("![anomaly maps: ") : shown[0].index("]")].split(", ")) == [
        "loss.name=bce", "loss.name=mse"]  # fmt: skip
    assert "images/maps_01.png" in (out / "report.html").read_text()
    figure = matplotlib.image.imread(out / "images" / "maps_01.png")
    assert len(np.unique(figure.reshape(-1, figure.shape[-1]), axis=0)) > 10  # drawn, not blank
    assert figure.shape[0] > 3 * 100  # the image row and one row per variant


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mean_auc(client, ids, loss):
    return sum(client.get_run(ids[(loss, s)]).data.metrics["roc_auc"] for s in (0, 1)) / 2


@pytest.mark.slow
def test_report_renders_in_headless_chromium(sweep, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    root, uri, _ = sweep
    html_path = write_report(uri, sweep_id=SWEEP, out_dir=tmp_path / "report")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "install Debian's chromium and chromium-driver"
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1300,1600",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get(html_path.resolve().as_uri())
        table_rows = driver.find_elements(By.CSS_SELECTOR, "table tr")
        assert len(table_rows) == 1 + 2  # header + bce + mse
        assert "ROC-AUC" in table_rows[0].text
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'),"
            " i.complete && i.naturalWidth > 0]);"
        )
        assert len(images) == 4  # one ROC overlay + two histograms + the variants' maps
        assert all(loaded for _, loaded in images), images
        assert "run failed" in driver.find_element(By.ID, "problems").text
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_pixel_figures_get_columns_with_mean_and_std_where_runs_have_them():
    import pandas as pd

    from aead.report.sweep import render_markdown, summarize

    runs = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "experiment_id": ["1"] * 3,
            "status": ["FINISHED"] * 3,
            "params.scenario.name": ["folders"] * 3,
            "params.loss.name": ["ssim", "ssim", "mse"],
            "params.seed": ["0", "1", "0"],
            "metrics.roc_auc": [0.8, 0.9, 0.7],
            "metrics.pixel_roc_auc": [0.90, 0.92, 0.80],
            "metrics.pixel_aupro": [0.70, 0.74, 0.60],
        }
    )
    table = summarize(runs, ["params.scenario.name", "params.loss.name"])
    text = render_markdown("s", table, ["params.scenario.name", "params.loss.name"], [])
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert header.split(" | ")[4:6] == ["pixel ROC-AUC", "AUPRO"]
    ssim = next(line for line in text.splitlines() if "ssim" in line).split(" | ")
    assert ssim[4:6] == ["0.9100 ± 0.0141", "0.7200 ± 0.0283"]  # std of 0.90, 0.92 / 0.70, 0.74
    without = summarize(runs.drop(columns=["metrics.pixel_roc_auc", "metrics.pixel_aupro"]),
                        ["params.scenario.name", "params.loss.name"])  # fmt: skip
    assert "AUPRO" not in render_markdown("s", without, ["params.loss.name"], [])


def test_runs_from_before_a_setting_existed_count_as_at_its_default():
    import pandas as pd

    from aead.report.sweep import variant_columns, with_added_defaults

    runs = pd.DataFrame(
        {"params.loss.name": ["mse", "mse"], "params.maps.sigma": [None, "1.0"],
         "params.data.channels": [None, "null"]}
    )  # fmt: skip
    filled = with_added_defaults(runs)
    assert filled["params.maps.sigma"].tolist() == ["1.0", "1.0"]
    assert filled["params.data.channels"].tolist() == ["null", "null"]
    assert variant_columns(filled) == []  # one variant, not two
    assert variant_columns(with_added_defaults(runs.assign(**{"params.maps.sigma": ["2", None]})))


def test_several_sweeps_are_reported_together_a_job_in_both_once(tmp_path):
    """Seeds run as separate sweeps: `--sweep-id A,B` reports their runs together; a job run
    in both (same config hash) counts once, by its finished attempt."""
    from aead.report.sweep import load_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=str(tmp_path / "art"))
    logged = {}
    for sweep_id, seed, status in [("A", 0, "FAILED"), ("A", 1, "FINISHED"), ("B", 0, "FINISHED"),
                                   ("B", 2, "FINISHED"), ("C", 3, "FINISHED")]:  # fmt: skip
        tags = {"sweep_id": sweep_id, "aead.config_hash": f"h{seed}"}
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_param(run_id, "seed", str(seed))
        client.set_terminated(run_id, status)
        logged[(sweep_id, seed)] = run_id

    label, runs = load_sweep(uri, "bench", "A,B")
    assert label == "A+B"
    expected = {logged[("A", 1)], logged[("B", 0)], logged[("B", 2)]}
    assert set(runs["run_id"]) == expected and len(runs) == 3
    assert load_sweep(uri, "bench", "C")[1]["params.seed"].tolist() == ["3"]
    with pytest.raises(SystemExit, match="no runs with sweep id 'D'"):
        load_sweep(uri, "bench", "A,D")
