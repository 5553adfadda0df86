"""Explicit Runge-Kutta methods as validated, frozen Butcher tableaus (diffrax's model)."""
from __future__ import annotations

from dataclasses import dataclass

_TOL = 1e-12


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit RK method: stages k_j = u(t + c_j h, x + h sum_{l<j} a_jl k_l),
    x_next = x + h sum_j b_j k_j.

    `a` is the strictly lower-triangular part, row j holding a_j0 .. a_j(j-1).
    """

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int

    def __post_init__(self):
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s:
            raise ValueError(f"{self.name}: a, b, c must all have {s} stages")
        for j, row in enumerate(self.a):
            if len(row) != j:
                raise ValueError(f"{self.name}: row {j} of a must have {j} entries (explicit method), got {len(row)}")
            if abs(sum(row) - self.c[j]) > _TOL:
                raise ValueError(f"{self.name}: c[{j}] = {self.c[j]} but sum(a[{j}]) = {sum(row)}")
        if abs(sum(self.b) - 1.0) > _TOL:
            raise ValueError(f"{self.name}: weights b sum to {sum(self.b)}, not 1 (inconsistent method)")
        if self.order >= 2 and abs(sum(bj * cj for bj, cj in zip(self.b, self.c)) - 0.5) > _TOL:
            raise ValueError(f"{self.name}: claims order {self.order} but sum b c != 1/2")

    @property
    def stages(self) -> int:
        return len(self.b)


EULER = ButcherTableau("euler", a=((),), b=(1.0,), c=(0.0,), order=1)
"""Forward Euler (RK1): 1 stage, order 1."""

MIDPOINT = ButcherTableau("midpoint", a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)
"""Explicit midpoint (the paper's RK2 base): 2 stages, order 2."""

HEUN = ButcherTableau("heun", a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
"""Heun's method (explicit trapezoid): 2 stages, order 2."""

RK4 = ButcherTableau(
    "rk4",
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
    order=4,
)
"""Classical fourth-order Runge-Kutta: 4 stages, order 4."""

TABLEAUS = {tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RK4)}
