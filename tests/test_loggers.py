"""The built-in loggers: console progress, and Weights & Biases: the real package, offline, read back."""

import json
import re
import struct
import sys

import attrs
import pytest

from lpb_core.errors import InputError
from lpb_core.run import breed
from lpb_core.settings import BreedSettings

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte header, then 32 KiB blocks of framed records


def wandb_records(path):
    """The protobuf records of an offline run's .wandb file, decoded with wandb's own message classes."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:  # a block's tail too short for a record header is padding
            position += BLOCK - position % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def key(item):
    return item.key or "/".join(item.nested_key)


def offline_sessions(wandb_dir):
    """Per session (wandb.init ... finish), in order: run id, logged history rows by step, summary updates."""
    sessions = []
    for folder in sorted(wandb_dir.glob("wandb/offline-run-*")):
        run_id, history, summary = None, {}, {}
        for record in wandb_records(next(folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
            elif kind == "history":
                history[record.history.step.num] = {key(i): json.loads(i.value_json) for i in record.history.item}
            elif kind == "summary":
                summary.update({key(i): json.loads(i.value_json) for i in record.summary.update})
        tables = {re.match(r"(.+)_\d+_[0-9a-f]+\.table\.json$", p.name).group(1): json.loads(p.read_text())
                  for p in folder.glob("files/media/table/*.table.json")}
        sessions.append({"folder": folder.name, "run_id": run_id, "history": history, "summary": summary,
                         "tables": tables})
    return sessions


def test_wandb_logs_offline_and_a_resumed_breed_continues_the_same_wandb_run(day_care, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # nothing in $HOME
        monkeypatch.setenv(variable, str(tmp_path))
    settings = BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                             evolution_generations=1, fitness_batch_size=4, loggers=(), use_wandb=True,
                             wandb_project="lpb-tests")
    breed(settings)
    summary = breed(attrs.evolve(settings, evolution_generations=2, continue_run_number=0))
    run_dir = day_care / "sentiment" / "RUN_0"
    run_id = json.loads((run_dir / "wandb.json").read_text())["run_id"]

    first, second = offline_sessions(tmp_path)
    assert first["folder"].endswith(run_id) and second["folder"].endswith(run_id)
    assert first["run_id"] == second["run_id"] == run_id  # one W&B run over both sessions
    steps = {**first["history"], **second["history"]}
    for generation in (0, 1, 2):
        record = json.loads((run_dir / f"generation_{generation:03d}.json").read_text())
        assert steps[generation]["best_fitness"] == record["stats"]["best_fitness"]
        assert steps[generation]["llm_calls"] == record["usage"]["llm_calls"]
    assert set(second["history"]) >= {2} and 2 not in first["history"]
    assert second["summary"]["best_train_fitness"] == summary["best_train_fitness"]
    assert second["summary"]["stopped_because"] == "completed"
    constant = summary["held_out"]["constant_answer"]
    assert second["summary"]["held_out_vs_constant_answer"] == (
        f"{constant['answer']}: {constant['comparison']['sentence']}")

    top, operators = second["tables"]["top_prompts"], second["tables"]["operators"]
    assert top["columns"][:3] == ["rank", "id", "prompt"]
    assert top["data"][0][1] == summary["best_unit"]["id"]
    assert top["data"][0][2] == "\n".join(summary["best_unit"]["prompts"].values())
    assert {row[0]: row[1:] for row in operators["data"]} == {
        name: [s["children"], s["contests_entered"], s["wins"], s["win_rate"]]
        for name, s in summary["operator_statistics"].items()}


def test_use_wandb_without_wandb_installed_stops_before_anything_is_written(day_care, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(InputError) as error:
        breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", use_wandb=True))
    assert "pip install 'llama-day-care[wandb]'" in str(error.value)
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_console_progress_is_printed_per_generation(lpb, day_care):
    from tests.conftest import QUICK_RUN

    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--verbose")
    assert result.exit_code == 0, result.output
    for line in ("generation 0/2: best", "generation 1/2: best", "generation 2/2: best"):
        assert line in result.output
    assert " <- " in result.output and " by " in result.output  # verbose: every mutation
