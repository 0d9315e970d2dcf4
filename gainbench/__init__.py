"""gainbench: a benchmark harness for continual domain adaptation of LLMs (GAIN vs LoRA vs full FT)."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${mul:a,b} lets a sweep set every method's lr as a multiple of its own default
# (configs/experiment/lr_sweep.yaml: train.lr: ${mul:${method.lr},${lr_scale}}).
if not OmegaConf.has_resolver("mul"):
    OmegaConf.register_new_resolver("mul", lambda a, b: float(a) * float(b))
