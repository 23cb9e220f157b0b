"""The ``wsimito`` command: parse, load the config, call the library, report.

Thin on purpose: everything a command does is a library call that tests and
notebooks can make too. This package owns all printing: the group and its
error handling here, one module per command family, shared options in
:mod:`wsimito.cli.common`. Command modules import torch and the pipeline only
inside the command that runs, so ``wsimito --help`` starts at once.
"""

from __future__ import annotations

import click

from wsimito import __version__
from wsimito.cli.bench import bench
from wsimito.cli.common import HELP_SETTINGS
from wsimito.cli.detect import detect
from wsimito.cli.evaluate import evaluate
from wsimito.cli.info import info
from wsimito.cli.reports import merge_reports
from wsimito.cli.synth import synth
from wsimito.cli.train import make_boxes, train_det, train_seg
from wsimito.errors import WsimitoError


class _FriendlyGroup(click.Group):
    """Turn errors into one line naming the problem; a traceback only with ``--debug``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except WsimitoError as exc:
            if ctx.meta.get("wsimito.debug"):
                raise
            click.echo(f"wsimito: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:  # a bug or an environment problem: still one line unless --debug
            if ctx.meta.get("wsimito.debug"):
                raise
            click.echo(f"wsimito: error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
            ctx.exit(1)


@click.group(cls=_FriendlyGroup, context_settings=HELP_SETTINGS)
@click.version_option(__version__, prog_name="wsimito")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Count mitoses in breast-cancer H&E whole-slide images.

    \b
    Start with a look at your slides (format, resolution, tissue, tiles):
        wsimito info slides/*.svs
    Slides whose files carry no resolution need the pixel size in µm:
        wsimito info fields/*.jpg --mpp 0.2456
    Make synthetic H&E with exact ground truth to try things out:
        wsimito synth demo/ --fields 4 --slide 8000
    """
    ctx.meta["wsimito.debug"] = debug


main.add_command(info)
main.add_command(train_seg)
main.add_command(make_boxes)
main.add_command(train_det)
main.add_command(detect)
main.add_command(evaluate)
main.add_command(merge_reports)
main.add_command(synth)
main.add_command(bench)
