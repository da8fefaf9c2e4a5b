"""Every kind of broken day care ends in one line naming the file and the field, exit code 2, no traceback."""

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, QUICK_RUN


def breed(lpb, day_care, *extra):
    return lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, *extra)


def assert_one_line_error(result, *expected):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], (text, lines[0])


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["breeder.lmql", "mutation_prompts.json", "thinking_styles.json"])
def test_missing_file(lpb, day_care, name):
    (day_care / name).unlink()
    assert_one_line_error(breed(lpb, day_care), name, "file not found")


def test_missing_task_folder(lpb, day_care):
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN[:4], "--task", "nope")
    assert_one_line_error(result, "--task", "'nope'", "sentiment")


def test_forgetting_the_task_is_a_usage_error(lpb, day_care):
    assert_one_line_error(lpb("breed", "--day-care-dir", day_care, "--population-size", "4"), "Missing option '--task'")


@pytest.mark.parametrize("command, expected", [(("eval",), "give --task (or --run)"),
                                               (("report",), "give RUN_DIR, or --task and --run-number")])
def test_a_command_missing_what_to_work_on_is_a_usage_error(lpb, command, expected):
    assert_one_line_error(lpb(*command), expected)


def test_a_missing_suite_is_named_where_it_was_looked_for(lpb, day_care):
    (day_care / "sentiment" / "fitness_test_suite.json").unlink()  # the default name: nothing in task_description
    assert_one_line_error(breed(lpb, day_care), "sentiment/fitness_test_suite.json: file not found (each task needs "
                          "its fitness test suite: put it here, name another file as fitness_test_suite in "
                          "task_description.json, or pass --fitness-test-suite)")
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(fitness_test_suite="mine.json"))
    assert_one_line_error(breed(lpb, day_care), "task_description.json: $.fitness_test_suite: no suite file at ")


def test_invalid_json(lpb, day_care):
    (day_care / "sentiment" / "task_description.json").write_text('{"task_description": "x",')
    assert_one_line_error(breed(lpb, day_care), "task_description.json", "invalid JSON", "line 1")


def test_invalid_hjson(lpb, day_care):
    (day_care / "breeder.lmql").write_text("{ fitness_test_template: '''unterminated ")
    assert_one_line_error(breed(lpb, day_care), "breeder.lmql", "invalid hjson")


def test_a_key_given_twice_is_refused_not_silently_overwritten(lpb, day_care):
    suite = day_care / "sentiment" / "fitness_test_suite.json"
    text = suite.read_text()
    suite.write_text(text.replace('"gold_sentiment"', '"gold_sentiment": "positive", "gold_sentiment"', 1))
    assert_one_line_error(breed(lpb, day_care), f"{suite}: $.gold_sentiment: given twice in one object")
    suite.write_text(text)
    breeder = day_care / "breeder.lmql"
    breeder.write_text(breeder.read_text().replace("{", "{\n  fitness_test_template: '\"x [ANSWER]\"'", 1))
    assert_one_line_error(breed(lpb, day_care), f"{breeder}: $.fitness_test_template: given twice in one object")


def test_an_item_longer_than_a_query_may_hold_is_named_before_the_run(lpb, day_care, tmp_path):
    suite = day_care / "sentiment" / "fitness_test_suite.json"
    edit_json(suite, lambda items: items[3].update(text="A very long review. " * 600))
    result = breed(lpb, day_care)
    assert_one_line_error(result, f"{suite}: $[3].text: ", "tokens for random (seed 0), more than a fitness query may hold "
                          "(2048, the fitness decoder's max_len)")
    assert not (day_care / "sentiment" / "RUN_0").exists()
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "random")
    assert_one_line_error(result, f"{suite}: $[3].text: ")
    # a longer max_len lets it through
    edit_json(day_care / "sentiment" / "task_description.json",
              lambda d: d.update(fitness_decoder_options="argmax(max_len=8192)"))
    assert breed(lpb, day_care).exit_code == 0


