"""``lpb best``: a run's winning prompt ready to paste, as bare text, as JSON, or as a runnable LMQL query."""

from __future__ import annotations

import json

import attrs

from lpb_core.daycare import FITNESS_TEMPLATE, load_day_care
from lpb_core.decoding import parse_decoder
from lpb_core.errors import InputError
from lpb_core.evaluate import settings_of_run
from lpb_core.fitness import unit_arguments
from lpb_core.rundir import CONFIG_FILE
from lpb_core.units import Unit
from lpb_plugins.run_data import RunFiles, winner

def best_unit(run: RunFiles) -> Unit:
    unit = winner(run)
    if unit is None:
        raise InputError(run.path, "no generation has been written yet, so there is no best prompt", "RUN_DIR")
    return unit


def as_text(run: RunFiles) -> str:
    """The bare prompt (with several prompt fields, each under its name), then the worked examples the
    winner was scored with, if it has any: without them it is not the prompt that won."""
    unit = best_unit(run)
    prompts = unit.prompts
    text = next(iter(prompts.values())) if len(prompts) == 1 else \
        "\n\n".join(f"{field}:\n{value}" for field, value in prompts.items())
    if not unit.context:
        return text
    examples = "\n\n".join(f"Example {n}:\n{w.as_example()}" for n, w in enumerate(unit.context, 1))
    return (f"{text}\n\n--- and {len(unit.context)} worked example(s) from the training items, which the fitness "
            f"template shows with it ---\n\n{examples}")


def as_json(run: RunFiles) -> str:
    unit, summary = best_unit(run), run.ended or {}
    held_out = ((summary.get("held_out") or {}).get("units") or {}).get(unit.id, {})
    return json.dumps({
        "task": run.settings.get("task"), "model": run.config.get("model"), "run_dir": str(run.path),
        "status": run.status, "id": unit.id, "prompts": dict(unit.prompts), "mutation_prompt": unit.mutation_prompt,
        "context": [attrs.asdict(w) for w in unit.context],
        "fitness": {"train": unit.fitness, "validation": summary.get("best_validation_fitness"),
                    "finals": summary.get("best_finals_fitness"),
                    "held_out": held_out.get("fitness")},
        "born": unit.born, "operator": unit.operator,
    }, indent=2, ensure_ascii=False)


def as_lmql(run: RunFiles) -> str:
    """The task's fitness template with the winner's prompts, few-shot examples and the task's settings bound,
    under the decoder the run scored with. The suite's fields stay as the query's inputs."""
    unit = best_unit(run)
    settings = settings_of_run(run.path)
    day_care = load_day_care(run.config.get("day_care", settings.day_care_dir)).for_task(settings.task)
    task = day_care.task(settings.task)
    override = settings.decoder_options_override
    decoder = (parse_decoder(override, run.path / CONFIG_FILE, "$.settings.decoder_options_override")
               if override else task.fitness_decoder)
    template = day_care.breeder.templates[FITNESS_TEMPLATE]
    variant = settings.variants[0]  # with both variants scored, the one with reasoning
    bound = {k: v for k, v in unit_arguments(task, unit, variant).items() if k in template.args}
    inputs = [a for a in template.args if a not in bound]
    body = [f"{name} = {value!r}" for name, value in bound.items()] + template.code.strip("\n").splitlines()
    call = ", ".join(f"{name}=..." for name in inputs)
    header = [
        f"# The best prompt of {run.path} ({unit.id}, training fitness {unit.fitness}), in the fitness test of "
        f"task {settings.task!r}.",
        f"# Inputs: {', '.join(inputs) or 'none'}. The answer is the {task.answer_variable} variable. From Python:",
        "#   import lmql",
        f"#   query = lmql.query(open('best.lmql').read(), input_variables={inputs!r}, is_async=False)",
        f"#   query({call}{', ' if call else ''}model=lmql.model(...)).variables[{task.answer_variable!r}]",
    ]
    return "\n".join(header + [decoder.clause] + ["    " + line if line.strip() else "" for line in body]) + "\n"
