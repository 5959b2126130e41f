"""``python -m mlxf``: the command line, as the ``mlxf`` console script runs it."""

from mlxf.cli import main

main()