def test_a_task_folder_where_no_run_directory_can_be_made_is_named(lpb, day_care, monkeypatch):
    # as a read-only folder refuses a normal user (the tests may run as root, whom chmod does not stop)
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name.startswith("RUN_"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert_one_line_error(breed(lpb, day_care), f"{day_care / 'sentiment'}: cannot make a run directory here: "
                          "Permission denied (runs are written inside the task's folder")


def test_blank_texts_folders_for_files_and_held_out_suites_are_checked(lpb, day_care, tmp_path):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(task_description="  \n "))
    assert_one_line_error(lpb("validate", day_care), "task_description.json: $.task_description: blank: write some "
                          "text here")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--suite", tmp_path)
    assert_one_line_error(result, f"--suite: no file at {str(tmp_path)!r} (a folder is there)")
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps([{"txt": "Fine.", "gold_sentiment": "positive"},
                                    {"text": "Bad.", "gold_sentiment": "negative"}]))
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(task_description="Sentiment."))
    assert_one_line_error(lpb("validate", day_care, "--test-suite", held_out), f"{held_out}: $[0].text: missing")


def test_missing_field(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.pop("task_description"))
    assert_one_line_error(breed(lpb, day_care), "task_description.json", "$.task_description", "missing")


def test_mistyped_field(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(decoder_options=3))
    assert_one_line_error(breed(lpb, day_care), "task_description.json", "$.decoder_options",
                          "expected a string, got a number (3)")


def test_a_suite_that_is_not_a_list_is_named_not_quoted(lpb, day_care):
    suite = day_care / "sentiment" / "fitness_test_suite.json"
    suite.write_text(json.dumps({"items": json.loads(suite.read_text())}))
    assert_one_line_error(breed(lpb, day_care), "fitness_test_suite.json: $: expected a list, got an object")
    suite.write_text(json.dumps([{"text": "Fine.", "gold_sentiment": "positive"}]))
    assert_one_line_error(breed(lpb, day_care), "fitness_test_suite.json: $: needs at least 2 items, has 1")


def test_a_byte_order_mark_is_read_past(lpb, day_care):
    path = day_care / "sentiment" / "task_description.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Notepad saves UTF-8
    assert lpb("validate", day_care, "--task", "sentiment").exit_code == 0


def test_unknown_field_names_the_known_ones(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(fitnes_scorer={}))
    assert_one_line_error(breed(lpb, day_care), "$.fitnes_scorer", "fitness_scorer")


def test_bad_decoder(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(fitness_decoder_options="greedy"))
    assert_one_line_error(breed(lpb, day_care), "task_description.json", "$.fitness_decoder_options", "argmax")


@pytest.mark.parametrize("decoder, problem", [
    ("sample(temperature=-1)", "temperature must be a number from 0 up, not -1"),
    ("sample(temprature=0.5)", "unknown option 'temprature': did you mean 'temperature'?"),
    ("beam(n=0)", "n must be a whole number from 1 up, not 0"),
    ("sample(temperature=0.7, top_p=2)", "top_p must be a number above 0 and at most 1, not 2"),
])
def test_a_decoder_option_out_of_range_or_misspelt(lpb, day_care, tmp_path, decoder, problem):
    intact = shutil.copytree(FIXTURES / "tiny_day_care", tmp_path / "intact")
    result = breed(lpb, intact, "--decoder-options-override", decoder)
    assert_one_line_error(result, "command line: --decoder-options-override: ", problem)
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(decoder_options=decoder))
    assert_one_line_error(breed(lpb, day_care), "task_description.json: $.decoder_options: ", problem)


def test_unknown_scorer(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d["fitness_scorer"].update(type="bleu"))
    assert_one_line_error(breed(lpb, day_care), "task_description.json", "$.fitness_scorer.type", "'bleu'",
                          "exact_match")


def test_bad_scorer_parameter(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d["fitness_scorer"].update(labels="x"))
    assert_one_line_error(breed(lpb, day_care), "task_description.json", "$.fitness_scorer.labels")


def test_unknown_operator(lpb, day_care):
    assert_one_line_error(breed(lpb, day_care, "--operators", "zero_order_prompt_gen,telepathy"),
                          "--operators", "'telepathy'", "lineage_mutation")


