"""Rendering ``lpb report``: matplotlib charts (Agg) and Jinja2 templates over ``run_data.report_data``.

report.html is one self-contained file: charts are embedded as base64 PNG, styles are inline, and
nothing is fetched from the network, so it reads the same offline or mailed to a colleague.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import jinja2
from matplotlib.figure import Figure  # the object API draws with Agg and touches no global pyplot state

from lpb_core import files

FITNESS_PNG, REPORT_HTML, REPORT_MD = "fitness.png", "report.html", "report.md"
CHART_SIZE = (8, 4)  # inches; at CHART_DPI, 800 x 400 pixels
CHART_DPI = 100


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()


def fitness_chart(rows: list[dict]) -> bytes:
    """Best, mean and worst training fitness per generation."""
    figure = Figure(figsize=CHART_SIZE, layout="constrained")
    axes = figure.add_subplot()
    generations = [r["generation"] for r in rows]
    for key, style in (("best", "o-"), ("mean", "s--"), ("worst", "v:")):
        axes.plot(generations, [r[key] for r in rows], style, label=key)
    axes.set(xlabel="generation", ylabel="training fitness (this generation's minibatch)", ylim=(-0.02, 1.02),
             title="Training fitness per generation")
    axes.set_xticks(generations)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return png(figure)


def held_out_chart(held_out: dict) -> bytes:
    """Held-out accuracy of each compared unit with its 95 % Wilson interval."""
    units = held_out["units"]
    figure = Figure(figsize=(CHART_SIZE[0], 1.2 + 0.6 * len(units)), layout="constrained")
    axes = figure.add_subplot()
    labels = [f"{u['id']} ({', '.join(u['roles']).replace('_', ' ')})" for u in units]
    values = [u["accuracy"] for u in units]
    errors = [[v - u["interval"][0] for v, u in zip(values, units)],
              [u["interval"][1] - v for v, u in zip(values, units)]]
    positions = range(len(units))
    axes.barh(positions, values, xerr=errors, capsize=6, color=["#2a7ab0" if "best" in u["roles"] else "#aaaaaa"
                                                                  for u in units])
    for y, value in zip(positions, values):
        axes.text(0.01, y, f"{value:.3f}", va="center", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    constant = held_out.get("constant_answer")
    if constant:  # the floor: a bar near this line shows no sign the model read the items
        axes.axvline(constant["b_accuracy"], color="#c0392b", linestyle="--",
                     label=f"answering {constant['answer']!r} every time")
        figure.legend(loc="outside lower center", frameon=False)  # below the axes: never over a bar
    axes.set_yticks(list(positions), labels)
    axes.invert_yaxis()
    axes.set(xlim=(0, 1), xlabel=f"accuracy on {held_out['items']} {held_out['what']} (95 % interval)",
             title="Held-out accuracy")
    return png(figure)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("lpb_plugins", "templates"), autoescape=jinja2.select_autoescape(["html.j2"]),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    environment.filters["score"] = lambda value: "-" if value is None else f"{value:.3f}"
    environment.filters["cell"] = lambda text: " ".join(str(text).split()).replace("|", "\\|")
    return environment


def render(data: dict, run_dir: Path) -> list[Path]:
    """Write report.html, report.md and fitness.png into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    charts = {"fitness": fitness_chart(data["fitness_per_generation"])} if data["fitness_per_generation"] else {}
    if data["held_out"]["scored"]:
        charts["held_out"] = held_out_chart(data["held_out"])
    embedded = {name: base64.b64encode(image).decode("ascii") for name, image in charts.items()}
    environment = _environment()
    written = []
    if "fitness" in charts:
        files.write_bytes_atomic(run_dir / FITNESS_PNG, charts["fitness"])
        written.append(run_dir / FITNESS_PNG)
    for name, template in ((REPORT_HTML, "report.html.j2"), (REPORT_MD, "report.md.j2")):
        text = environment.get_template(template).render(
            data=data, charts=embedded, fitness_png=FITNESS_PNG if "fitness" in charts else None)
        files.write_bytes_atomic(run_dir / name, text.encode("utf-8"))
        written.append(run_dir / name)
    return written
