"""``TransformPace``: how long an instance takes to transform an imported row, learned from its
own import sets, so the first poll for an asynchronous ``insertMultiple``'s outcomes comes
when the rows are likely done.

A fixed first wait is wrong both ways: on a busy instance every early poll is a request spent
against the rate limit for nothing, and on a quick one every batch waits longer than its
transform took (with 200-row batches, most of a delivery's time). So the first wait is the
learned seconds per row times the batch's rows, and it learns both ways: a batch found done
at its first poll tries 30 % sooner next time (it may have waited longer than needed); a batch
that needed more polls teaches how long it really took. Bounded by ``floor_s`` and
``ceiling_s``; one per instance, shared by its deliveries.
"""

from __future__ import annotations

_SOONER = 0.7


class TransformPace:
    def __init__(self, first_batch_s: float, ceiling_s: float, floor_s: float = 0.02, batch: int = 200) -> None:
        """Before anything is learned, a ``batch``-row import set waits ``first_batch_s``."""
        self._floor_s = floor_s
        self._ceiling_s = ceiling_s
        self._per_row_s = first_batch_s / batch

    def first_wait(self, rows: int) -> float:
        return min(self._ceiling_s, max(self._floor_s, self._per_row_s * max(rows, 1)))

    def learn(self, rows: int, waited_s: float, polls: int) -> None:
        """An import set of ``rows`` was found done after ``waited_s``, at poll number ``polls``."""
        if polls <= 1:
            self._per_row_s *= _SOONER
        else:
            self._per_row_s = waited_s / max(rows, 1)
        self._per_row_s = max(self._floor_s / max(rows, 1), self._per_row_s)
