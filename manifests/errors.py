"""The one user-error type of cxraug.

Library code raises :class:`UserError` for anything a user can fix (a bad flag, a missing
file, a malformed row). The CLI prints its message as one line and exits with code 2; every
other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error in the user's input: the message names the file, row or flag and what is valid."""
