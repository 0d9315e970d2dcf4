"""The console scripts besides ``gainbench`` itself (pyproject.toml ``[project.scripts]``):

- ``gainbench-tables``: the paper's tables from run folders (:mod:`.tables`)
- ``gainbench-figures``: the paper's figures from run folders (:mod:`.figures`, needs ``[figures]``)
- ``gainbench-prepare-data``: read and tokenise a sequence before the runs need it
  (:mod:`.prepare_data`)
- ``gainbench-match-lr``: find each method's learning rates for target in-domain gains
  (:mod:`gainbench.study.command`)

Each is a small ``main`` over the code it drives; ``scripts/*.py`` call the same ``main``, so the
older ``python scripts/make_tables.py`` commands keep working in a checkout.
"""
