"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed line, an impossible setting.

    The message must say what was wrong and where (file:line, key), and what to do.
    """

    exit_code = 2