def test_only_operators_that_run_after_another_say_so(lpb, day_care):
    assert_one_line_error(breed(lpb, day_care, "--operators", "prompt_crossover"), "--operators",
                          "prompt_crossover (stage 'post'", "operators that make them: ", "zero_order_prompt_gen")


def test_unknown_selection_strategy(lpb, day_care):
    assert_one_line_error(breed(lpb, day_care, "--selection-strategy", "lottery"),
                          "--selection-strategy", "binary_tournament")


def test_suite_item_without_gold_label(lpb, day_care):
    edit_json(day_care / "sentiment" / "fitness_test_suite.json", lambda d: d[3].pop("gold_sentiment"))
    assert_one_line_error(breed(lpb, day_care), "fitness_test_suite.json", "$[3].gold_sentiment")


def test_template_placeholder_that_nothing_provides(lpb, day_care):
    text = (day_care / "breeder.lmql").read_text()
    (day_care / "breeder.lmql").write_text(text.replace('"Review: {text}{:assistant}"', '"Review: {text} {mood}{:assistant}"'))
    assert_one_line_error(breed(lpb, day_care), "breeder.lmql", "fitness_test_template", "{mood}")


def test_fitness_argument_that_no_suite_field_provides(lpb, day_care):
    text = (day_care / "breeder.lmql").read_text()
    (day_care / "breeder.lmql").write_text(text.replace('"text", "CoT"', '"text", "stars", "CoT"'))
    assert_one_line_error(breed(lpb, day_care), "breeder.lmql", "fitness_test_template_args[2]", "'stars'")


def test_asking_for_an_operator_without_template(lpb, day_care):
    text = (day_care / "breeder.lmql").read_text()
    start = text.index("  lamarckian_mutation:")
    (day_care / "breeder.lmql").write_text(text[:start] + "}\n")
    assert_one_line_error(breed(lpb, day_care, "--operators", "lamarckian_mutation"), "breeder.lmql",
                          "lamarckian_mutation")


def test_operator_without_template_is_switched_off_when_not_asked_for(lpb, day_care):
    text = (day_care / "breeder.lmql").read_text()
    start = text.index("  lamarckian_mutation:")
    (day_care / "breeder.lmql").write_text(text[:start] + "}\n")
    result = breed(lpb, day_care)
    assert result.exit_code == 0, result.output
    config = json.loads((day_care / "sentiment" / "RUN_0" / "config.json").read_text())
    assert "lamarckian_mutation" in config["disabled_operators"]
    assert "lamarckian_mutation" not in config["operators"]


def test_a_gold_label_no_answer_can_match_is_a_warning(lpb, day_care):
    edit_json(day_care / "sentiment" / "fitness_test_suite.json", lambda d: d[3].update(gold_sentiment="positiv"))
    warning = ("fitness_test_suite.json: $[3].gold_sentiment = 'positiv': the accuracy scorer does not count this gold "
               "label right even as the answer itself, so this item can never be scored right")
    result = lpb("validate", day_care, "--task", "sentiment")
    assert result.exit_code == 0 and warning in result.stderr and result.stdout.startswith("ok: ")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                 "--prompt", "Positive or negative?", "--items", "all")
    assert result.exit_code == 0 and warning in result.stderr
    result = breed(lpb, day_care)
    assert result.exit_code == 0 and f"  warning: {day_care}" in result.stderr and warning in result.stderr
    quiet = breed(lpb, day_care, "--quiet")  # no progress, but still the warning
    assert quiet.exit_code == 0 and f"Warning: {day_care}" in quiet.stderr and warning in quiet.stderr


def test_gold_labels_none_of_which_is_the_scorers_are_a_warning(lpb, day_care):
    edit_json(day_care / "sentiment" / "fitness_test_suite.json",
              lambda d: [item.update(gold_sentiment=str(item["gold_sentiment"] == "positive").lower()) for item in d])
    result = lpb("validate", day_care, "--task", "sentiment")
    assert result.exit_code == 0, result.output
    assert "fitness_test_suite.json: $[0].gold_sentiment = " in result.stderr
    assert "can never be scored right" in result.stderr


