"""``python -m wsimito``: the same as the ``wsimito`` command."""

from wsimito.cli import main

main()
