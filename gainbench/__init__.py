"""gainbench: a benchmark harness for continual domain adaptation of LLMs (GAIN vs LoRA vs full FT)."""

__version__ = "0.1.0"