def rename_prompt_field(day_care, initial_template_too):
    """breeder.lmql with its prompt field task_prompt renamed to instruction where it is read; the variable the
    initial template writes renamed too or not; every other template still writes TASK_PROMPT."""
    text = (day_care / "breeder.lmql").read_text()
    text = text.replace('prompt_fields: ["task_prompt"]', 'prompt_fields: ["instruction"]')
    text = text.replace("{task_prompt}", "{instruction}").replace('"task_prompt"', '"instruction"')
    if initial_template_too:
        start, end = text.index("initial_prompt_gen:"), text.index("initial_prompt_gen_args")
        text = text[:start] + text[start:end].replace("TASK_PROMPT", "INSTRUCTION") + text[end:]
    (day_care / "breeder.lmql").write_text(text)


def test_an_initial_template_that_writes_no_variable_for_a_prompt_field(lpb, day_care):
    rename_prompt_field(day_care, initial_template_too=False)
    assert_one_line_error(breed(lpb, day_care), "breeder.lmql: $.initial_prompt_gen: writes no INSTRUCTION")


def test_operator_templates_writing_no_prompt_field_are_a_warning(lpb, day_care):
    rename_prompt_field(day_care, initial_template_too=True)
    result = lpb("validate", day_care, "--task", "sentiment")
    assert result.exit_code == 0, result.output
    assert ("breeder.lmql: eda_mutation writes TASK_PROMPT but a child's prompts come from INSTRUCTION, "
            "MUTATION_PROMPT (prompt fields in upper case): eda_mutation may leave children as copies of their "
            "parents") in result.stderr
    assert "first_order_prompt_gen, zero_order_hypermutation, first_order_hypermutation may leave" in result.stderr
    assert "zero_order_hypermutation writes" not in result.stderr  # it writes MUTATION_PROMPT: its child changes


def test_a_fitness_template_that_writes_no_answer_variable(lpb, day_care):
    text = (day_care / "breeder.lmql").read_text()
    (day_care / "breeder.lmql").write_text(text.replace("[ANSWER]", "[ANSWR]"))
    assert_one_line_error(breed(lpb, day_care), "breeder.lmql: $.fitness_test_template: writes no ANSWER, the "
                          "variable the scorer reads (answer_variable of sentiment/task_description.json; variables "
                          "it writes: ANSWR")
    assert not (day_care / "sentiment" / "RUN_0").exists()


def test_validate_lists_every_problem(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d["fitness_scorer"].update(type="bleu"))
    edit_json(day_care / "sentiment" / "fitness_test_suite.json", lambda d: d[0].update(text="x"))
    text = (day_care / "breeder.lmql").read_text()
    (day_care / "breeder.lmql").write_text(text.replace('"Review: {text}{:assistant}"', '"Review: {text} {mood}{:assistant}"'))
    result = lpb("validate", day_care)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("Error: ") for line in lines)
    assert any("'bleu'" in line for line in lines) and any("{mood}" in line for line in lines)


def test_validate_checks_the_strategy_filter_and_loggers_a_breed_would_use(lpb, day_care):
    result = lpb("validate", day_care, "--task", "sentiment", "--selection-strategy", "nope", "--similarity-filter",
                 "none_such", "--logger", "foo")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert "unknown selection strategy 'nope'" in lines[0] and "unknown similarity filter 'none_such'" in lines[1]
    assert "unknown logger 'foo'; known: console, events" in lines[2]
    # a breed counts those problems with the others, and lpb validate lists what it counted
    breed_result = breed(lpb, day_care, "--selection-strategy", "nope", "--logger", "foo", "-p", "lpb-loggers")
    assert "(and 3 more problems: lpb validate lists them all)" in breed_result.stderr
    listed = lpb("validate", day_care, "--task", "sentiment", "--selection-strategy", "nope", "--logger", "foo",
                 "-p", "lpb-loggers")
    assert len(listed.stderr.strip().splitlines()) == 4, listed.stderr
    assert "logger 'events', which every breed uses, is not registered" in listed.stderr


