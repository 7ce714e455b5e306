"""`python -m chatctl`."""

from chatctl.cli import app

app()
