"""The C extension ``_metric_add.c`` (optional, built at install when a compiler is there): see :mod:`.metric_totals`
and :mod:`.histograms`."""

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..relay.stats import RelayStats
from .metric_totals import ApiTotals

FORMAT: int

class Recorder:
    """An ``OwnHistogram``'s ``record_items(amount, attributes, key, /)`` in C, calling ``fallback`` (the Python
    one) for whatever it declines."""

    def __init__(
        self,
        histogram: object,
        fallback: Callable[[float, dict[str, str | int], str], None],
        lock: Any,
        bounds: tuple[float, ...],
        exemplars: int,
        point_type: type,
        span_type: type,
        context_var: ContextVar[Any] | None,
        context_type: type,
        span_key: str,
        globals: dict[str, Any],
        /,
    ) -> None: ...
    def __call__(self, amount: float, attributes: dict[str, str | int], key: str, /) -> None: ...

def add_totals(totals: ApiTotals, stats: RelayStats, /) -> None:
    """``ApiTotals.add(totals, stats)``, calling the Python one for whatever it declines."""

def bind_totals(
    python_add: Callable[[ApiTotals, RelayStats], None], slots: int, totals_type: type[ApiTotals], /
) -> None:
    """Tell :func:`add_totals` ``ApiTotals.add`` (what it calls when it declines), the size slots it adds and
    ``ApiTotals`` (its lists read at their ``__slots__``' offsets)."""
