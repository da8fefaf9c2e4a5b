"""Loggers see every event, in order, as frozen objects."""

import attrs
import pytest

from lpb_core.events import GenerationFinished, MutationApplied, RunFinished, RunStarted, UnitEvaluated
from lpb_core.hookspecs import hookimpl
from lpb_core.run import breed
from lpb_core.settings import BreedSettings


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def lpb_run_started(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_unit_evaluated(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_mutation_applied(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_generation_finished(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_run_finished(self, event):
        self.events.append(event)


def test_a_plugin_observes_every_event(day_care):
    recorder = Recorder()
    summary = breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random",
                                  population_size=4, evolution_generations=2, fitness_batch_size=4, loggers=()),
                    extra_plugins=[recorder])
    kinds = [type(e) for e in recorder.events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    assert kinds.count(GenerationFinished) == 3
    assert kinds.count(MutationApplied) == 4  # two contests in each of two generations
    assert kinds.count(UnitEvaluated) >= 4 + 4
    finished = [e for e in recorder.events if isinstance(e, GenerationFinished)]
    assert [e.record.generation for e in finished] == [0, 1, 2]
    assert recorder.events[-1].summary == summary
    for event in recorder.events:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(event, attrs.fields(type(event))[0].name, None)
    applied = [e for e in recorder.events if isinstance(e, MutationApplied)]
    assert all(e.child.parents == (e.parent.id,) and e.child.operator == e.operator for e in applied)
