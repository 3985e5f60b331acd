"""The one exception for bad input that the code recognises on purpose.

A stage raises :class:`InputError` (or :class:`FileNotFoundError`) with a message that starts with
the offending file and says what is wrong; the CLI logs it as one line and exits 1. Anything else
is a bug or an environment failure: the CLI logs its full traceback to the rule's log.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input named by its message (file first, then the problem)."""
