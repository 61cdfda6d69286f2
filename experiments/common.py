"""The Row record every experiment file defines, and the lookup of a table's rows."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import experiments


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a paper table: what to train, and the paper's top-1/5/10 for it."""

    table: int
    method: str  # as printed in the paper
    dataset: str  # reid_tf.datasets name
    model: str  # reid_tf.config preset
    paper: tuple[float, float, float]  # top-1, top-5, top-10 (%)

    @property
    def key(self) -> str:
        return f"{self.model}_{self.dataset}"


def rows(table: int) -> list[Row]:
    """The rows of Table `table`, in the paper's order (the modules' ORDER field)."""
    found = []
    for info in pkgutil.iter_modules(experiments.__path__):
        if info.name.startswith(f"table{table}_"):
            module = importlib.import_module(f"experiments.{info.name}")
            found.append((module.ORDER, module.ROW))
    if not found:
        raise ValueError(f"no experiment files for table {table} (valid tables: 2, 3, 4)")
    return [row for _, row in sorted(found)]
