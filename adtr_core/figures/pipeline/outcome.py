"""One notebook's run: its record (:class:`NotebookRun`) or its failure (:class:`NotebookError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NotebookError(RuntimeError):
    """A notebook failed; names the notebook, the cell and the partially executed copy.

    Attributes:
        notebook: the notebook's stem, e.g. ``"02_train_category"``.
        cell_index: index of the failing cell in the source notebook (None: not a cell error).
        exec_count: its execution count (``In [n]``) in the executed notebook.
        ename: the exception's class name; ``evalue`` its message.
        partial: the partially executed notebook, or None.
    """

    def __init__(
        self,
        notebook: str,
        message: str,
        cell_index: int | None = None,
        exec_count: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
        source: str | None = None,
        partial: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell_index = cell_index
        self.exec_count = exec_count
        self.ename = ename
        self.evalue = evalue
        self.source = source
        self.partial = partial


@dataclass
class NotebookRun:
    """What running one notebook gave: its manifest record and the files it wrote."""

    stem: str
    status: str  # "ok" | "failed"
    wall_s: float
    files: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    error: NotebookError | None = None
