"""The typed settings schema: every setting, its default, its checks and its part in the run id.

* :mod:`gainbench.config.schema`: the settings dataclasses (the one place a default lives) and
  the run id; ``configs/`` mirrors them (tests/test_schema.py keeps the two equal).
* :mod:`gainbench.config.fields`: what a field declares beside itself (role, neutral value,
  ranges) and the strict reading of a plain config dict against the dataclasses.

Nothing here imports Hydra or OmegaConf; :mod:`gainbench.settings` is where the composed Hydra
config becomes these dataclasses. This ``__init__`` imports nothing, so that
``models/loading.py`` and ``data/domains.py``, whose specs the schema uses, can import
:mod:`gainbench.config.fields` without a cycle.
"""
