"""gainbench's offline lm-eval tasks: YAML configs plus the JSONL data they read.

lm-eval finds them through ``TaskManager(include_path=<this folder>)``; ``local_data.py``
loads the data relative to this folder, so the tasks work from any working directory.
"""
