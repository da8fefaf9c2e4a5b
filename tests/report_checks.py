"""Checks of the files `lpb report` writes, against the run's own files (shared by the random-model and
embedded-model tests)."""

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image


class Page(HTMLParser):
    """What a reader of report.html gets: images, links, scripts, headings and the visible text."""

    def __init__(self):
        super().__init__()
        self.images, self.urls, self.scripts, self.headings, self.text = [], [], [], [], []
        self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        for key in ("src", "href", "srcset", "action", "data"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        if tag in ("h1", "h2"):
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append(self._heading.strip())
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading is not None:
            self._heading += data


def md_table(markdown: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``first_header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def generation_files(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("generation_*.json"))]


def check_report(run_dir: Path) -> tuple[str, Page]:
    """Every number report.md shows, recomputed from summary.json and the generation files; the PNG's size;
    report.html parsed: each chart embedded, nothing fetched from outside."""
    summary = json.loads((run_dir / "summary.json").read_text())
    generations = generation_files(run_dir)
    markdown = (run_dir / "report.md").read_text()

    rows = md_table(markdown, "generation")
    assert len(rows) == len(generations) == summary["generations_completed"] + 1
    for row, record, per_generation in zip(rows, generations, summary["fitness_per_generation"]):
        fitness = [u["fitness"] for u in record["population"]]
        assert int(row[0]) == record["generation"] == per_generation["generation"]
        assert row[1] == f"{max(fitness):.3f}" == f"{per_generation['best']:.3f}"
        assert row[2] == f"{sum(fitness) / len(fitness):.3f}" == f"{per_generation['mean']:.3f}"
        assert row[3] == f"{min(fitness):.3f}"
        assert row[4] == record["stats"]["best_unit"]

    operators = {row[0]: row[1:] for row in md_table(markdown, "operator")}
    assert set(operators) == set(summary["operator_statistics"])
    for name, stats in summary["operator_statistics"].items():
        rate = "-" if stats["win_rate"] is None else f"{stats['win_rate']:.3f}"
        assert operators[name] == [str(stats["children"]), str(stats["contests_entered"]), str(stats["wins"]), rate]
    assert sum(s["children"] for s in summary["operator_statistics"].values()) == sum(
        len(g["births"]) for g in generations)

    [cost] = md_table(markdown, "LLM calls")
    assert cost[:6] == [str(summary[k]) for k in ("llm_calls", "cache_hits", "prompt_tokens", "completion_tokens",
                                                  "llm_seconds", "wall_seconds")]
    assert cost[6] == ("no known prices" if summary["cost_usd"] is None else f"{summary['cost_usd']:.4f}")

    # Markdown's own layout: a quoted prompt ends before the next line (else it swallows it), headings stand apart.
    lines = markdown.split("\n")
    assert markdown.endswith("\n") and not markdown.endswith("\n\n\n")
    for i, line in enumerate(lines):
        assert not line.startswith("> ") or lines[i + 1] == "", f"report.md line {i + 1} runs into the next"
        assert not line.startswith("#") or i == 0 or lines[i - 1] == "", f"report.md line {i + 1}: heading"

    [best] = md_table(markdown, "training fitness")
    assert best[0] == f"{summary['best_train_fitness']:.3f}"
    for text in summary["best_unit"]["prompts"].values():
        assert "> " + " ".join(text.split()).replace("|", "\\|") in markdown
    assert f"completed all {summary['generations_completed']} generations" in markdown
    examples = len(summary["best_unit"].get("context") or ())  # the winner is the first of the top prompts
    shown = re.search(r"^### 1\. .*?(?=^### |^## )", markdown, re.M | re.S).group(0)
    assert (f"Few-shot context: {examples} worked example" in shown) == (examples > 0)

    held_out = summary["held_out"]
    if held_out:
        units = {row[0]: row for row in md_table(markdown, "unit")}
        assert set(units) == set(held_out["units"])
        for unit_id, unit in held_out["units"].items():
            outcomes = [c for v in held_out["variants"] for c in unit["correct"][v]]
            assert units[unit_id][3] == f"{sum(outcomes)}/{len(outcomes)}"
            assert units[unit_id][4] == f"{sum(outcomes) / len(outcomes):.3f}"
        for comparison in held_out["comparisons"]:
            assert comparison["sentence"] in markdown  # the same test, recomputed from the item outcomes

    image = Image.open(run_dir / "fitness.png")
    assert image.format == "PNG" and image.size == (800, 400)

    html = (run_dir / "report.html").read_text()
    page = Page()
    page.feed(html)
    outside = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"(https?|ftp):|//[a-z0-9]|@import|url\(", outside, re.IGNORECASE), "report.html fetches"
    assert page.scripts == []
    assert not re.search(r"<(built-in|bound) method|object at 0x|\bNone\b", html), "a Python value leaked into the page"
    assert all(url.startswith("data:image/png;base64,") for url in page.urls)
    charts = {img["alt"]: Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))) for img in page.images}
    assert set(charts) == {"training fitness chart"} | ({"held-out accuracy chart"} if held_out else set())
    assert charts["training fitness chart"].size == (800, 400)
    fitness_src = next(img["src"] for img in page.images if img["alt"] == "training fitness chart")
    assert base64.b64decode(fitness_src.split(",", 1)[1]) == (run_dir / "fitness.png").read_bytes()
    assert [h for h in page.headings if h in ("Best prompt", "Is it really better?", "Fitness per generation",
                                               "Top prompts", "Lineage", "Operators", "Cost")] == [
        "Best prompt", "Is it really better?", "Fitness per generation", "Top prompts", "Lineage", "Operators", "Cost"]
    return markdown, page
