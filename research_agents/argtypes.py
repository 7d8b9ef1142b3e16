"""argparse value types that turn bad CLI values into one-line errors (exit 2)."""

from __future__ import annotations

import argparse
import math
from typing import Callable


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A whole number >= minimum (and <= maximum when given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def number(minimum: float = 0.0, maximum: float = math.inf) -> Callable[[str], float]:
    """A finite number in [minimum, maximum]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            span = f">= {minimum:g}" if maximum == math.inf else f"between {minimum:g} and {maximum:g}"
            raise argparse.ArgumentTypeError(f"must be a number {span}, got {text!r}")
        return value

    return parse


def positive(maximum: float = math.inf) -> Callable[[str], float]:
    """A finite number > 0 (and <= maximum): a duration, where 0 would mean "no limit" by accident."""

    def parse(text: str) -> float:
        value = number(0.0, maximum)(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
        return value

    return parse
