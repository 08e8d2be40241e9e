"""`python -m omniseg` == the `omniseg` console script."""

from omniseg.cli.main import run

run()
