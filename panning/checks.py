"""The argument checks of the public entry points, one function per kind, each naming the argument it checks.

Checks run once, at the boundary a user calls (ops, `prune`, `jackpot.search`, layers, the command line);
internal calls trust their arguments. Every error reads ``"<name>: expected <what>, got <value>"``. A refused value
is a :class:`ConfigError` carrying the argument's name, so that a caller (the command line) names its own spelling
of the argument (``--per-class``) from the name, never from the message; a wrong type (:func:`instance`) is a
TypeError.
"""
from __future__ import annotations

import math
from collections.abc import Collection


class ConfigError(ValueError):
    """A value refused: `field` names the argument or setting, `reason` says why; reads ``"<field>: <reason>"``.
    Raised by the checks here, by the configurations (panning.config, which exports it), and by a library function
    for an argument whose name a caller may want to map to its own (`data.load`'s ``data_dir``, a run's
    ``checkpoint`` of another run)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(name: str, value, *, minimum: int | None = None) -> int:
    """`value` as an int (bools are not ints here), at least `minimum` if given."""
    if minimum is None:
        return _count(name, value, -math.inf, "an int")
    return _count(name, value, minimum, f"an int >= {minimum}")


def _count(name: str, value, minimum: int | float, what: str) -> int:
    """`value`, an int (not a bool) >= `minimum`; `what` says so in the error."""
    if not _is_int(value) or value < minimum:
        raise ConfigError(name, f"expected {what}, got {value!r}")
    return value


def positive_int(name: str, value) -> int:
    """`value` as an int >= 1 (a count of steps, epochs, samples, threads ...)."""
    return _count(name, value, 1, "a positive int")


def positive_ints(**named) -> tuple[int, ...]:
    """Each of `named` (a count of steps, lanes, ...) as an int >= 1 (positive_int), checked in order."""
    return tuple(positive_int(name, value) for name, value in named.items())


def non_negative_int(name: str, value) -> int:
    """`value` as an int >= 0."""
    return _count(name, value, 0, "a non-negative int")


def number(name: str, value, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = False) -> float:
    """`value` as a finite float within [low, high]; `low_open` / `high_open` exclude the bound."""
    finite = _is_number(value) and math.isfinite(value)
    if not (finite and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        kind = "finite " if _is_number(value) and not finite else ""
        raise ConfigError(name, f"expected a {kind}number in {interval}, got {value!r}")
    return float(value)


def positive(name: str, value) -> float:
    """`value` as a finite float > 0 (a learning rate, a temperature ...)."""
    return number(name, value, low=0.0, low_open=True)


def non_negative(name: str, value) -> float:
    """`value` as a finite float >= 0 (a weight decay, a momentum ...)."""
    return number(name, value, low=0.0)


def sparsity(name: str, value) -> float:
    """The fraction of weights to remove, in [0, 1). Sparsity 1 would remove every weight and is refused
    everywhere (prune, search, the command line) with the same message."""
    if not _is_number(value) or not 0.0 <= value < 1.0:
        hint = " (sparsity 1 removes every weight)" if _is_number(value) and value == 1 else ""
        raise ConfigError(name, f"expected a number in [0, 1), got {value!r}{hint}")
    return float(value)


#: Seeds are below 2**32: numpy's legacy seeding (stable-baselines3's) takes no more, and torch's generators keep
#: them exact.
SEED_LIMIT = 2**32


def seed(name: str, value) -> int:
    """A random seed: an int in [0, 2**32)."""
    integer(name, value)
    if not 0 <= value < SEED_LIMIT:
        raise ConfigError(name, f"expected an int in [0, 2**32), got {value!r}")
    return value


def keeps_weights(name: str, sparsity: float, kept: int, numel: int) -> int:
    """`kept`, the weights a `sparsity` keeps of `numel`, when it is at least one: a sparsity below 1 that still
    keeps nothing is refused as sparsity 1 is (sparsity means the kept count)."""
    if numel > 0 and kept < 1:
        largest = 1.0 - 0.5 / numel
        raise ConfigError(name, f"{sparsity!r} keeps none of the {numel:,} weights (sparsity 1 removes every "
                                f"weight); at most {largest:.6g} keeps one")
    return kept


def momentum(name: str, value) -> float:
    """An SGD momentum: a finite number in [0, 1) (1 would never forget a gradient)."""
    return number(name, value, low=0.0, high=1.0, high_open=True)


def instance(name: str, value, types: type | tuple[type, ...], what: str):
    """`value`, an instance of `types`; `what` names the expected kind in the message ("an nn.Module")."""
    if not isinstance(value, types):
        raise TypeError(f"{name}: expected {what}, got {type(value).__name__}")
    return value


def choice(name: str, value, choices: Collection):
    """`value`, one of `choices`."""
    if value not in choices:
        raise ConfigError(name, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
    return value
