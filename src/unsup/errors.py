"""One exception type for every problem a user can fix.

The CLI turns an ``UnsupError`` into one line on stderr and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class UnsupError(Exception):
    """A problem with the user's input: the message names it and the fix."""
