"""The one exception type for mistakes a user can fix."""


class UserError(ValueError):
    """A bad input: the message says what was wrong and what was expected.

    The command-line interface prints the message alone (no traceback) and
    exits with status 2. It subclasses `ValueError` so Python callers can catch
    it the usual way.
    """