def test_a_broken_list_of_thinking_styles_hides_no_other_problem(lpb, day_care):
    (day_care / "thinking_styles.json").write_text('["Think.", 3]')
    edit_json(day_care / "sentiment" / "fitness_test_suite.json", lambda d: d[2].update(txt=d[2].pop("text")))
    result = lpb("validate", day_care)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {day_care / 'thinking_styles.json'}: $[1]: expected a string, got a number (3)",
        f"Error: {day_care / 'sentiment' / 'fitness_test_suite.json'}: $[2].text: missing (the fitness template "
        "needs it; 1 item(s) lack it)"]
    assert "(and 1 more problem: lpb validate lists them all)" in breed(lpb, day_care).stderr


def test_a_held_out_suite_lacking_a_field_is_named_with_its_own_index(lpb, day_care, tmp_path):
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps([{"text": "Fine.", "gold_sentiment": "positive"},
                                    {"txt": "Bad.", "gold_sentiment": "negative"}]))
    expected = f"{held_out}: $[1].text: missing (the fitness template needs it; 1 item(s) lack it)"
    assert_one_line_error(breed(lpb, day_care, "--test-suite", held_out), expected)
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "random", "--test-suite", held_out)
    assert_one_line_error(result, expected)


def test_validate_lists_an_items_schema_problem_beside_another_items_missing_field(lpb, day_care):
    def spoil(items):
        del items[3]["text"]
        items[6]["text"] = ["not", "text"]

    edit_json(day_care / "sentiment" / "fitness_test_suite.json", spoil)
    result = lpb("validate", day_care, "--task", "sentiment")
    assert result.exit_code == 2
    assert "fitness_test_suite.json: $[6].text: expected a string, a number or true or false, got a list" in result.output
    assert "fitness_test_suite.json: $[3].text: missing (the fitness template needs it" in result.output


def test_nothing_is_written_for_bad_input(lpb, day_care):
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d["fitness_scorer"].update(type="bleu"))
    breed(lpb, day_care)
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_continue_unknown_run(lpb, day_care):
    assert_one_line_error(breed(lpb, day_care, "--continue-run-number", "7"), "RUN_7", "--continue-run-number")


def test_resume_with_different_settings_is_refused(lpb, day_care):
    assert breed(lpb, day_care).exit_code == 0
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--continue-run-number", "0", "--seed", "5")
    assert_one_line_error(result, "config.json", "$.settings.seed")


def test_suite_item_without_a_field_the_template_needs(lpb, day_care):
    edit_json(day_care / "sentiment" / "fitness_test_suite.json", lambda d: d[5].pop("text"))
    assert_one_line_error(breed(lpb, day_care), "fitness_test_suite.json", "$[5].text", "template needs it")


def break_template(path, name):
    """Drop the closing bracket of a template's first variable: an LMQL syntax error."""
    text = path.read_text()
    start = text.index(f"  {name}:")
    end = text.index("]", start)
    path.write_text(text[:end] + text[end + 1:])


def test_template_with_an_lmql_syntax_error_fails_validate_and_breed(lpb, day_care):
    break_template(day_care / "breeder.lmql", "zero_order_prompt_gen")
    result = lpb("validate", day_care)
    assert result.exit_code == 2
    expected = f"Error: {day_care / 'breeder.lmql'}: $.zero_order_prompt_gen: LMQL cannot compile it: "
    assert any(line.startswith(expected) for line in result.output.splitlines()), result.output
    assert_one_line_error(breed(lpb, day_care), "breeder.lmql: $.zero_order_prompt_gen: LMQL cannot compile it")
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_a_tasks_own_template_is_compiled_and_named_by_its_file(lpb, day_care):
    own = day_care / "sentiment" / "breeder.lmql"
    own.write_text("{\n  lineage_mutation: '''\"- [TASK_PROMPT\" where len(TOKENS(TASK_PROMPT)) < 6'''\n"
                   "  lineage_mutation_args: []\n}\n")
    assert_one_line_error(breed(lpb, day_care), f"{own}: $.lineage_mutation: LMQL cannot compile it")


