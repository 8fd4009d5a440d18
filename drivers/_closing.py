"""``with`` support for everything in the device layer that has a ``close()``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit"]


class ClosesOnExit:
    """Mixin: ``with obj:`` closes ``obj`` on leaving the block, error or not."""

    __slots__ = ()

    def close(self) -> None:  # pragma: no cover - every user defines its own
        raise TypeError(f"{type(self).__name__} must define close()")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
