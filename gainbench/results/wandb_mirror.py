"""Mirror rows to Weights & Biases when ``logger=wandb``. Off by default; never fatal.

The results folder is the source of truth; wandb only mirrors it. Offline mode is the
default so that no API key is needed; the run id is reused on resume.
"""

from __future__ import annotations

import warnings


class WandbMirror:
    def __init__(self, logger: dict, run_id: str, run_dir):
        self.run = None
        if logger.get("name") != "wandb":
            return
        try:
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=logger.get("project", "gainbench"),
                                  entity=logger.get("entity"), mode=logger.get("mode", "offline"),
                                  id=run_id, name=run_id, resume="allow", dir=str(run_dir))
        except Exception as err:  # a logging problem must never lose a run
            warnings.warn(f"wandb disabled: {err}; results are still written to {run_dir}")

    def log_stage(self, stage: int, rows: list[dict]) -> None:
        if self.run is None:
            return
        values = {f"{r['eval_kind']}/{r['eval_name']}/{r['metric']}": r["value"] for r in rows}
        try:
            self.run.log({"stage": stage, **values}, step=stage)
        except Exception as err:
            warnings.warn(f"wandb log failed: {err}")

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
