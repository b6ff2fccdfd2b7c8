"""Resumable fine-tuning: the student's weights, the optimizer, the random state, the step count
and the best held-out weights so far, in one file written atomically (a kill leaves the previous
checkpoint, never half of one). `--resume` continues from it as if the run had not stopped."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from spa.core.errors import InputError

FORMAT = "spa-finetune-checkpoint/1"


@dataclass
class State:
    step: int
    seconds: float
    samples: int
    best_score: list          # rank() of the best step: [held-out score, -held-out loss]
    best_step: int
    history: list = field(default_factory=list)


def save(path, module, optimizer, rng: np.random.Generator, state: State, best_weights: dict) -> None:
    import torch

    from spa.core.output import write_files

    payload = {"format": FORMAT, "state": asdict(state), "weights": module.state_dict(),
               "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
               "torch_rng": torch.get_rng_state(), "best_weights": best_weights,
               "shapes": {k: list(v.shape) for k, v in module.state_dict().items()}}
    write_files({path: lambda tmp: torch.save(payload, tmp)}, what="--checkpoint")


def load(path, module, optimizer, rng: np.random.Generator, state: State, best_weights: dict):
    """Restore a checkpoint into module/optimizer/rng; returns (state, best weights). A missing file
    starts afresh (the first run of a resumable job); one of another model is refused."""
    import os

    import torch

    if not os.path.exists(path):
        return state, best_weights
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a damaged file
        raise InputError(f"{path}: not a readable fine-tuning checkpoint ({str(exc)[:120]})") from None
    shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("shapes") != shapes:
        raise InputError(f"{path}: a checkpoint of another model or run; remove it or choose another --checkpoint")
    module.load_state_dict(payload["weights"])
    optimizer.load_state_dict(payload["optimizer"])
    rng.bit_generator.state = payload["rng"]
    torch.set_rng_state(payload["torch_rng"])
    return State(**payload["state"]), payload["best_weights"]
