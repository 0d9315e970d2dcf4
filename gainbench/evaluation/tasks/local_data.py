"""Dataset loader for gainbench's local lm-eval tasks.

The YAML configs name it with ``custom_dataset: !function local_data.load_jsonl``; lm-eval
resolves that relative to the YAML file and calls it with the task's ``dataset_kwargs`` and
``metadata`` as keyword arguments. The data path is taken relative to *this* file, never to
the current directory, and nothing goes through the HF hub or the ``datasets`` cache.
"""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load_jsonl(data_file: str, split: str = "validation", **_metadata) -> datasets.DatasetDict:
    """Read ``HERE/data_file`` (one JSON object a line) into a one-split DatasetDict."""
    path = HERE / data_file
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    # Bool labels become 0/1 so they index doc_to_choice the same way ints do.
    rows = [{k: int(v) if isinstance(v, bool) else v for k, v in row.items()} for row in rows]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})
