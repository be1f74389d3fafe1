"""`python -m xtune` runs the same CLI as the `xtune` console script."""

from xtune.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
