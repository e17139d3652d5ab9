"""`python -m aead.report` / `aead-report`: compare the runs of one aead sweep (the report
itself is built by aead.report.sweep). Light on imports, so that --help answers at once."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m aead.report", description="Compare the runs of an aead sweep."
    )
    parser.add_argument(
        "--sweep-id",
        help="the sweep to report (default: the latest sweep); several, comma-separated, are "
        "reported together (e.g. seeds run as separate sweeps)",
    )
    parser.add_argument("--experiment", help="MLflow experiment name (default: all)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns)"
    )
    parser.add_argument("--out", help="output folder (default: reports/<sweep id>)")
    args = parser.parse_args(argv)

    from aead.report.sweep import write_report
    from aead.tracking.runs import resolve_tracking_uri

    uri = resolve_tracking_uri(".", args.tracking_uri)
    path = write_report(uri, args.experiment, args.sweep_id, args.out)
    print(path.resolve())


if __name__ == "__main__":
    main()
