"""`python -m aead.report`: the sweep report (aead.report.cli)."""

from aead.report.cli import main

if __name__ == "__main__":
    main()
