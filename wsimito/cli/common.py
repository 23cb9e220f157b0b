"""Options and helpers that several commands share, declared once so that they read the same everywhere.

Only click and the standard library are imported here: every command module imports this one, and
``wsimito --help`` must not pay for torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}

mpp_option = click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    help="Level-0 pixel size in µm/px; overrides the file's (needed when it records none).",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML config (see configs/default.yaml); its values replace the defaults.",
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the network runs; auto takes a CUDA GPU when torch sees one.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-epoch lines.")


def resolve_device(choice: str) -> str:
    """The torch device ``--device`` names, as a string; torch is imported only here, when a command runs."""
    from wsimito.devices import resolve_device as resolve

    return str(resolve(choice))


def stderr_lines(quiet: bool, prefix: str = ""):
    """A function that prints a line on stderr, or nothing with ``--quiet``: stdout stays for results."""
    if quiet:
        return lambda text: None
    return lambda text: click.echo(f"{prefix}{text}", err=True)


class Progress:
    """A progress bar on stderr when it is a terminal and not --quiet; silent otherwise.

    ``update_to`` has the signature of the library's ``on_step``/``on_tiles`` callbacks (done, total).
    """

    def __init__(self, quiet: bool, label: str):
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = label
        self.bar = None
        self.done = 0

    def __enter__(self):
        return self

    def update_to(self, done: int, total: int, *_):
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def close(self):
        """End the bar now (it leaves its line on the terminal), outside a ``with`` block."""
        self.__exit__(None, None, None)
        self.bar = None
