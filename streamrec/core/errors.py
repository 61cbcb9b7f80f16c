"""Errors the command line reports as one line instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (a path, an option, a file): exit code 2, message only."""
