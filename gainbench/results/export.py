"""Keep what a run adapted, beside its results, in the formats the libraries read back:

    save_model=final         <run>/model/final/          the model after the last stage
    save_model=every_stage   <run>/model/stage_<k>/      the model after each stage k >= 1
    save_adapters=true       <run>/adapters/stage_<k>/   stage k's PEFT adapter, before the merge

A model folder is what ``save_pretrained`` writes (config.json, generation_config.json, safetensors
weights, in several files with an index for a large model) and the tokenizer's files, so vanilla
``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder)``
read it: the absorbed, plain HF architecture (GAIN scales a stage keeps unabsorbed, with
``absorb_each_stage: false``, are folded into the saved weights). An adapter folder is PEFT's
``save_pretrained`` of the stage's trained tensors, for ``PeftModel.from_pretrained`` on the
weights the stage started from (the model after stage k-1: ``model/stage_<k-1>/`` with
``every_stage``, the run's base checkpoint for stage 1). Methods without an adapter write none.

Each folder is filled under a hidden temporary name beside it and renamed into place, so a killed
job never leaves half a model (at most a hidden ``.<name>.*`` folder, which the next write of that
folder removes); a stage run again replaces its folder. Only rank 0 writes; sharded weights are
first gathered whole onto rank 0's CPU, which every rank takes part in. Each model folder is
recorded by one row: ``eval_kind`` export, ``eval_name`` the folder under the run folder,
``metric`` bytes (``value`` the folder's size, ``n`` the weights' entries it stores).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from gainbench.evaluation.evaluators import Evaluator
from gainbench.files import umask
from gainbench.methods.gain import gain_modules
from gainbench.placement import SINGLE_PROCESS, Placement

SAVE_MODEL = ("none", "final", "every_stage")


class ModelExport(Evaluator):
    """Writes the model after the stages ``when`` selects (``final``: the last; ``every_stage``:
    each stage from 1; ``none``: never) as a Hugging Face folder under ``run_dir/model/``."""

    def __init__(self, when: str, run_dir: Path, tokenizer, last_stage: int,
                 placement: Placement = SINGLE_PROCESS):
        if when not in SAVE_MODEL:
            raise ValueError(f"save_model must be one of {SAVE_MODEL}, got {when!r}")
        self.when, self.run_dir, self.tokenizer = when, Path(run_dir), tokenizer
        self.last_stage, self.placement = last_stage, placement

    def folder_name(self, stage: int) -> str | None:
        """The folder stage ``stage``'s model is written to, under ``model/``; None for none."""
        if self.when == "final" and stage == self.last_stage:
            return "final"
        if self.when == "every_stage" and stage >= 1:
            return f"stage_{stage}"
        return None

    def __call__(self, model: nn.Module, stage: int) -> list[dict]:
        name = self.folder_name(stage)
        if name is None:
            return []
        state = plain_state_dict(model, self.placement)  # a collective on sharded weights
        if not self.placement.is_main:
            return []
        folder = self.run_dir / "model" / name

        def save(tmp: Path) -> None:
            model.save_pretrained(tmp, state_dict=state)
            self.tokenizer.save_pretrained(tmp)

        write_folder(folder, save)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        return [dict(eval_kind="export", eval_name=f"model/{name}", metric="bytes",
                     value=float(size), n=stored_elements(folder))]


def plain_state_dict(model: nn.Module, placement: Placement = SINGLE_PROCESS) -> dict | None:
    """The weights of ``model`` under the plain architecture's names, for ``save_pretrained``:
    None (the model's own state dict) for a plain model on one device; GAIN scales still
    wrapped folded into their weights, as absorbing them would, the model left unchanged; and
    sharded weights gathered whole onto rank 0's CPU (every rank calls this; the others get {}).
    Tied weights stay one tensor, which ``save_pretrained`` then writes once."""
    wrapped = gain_modules(model)
    sharded = placement.lockstep(model)
    if not (wrapped or sharded):
        return None
    with placement.editing(model):  # on sharded weights, folding acts on each rank's rows
        # the parameters themselves (keep_vars): a tied weight is one object under two names
        state = model.state_dict(keep_vars=True)
        for name, module in wrapped.items():
            for key in [k for k in state if k.startswith(f"{name}.")]:
                del state[key]
            absorbed = copy.deepcopy(module).absorbed()  # one matrix at a time
            state.update({f"{name}.{key}": value for key, value in absorbed.state_dict().items()})
        if not sharded:
            return {key: value.detach() for key, value in state.items()}
        # gather each distinct tensor once, so tied weights stay tied
        first_name: dict[int, str] = {}
        for key, value in state.items():
            first_name.setdefault(id(value), key)
        whole = placement.gather({key: state[key].detach() for key in first_name.values()})
    if not placement.is_main:
        return {}
    return {key: whole[first_name[id(value)]] for key, value in state.items()}


def stored_elements(folder: Path) -> int:
    """Entries of every tensor in ``folder``'s safetensors files (tied weights are stored once),
    read from the files' headers alone."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                total += math.prod(f.get_slice(key).get_shape())
    return total


def save_adapter(method, model: nn.Module, state: Mapping[str, torch.Tensor], folder: Path,
                 placement: Placement = SINGLE_PROCESS) -> bool:
    """Stage's adapter folder from ``model`` (the method attached, not yet absorbed) and its
    trained tensors ``state`` (:meth:`~gainbench.methods.Method.stage_state`, whole, on rank 0),
    written atomically by rank 0 (:meth:`~gainbench.methods.Method.export_adapter`). Returns
    whether one was written (methods without an adapter write none)."""
    if not placement.is_main:
        return False
    return write_folder(Path(folder), lambda tmp: method.export_adapter(model, tmp, state))


def write_folder(folder: Path, fill: Callable[[Path], bool | None]) -> bool:
    """``fill(tmp)`` fills a hidden temporary folder beside ``folder``, which is then renamed
    onto it (replacing an older one): a reader, or a job killed mid-write, never sees half a
    folder. ``fill`` returning False means it had nothing to write: no folder is made. The
    folder gets the mode a plain ``mkdir`` would (0755 under the usual 022 umask)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for leftover in folder.parent.glob(f".{folder.name}.*"):  # a killed job's temporary folder
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        if fill(tmp) is False:
            return False
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700
        if folder.exists():  # the stage ran again: the new folder replaces the old one
            replaced = folder.parent / f".{folder.name}.replaced"
            os.replace(folder, replaced)
            os.replace(tmp, folder)
            shutil.rmtree(replaced)
        else:
            os.replace(tmp, folder)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