def test_validate_lists_every_kind_of_problem_in_one_pass(lpb, day_care):
    """A suite without gold labels does not hide a scorer parameter error or a broken template."""
    edit_json(day_care / "sentiment" / "fitness_test_suite.json", lambda d: [item.pop("gold_sentiment") for item in d])
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d["fitness_scorer"].update(labels="x"))
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d.update(decoder_options="greedy"))
    break_template(day_care / "breeder.lmql", "eda_mutation")
    result = lpb("validate", day_care, "--operators", "eda_mutation,telepathy")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    for expected in ("fitness_test_suite.json: $[0].gold_sentiment: missing its gold label (suite items need "
                     "'gold_sentiment'); 9 more item(s) lack it too", "$.decoder_options", "$.fitness_scorer.labels",
                     "$.eda_mutation: LMQL cannot compile it", "unknown mutation operator 'telepathy'"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)


def test_a_broken_task_does_not_hide_the_problems_of_another(lpb, day_care):
    other = day_care / "other"
    other.mkdir()
    (other / "task_description.json").write_text('{"task_description": 3}')
    edit_json(day_care / "sentiment" / "task_description.json", lambda d: d["fitness_scorer"].update(labels="x"))
    result = lpb("validate", day_care)
    assert result.exit_code == 2
    assert f"{other / 'task_description.json'}: $.task_description: expected a string, got a number (3)" in result.output
    assert f"{other / 'task_description.json'}: $.fitness_scorer: missing" in result.output
    assert "sentiment/task_description.json: $.fitness_scorer.labels" in result.output


def test_a_file_that_is_not_a_gguf_model_is_named(lpb, day_care, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("hello")
    assert_one_line_error(breed(lpb, day_care, "--model-name-or-path", str(fake)), f"--model-name-or-path: {fake}: "
                          "not a GGUF model file")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "openai/served", "--api-base", "http://127.0.0.1:9/v1", "--tokenizer", fake)
    assert_one_line_error(result, f"--tokenizer: {fake}: not a GGUF model file")


def test_server_options_without_a_served_model_are_refused(lpb, day_care):
    # --api-base for the in-process model (the openai/ prefix forgotten) would otherwise be ignored
    assert_one_line_error(breed(lpb, day_care, "--api-base", "http://127.0.0.1:8765/v1"),
                          "--api-base: no model of this run reads it (random")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "random", "--tokenizer", "smollm2")
    assert_one_line_error(result, "--tokenizer: no model of this run reads it")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "random", "--endpoint", "127.0.0.1:9")
    assert_one_line_error(result, "--endpoint: no model of this run reads it (random (seed 0)); --endpoint is for a "
                          "GGUF model (or smollm2) served by lpb serve")


def test_a_chat_server_that_is_not_there_is_named_at_once(lpb, day_care):
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "openai/my-model", "--api-base", f"http://127.0.0.1:{port}/v1")
    assert_one_line_error(result, f"--api-base: nothing answers at http://127.0.0.1:{port}/v1 (Connection refused)")


def test_in_process_model_options_without_such_a_model_are_a_warning(lpb, day_care):
    # the random model runs no llama.cpp: threads and sequences decoded together would silently do nothing
    result = breed(lpb, day_care, "--server-batch-size", "3", "--n-threads", "1")
    assert result.exit_code == 0, result.output
    for option in ("--server-batch-size", "--n-threads"):
        assert f"warning: {option} has no effect on random" in result.output
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompt", "x", "--model-name-or-path",
                 "random", "--n-threads", "2")
    assert result.exit_code == 0, result.output
    assert "--n-threads has no effect on random" in result.output
    assert "has no effect" not in breed(lpb, day_care).output


def test_the_variables_a_template_writes_are_its_holes_not_its_subscripts():
    from lpb_core.templates import Template

    code = '"Q: {question} [ANSWER] then [N: int] and [@fn X]" where x[i] and ys[a:b] and f(x)[k]'
    assert Template("t", code, ("question",)).writes() == {"ANSWER", "N", "X"}
