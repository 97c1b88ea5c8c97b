"""`python -m ssmbench` = the `ssmbench` command (handy where the package is not pip-installed)."""

from ssmbench.cli import app

app()
