"""Mirror a run to Weights & Biases when ``logger=wandb``. Off by default; never fatal.

The results folder is the source of truth; wandb only mirrors it, as people use wandb:

* ``wandb.init`` gets the resolved config, a ``group`` per variant (:func:`variant_group`: every
  seed of one config in one group) and the tags model, method and sequence. Offline by default
  (no API key needed; ``wandb sync`` later); the run id is wandb's id, with ``resume="allow"``,
  so a resumed run continues the same wandb run.
* every optimiser step: ``train_step/loss`` and ``train_step/lr`` against
  ``train_step/global_step``, which counts the run's steps across stages (and on resume);
* every stage: each pooled row as ``<eval_kind>/<eval_name>/<metric>`` against ``stage``
  (per-document and analysis-grid rows only go into the artifact);
* at the end: the run metrics of the tables (BWT, FWT, forgetting, in-domain and earlier-domain
  changes; gainbench.results.run_metrics.RUN_METRICS) and the trainable parameter count in the
  summary, and rows.parquet, rows.csv and run.json as a ``run-results`` artifact, with the rows
  as a table.

wandb writes its own files under ``$WANDB_DIR`` when that is set, else in the run folder.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

STEP = "train_step/global_step"
# columns that make a row one point of many (a document, an analysis grid): not a stage's scalar
_POINT_COLUMNS = ("document", "alpha", "a", "b")


def variant_group(config) -> str:
    """``<model>-<method>-<sequence>-<8 hex>`` for a typed config (GainbenchConfig): its run id
    without the seed, the hash taken over every identity field but the seed, so the seeds of one
    variant share a group and anything else that changes the numbers makes another."""
    import dataclasses

    from gainbench.config.schema import run_id

    name, digest = run_id(dataclasses.replace(config, seed=0)).rsplit("-seed0-", 1)
    return f"{name}-{digest}"


def metric_key(name: str) -> str:
    """A run metric's summary key: ``BWT (nats)`` -> ``summary/bwt_nats``."""
    return "summary/" + re.sub(r"[^a-z0-9]+", "_", name.lower().replace("%", "")).strip("_")


class WandbMirror:
    def __init__(self, logger: dict, run_id: str, run_dir, config: dict | None = None,
                 group: str | None = None, tags: Sequence[str] = (), steps_done: int = 0):
        """``steps_done``: optimiser steps of the stages already finished (a resumed run)."""
        self.run = None
        self.steps_done = steps_done
        self._failed: set[str] = set()
        self._step_kinds: set[str] = set()
        if logger.get("name") != "wandb":
            return
        try:
            import wandb

            run_dir = Path(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=logger.get("project", "gainbench"),
                                  entity=logger.get("entity"), mode=logger.get("mode", "offline"),
                                  id=run_id, name=run_id, resume="allow",
                                  dir=None if os.environ.get("WANDB_DIR") else str(run_dir),
                                  config=config, group=group, tags=list(tags), job_type="train")
            # two x-axes: optimiser steps for the training curve, stages for the measurements
            self.run.define_metric(STEP)
            self.run.define_metric("train_step/*", step_metric=STEP)
            self.run.define_metric("stage")
        except Exception as err:  # a logging problem must never lose a run
            self.run = None
            warnings.warn(f"wandb disabled: {err}; results are still written to {run_dir}")

    @classmethod
    def for_run(cls, settings, run_dir, steps_done: int = 0, enabled: bool = True) -> WandbMirror:
        """The mirror of one run (gainbench.settings.RunSettings); ``enabled=False`` (a rank
        other than the main one) gives one that logs nothing."""
        if not enabled:
            return cls({}, settings.run_id, run_dir)
        return cls(settings.logger or {}, settings.run_id, run_dir,
                   config=settings.resolved_config,
                   group=variant_group(settings.config) if settings.config is not None else None,
                   tags=[settings.model.name, settings.method_name, settings.sequence_name],
                   steps_done=steps_done)

    def _call(self, what: str, action) -> None:
        """Run ``action()``; a failure is a warning (once per kind of call), never an error."""
        if self.run is None:
            return
        try:
            action()
        except Exception as err:
            if what not in self._failed:
                self._failed.add(what)
                warnings.warn(f"wandb {what} failed: {err}; results are still written to the "
                              "run folder")

    def log_step(self, step) -> None:
        """One optimiser step of the stage in flight (gainbench.training.loop.TrainStep)."""
        self._call("step log", lambda: self.run.log({
            STEP: self.steps_done + step.step, "train_step/loss": step.loss,
            "train_step/lr": step.lr}))

    def log_stage(self, stage: int, rows: list[dict], steps: int = 0) -> None:
        """A finished stage's rows; ``steps``: the optimiser steps it trained."""
        self.steps_done += steps
        values = {f"{r['eval_kind']}/{r['eval_name']}/{r['metric']}": r["value"] for r in rows
                  if all(_missing(r.get(c)) for c in _POINT_COLUMNS)}

        def log():
            for kind in {key.split("/", 1)[0] for key in values} - self._step_kinds:
                self.run.define_metric(f"{kind}/*", step_metric="stage")
                self._step_kinds.add(kind)
            self.run.log({"stage": stage, **values})
        self._call("log", log)

    def finish(self, run_dir=None) -> None:
        """End the wandb run; with ``run_dir`` (a finished run's folder), first write the summary
        metrics and the results artifact."""
        if run_dir is not None:
            self._call("summary", lambda: self._summarise(Path(run_dir)))
        self._call("finish", self.run.finish if self.run else None)
        self.run = None

    def _summarise(self, run_dir: Path) -> None:
        import wandb

        from gainbench.results.run_metrics import run_metrics
        from gainbench.results.runs import load_run

        run = load_run(run_dir)
        summary = {metric_key(name): value for name, value in run_metrics(run).items()}
        if run.meta.get("trainable_params") is not None:
            summary["summary/trainable_params"] = int(run.meta["trainable_params"])
        self.run.summary.update(summary)
        artifact = wandb.Artifact(f"rows-{run.run_id}", type="run-results",
                                  metadata={"rows_schema": run.meta.get("rows_schema", 1)})
        for name in ("rows.parquet", "rows.csv", "run.json"):
            if (run_dir / name).exists():
                artifact.add_file(str(run_dir / name), name=name)
        artifact.add(wandb.Table(dataframe=run.rows.astype(object).where(run.rows.notna(), None)),
                     "rows")
        self.run.log_artifact(artifact)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
