"""Honest degradation: where clauses reduced to what a backend enforces, still compiled by LMQL."""

from __future__ import annotations

import lmql
import pytest

from lpb_core.constraints import DEGRADED_MAX_TOKENS, ENFORCED_BY_STOPPING, LENGTH, degrade

FITNESS = '''
"Question: {question}\\n"
if CoT:
    "Let me think. [REASONING]" where len(TOKENS(REASONING)) < 60 and STOPS_AT(REASONING, "\\n")
"[ANSWER]" where ANSWER in ["yes", "no"]
'''


def compiles(code: str, *args: str) -> None:
    lmql.query(code, input_variables=list(args), is_async=True)


def test_a_label_set_becomes_a_short_line_and_is_reported():
    code, dropped = degrade(FITNESS, ENFORCED_BY_STOPPING)
    assert dropped == ["ANSWER in ['yes', 'no']"]
    assert f'"[ANSWER]" where len(TOKENS(ANSWER)) < {DEGRADED_MAX_TOKENS} and STOPS_AT(ANSWER, \'\\n\')' in code
    # what the backend enforces is kept as written
    assert 'where len(TOKENS(REASONING)) < 60 and STOPS_AT(REASONING, "\\n")' in code
    compiles(code, "question", "CoT")


def test_enforced_conjuncts_stay_and_no_second_bound_is_added():
    code, dropped = degrade('"[N]" where INT(N) and len(TOKENS(N)) < 5\n', ENFORCED_BY_STOPPING)
    assert dropped == ["INT(N)"]
    assert code == "\"[N]\" where len(TOKENS(N)) < 5 and STOPS_AT(N, '\\n')\n"
    compiles(code)


def test_a_regex_on_a_backend_that_only_bounds_length():
    code, dropped = degrade('"[A]" where REGEX(A, r"[0-9]+") and STOPS_AT(A, ".")\n', (LENGTH,))
    assert dropped == ["REGEX(A, '[0-9]+')", "STOPS_AT(A, '.')"]
    assert code == f'"[A]" where len(TOKENS(A)) < {DEGRADED_MAX_TOKENS}\n'
    compiles(code)


def test_nothing_enforced_removes_the_clause():
    code, dropped = degrade('"[A]" where A in ["x", "y"]\n"done"\n', ())
    assert code == '"[A]"\n"done"\n'
    assert dropped == ["A in ['x', 'y']"]


@pytest.mark.parametrize("enforces", [None, ENFORCED_BY_STOPPING])
def test_code_the_backend_fully_enforces_is_unchanged(enforces):
    code = FITNESS.replace('where ANSWER in ["yes", "no"]', 'where STOPS_AT(ANSWER, "\\n")')
    assert degrade(code, enforces) == (code, [])


def test_the_built_in_day_care_degrades_to_compilable_templates():
    from lpb_core.cli_common import default_day_care
    from lpb_core.daycare import load_day_care

    day_care = load_day_care(default_day_care())
    for task in day_care.task_names():
        for template in day_care.for_task(task).breeder.templates.values():
            code, _ = degrade(template.code, ENFORCED_BY_STOPPING)
            compiles(code, *template.args)
    answer_quality = day_care.for_task("answer_quality").breeder.templates["fitness_test_template"]
    assert degrade(answer_quality.code, ENFORCED_BY_STOPPING)[1] == ["ANSWER in ['yes', 'no']"]
