"""Adaptation methods, one module each, found by name through the registry in base.py."""

from gainbench.methods import ewc, full_ft, gain_method, lora_variants, peft_methods  # noqa: F401  (registers them)
from gainbench.methods.base import METHODS, Method, count_parameters, make_method
from gainbench.methods.gain import absorb_gain, apply_gain

__all__ = ["METHODS", "Method", "absorb_gain", "apply_gain", "count_parameters", "make_method"]
