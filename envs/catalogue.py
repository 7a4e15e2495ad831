"""The GPU catalogue: one data table of every GPU model the simulator knows.

Memory, relative speed and price per GPU-hour live here and nowhere else, so that schedulers,
markets and reports all price and time a GPU the same way.

Sources and assumptions (documented because several figures are not published):

* Memory and MIG capability of A100-40GB, A100-80GB and H100-80GB follow NVIDIA's data sheets
  (summarised in `docs/reference.md`).
* `relative_speed` is throughput on a typical deep-learning job relative to an A100-40GB (1.0).
  H100 ~2.5x (NVIDIA's training claims range 2-3x), V100 ~0.5x, P100 ~0.3x, T4 ~0.2x, A10 ~0.5x.
* The openb trace's models G1/G2/G3 are undisclosed internal codes; their memory and speed here are
  assumptions (a mid-range, a data-centre and a high-end part) and only matter for runs that
  convert work into time on those models.
* `price_per_hour` is an approximate on-demand cloud list price in USD per GPU-hour; it scales
  budgets and job values, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GPUModel:
    """One GPU product: what it holds, how fast it is, what an hour of it costs."""

    name: str
    memory_gib: int
    relative_speed: float
    price_per_hour: float
    mig_capable: bool
    sm_count: int | None = None


_TABLE: tuple[GPUModel, ...] = (
    #        name         mem  speed  $/h    MIG    SMs
    GPUModel("A100-40GB", 40, 1.00, 2.93, True, 98),
    GPUModel("A100-80GB", 80, 1.10, 3.93, True, 98),
    GPUModel("H100-80GB", 80, 2.50, 11.06, True, 132),
    GPUModel("T4", 16, 0.20, 0.35, False),
    GPUModel("P100", 16, 0.30, 1.46, False),
    GPUModel("V100M16", 16, 0.45, 2.48, False),
    GPUModel("V100M32", 32, 0.50, 2.75, False),
    GPUModel("A10", 24, 0.50, 1.10, False),
    GPUModel("G1", 16, 0.35, 1.00, False),
    GPUModel("G2", 24, 0.60, 1.80, False),
    GPUModel("G3", 32, 0.90, 2.60, False),
)

CATALOGUE: dict[str, GPUModel] = {model.name: model for model in _TABLE}
MODEL_NAMES: tuple[str, ...] = tuple(CATALOGUE)


def gpu_model(name: str) -> GPUModel:
    """Look a model up by name; an unknown name lists the valid ones."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ValueError(
            f"unknown GPU model {name!r}; valid models: {', '.join(MODEL_NAMES)}"
        ) from None
