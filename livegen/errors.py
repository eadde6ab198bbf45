"""The one exception type that reaches a person."""


class LivegenError(Exception):
    """A problem a person can fix. The message is one line: what is wrong and the fix.

    The command line prints it without a traceback and exits with status 2.
    """
