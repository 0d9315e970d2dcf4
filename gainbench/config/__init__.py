"""The typed settings schema: every setting, its default, its checks and its part in the run id.

* :mod:`gainbench.config.schema`: the settings dataclasses (the one place a default lives) and
  the run id; ``configs/`` mirrors them (tests/test_schema.py keeps the two equal).
* :mod:`gainbench.config.checks`: the rules that span groups (budgets, stage numbers).
* :mod:`gainbench.config.fields`: what a field declares beside itself (role, neutral value,
  ranges) and the strict reading of a plain config dict against the dataclasses.

Nothing here imports Hydra or OmegaConf; :mod:`gainbench.settings` is where the composed Hydra
config becomes these dataclasses. ``ModelSpec`` (models/loading.py) and ``DomainSpec``
(data/domains.py) stay beside the code that reads them and declare their fields' metadata with
plain ``dataclasses.field``; the schema composes them.
"""
