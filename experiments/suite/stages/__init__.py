"""The stages of a preset, in the order they run; the preset's sections decide which it has.

- a ``sweep`` section (learning-rate grids, ``stages/sweep.py``): ``sweep``, ``final``, and ``ablation``
  when the preset has an ``ablation`` section;
- a ``tuning`` section (search spaces, ``stages/tuning.py`` with the protocol in ``experiments/suite/search.py``):
  ``trials``, ``final``;
- neither: ``grid``, the (workload x optimizer x seed) grid as listed (``stages/grid.py``);
- every preset then ``analysis``: ``python -m analysis`` on the output folder (``stages/analysis.py``).
"""

from __future__ import annotations

from experiments.suite.presets import Preset

GRID_STAGES = ("grid",)
SWEEP_STAGES = ("sweep", "final", "ablation")
TUNING_STAGES = ("trials", "final")
ANALYSIS_STAGE = "analysis"


def preset_kind(preset: Preset) -> str:
    """``"sweep"``, ``"tuning"`` or ``"grid"``: the section that decides the stages of ``preset``.

    ValueError when the preset has both a sweep and a tuning section, or an ablation without a sweep
    (the ablation runs at the sweep's chosen rates).
    """
    if preset.sweep and preset.tuning:
        raise ValueError(f"preset {preset.name}: a preset has a 'sweep' or a 'tuning' section, not both")
    if preset.ablation and not preset.sweep:
        raise ValueError(f"preset {preset.name}: an 'ablation' section needs a 'sweep' section (it runs at the "
                         "sweep's chosen learning rates)")
    if preset.sweep:
        return "sweep"
    return "tuning" if preset.tuning else "grid"


def preset_stages(preset: Preset) -> tuple[str, ...]:
    """Every stage of ``preset`` in the order they run, ``analysis`` last (see the module docstring)."""
    kind = preset_kind(preset)
    if kind == "sweep":
        stages = SWEEP_STAGES if preset.ablation else SWEEP_STAGES[:-1]
    else:
        stages = TUNING_STAGES if kind == "tuning" else GRID_STAGES
    return (*stages, ANALYSIS_STAGE)


def select_stages(preset: Preset, requested: list[str] | None, analysis: bool = True) -> tuple[str, ...]:
    """The stages to run: ``requested`` (default: all of the preset's), in the preset's order, without
    ``analysis`` when ``analysis`` is false (``--no-analysis``). ValueError naming the preset's stages
    when ``requested`` names another one."""
    allowed = preset_stages(preset)
    if requested is not None:
        unknown = [s for s in requested if s not in allowed]
        if unknown:
            raise ValueError(f"stages of preset {preset.name} must be among {list(allowed)}, got {unknown}")
    chosen = allowed if requested is None else tuple(s for s in allowed if s in requested)
    return tuple(s for s in chosen if analysis or s != ANALYSIS_STAGE)
