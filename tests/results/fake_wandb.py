"""A stand-in for the ``wandb`` module that records what gainbench asks of it (tests inject it
into ``sys.modules``): the calls of wandb's own offline run, without its service process."""

from __future__ import annotations

import types


class FakeRun:
    def __init__(self, **init):
        self.init = init
        self.id = init.get("id")
        self.logged: list[dict] = []
        self.metrics: dict[str, str | None] = {}
        self.summary: dict = {}
        self.artifacts: list[FakeArtifact] = []
        self.finished = False

    def define_metric(self, name, step_metric=None):
        self.metrics[name] = step_metric

    def log(self, data, step=None):
        assert step is None, "custom step metrics, not wandb's own step"
        self.logged.append(dict(data))

    def log_artifact(self, artifact):
        self.artifacts.append(artifact)

    def finish(self, exit_code=None):
        self.finished = True


class FakeArtifact:
    def __init__(self, name, type, metadata=None):
        self.name, self.type, self.metadata = name, type, metadata or {}
        self.files: dict[str, str] = {}
        self.objects: dict[str, object] = {}

    def add_file(self, local_path, name=None):
        self.files[name or local_path] = local_path

    def add(self, obj, name):
        self.objects[name] = obj


class FakeTable:
    def __init__(self, dataframe=None):
        self.dataframe = dataframe


def fake_wandb() -> types.ModuleType:
    """A fresh module; ``module.runs`` lists every run ``wandb.init`` made, in order."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        run = FakeRun(**kwargs)
        module.runs.append(run)
        return run

    module.init, module.Artifact, module.Table = init, FakeArtifact, FakeTable
    return module
