"""VillanDiffusion's ODE-sampler backdoor (Chou et al., NeurIPS 2023; docs/design.md section 1).

The poisoned inputs are BadDiffusion's; the correction is doubled (target ``eps + 2 c_t r``) so the
trigger's offset is carried through deterministic samplers (DDIM, DPM-Solver, UniPC), where an
SDE-trained BadDiffusion backdoor is weak.
"""

from __future__ import annotations

import torch

from benchmarks.attacks.baddiffusion import BackdoorSpec

ODE_CORRECTION = 2.0


def villan_spec(trigger: torch.Tensor, target: torch.Tensor, poison_rate: float = 0.1) -> BackdoorSpec:
    """A VillanDiffusion ODE backdoor: BadDiffusion's inputs, correction multiplier 2."""
    return BackdoorSpec(trigger=trigger, target=target, poison_rate=poison_rate, correction=ODE_CORRECTION)
