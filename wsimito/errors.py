"""Errors a user can act on.

The CLI prints a ``WsimitoError`` as one line (no traceback unless ``--debug``);
every message names the file and the problem.
"""


class WsimitoError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 1


class SettingsError(WsimitoError):
    """A setting that cannot work (a value out of range, a tile size the net cannot take, a device not there),
    refused before any slide is touched. Exit code 2, as for a wrong option on the command line."""

    exit_code = 2


class SlideError(WsimitoError):
    """A slide or image that cannot be opened, read, or placed at a physical resolution."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BundleError(WsimitoError):
    """A detector bundle that cannot be loaded as it is (a file missing, a config key unknown or of the wrong
    type, a file of another kind), named with the bundle and the key. Exit code 2: refused before any slide."""

    exit_code = 2
