"""Checks shared by the layers' constructors."""

import numbers


def is_integer(value):
    """Any integral number (`int`, `np.int64`, ...) but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """A Python `int` or `float`, but not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
