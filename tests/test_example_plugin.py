"""The example third-party package installs, shows up in `lpb plugins`, and breeds, with no core change."""

import json
import os
import subprocess
import sys

from tests.conftest import QUICK_RUN, REPO


def test_example_plugin_package_works_end_to_end(tmp_path, day_care):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "examples" / "lpb-example-plugin")], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}

    def lpb(*args):
        return subprocess.run([sys.executable, "-m", "lpb_core", *map(str, args)], env=env, capture_output=True,
                              text=True)

    listed = {row["name"]: row for row in json.loads(lpb("plugins", "--json").stdout)}
    assert listed["example"]["distribution"] == "lpb-example-plugin"
    assert listed["example"]["registers"] == {"mutation_operators": ["splice_with_best"],
                                              "selection_strategies": ["fitness_proportional_tournament"]}

    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--operators", "splice_with_best",
                 "--selection-strategy", "fitness_proportional_tournament")
    assert result.returncode == 0, result.stderr
    run = day_care / "sentiment" / "RUN_0"
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["selection_strategy"] == "fitness_proportional_tournament"
    births = [b for n in (1, 2) for b in json.loads((run / f"generation_00{n}.json").read_text())["births"]]
    assert births and all(b["operator"] == "splice_with_best" for b in births)
    assert {"name": "example", "distribution": "lpb-example-plugin", "version": "0.1.0"} in config["plugins"]
