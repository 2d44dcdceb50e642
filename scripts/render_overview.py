"""Draw the overview dashboard's panels from a Prometheus into a PNG (matplotlib).

Grafana is not installable on the development machines, so docs/screenshots/overview-dashboard.png
is drawn this way: the same panels and PromQL as deploy/monitoring/grafana/dashboards/overview.json
(scripts/gen_monitoring.py), fed by a real Prometheus scraping the embedded default. The monitoring
end-to-end test calls `render` when ATELIER_RENDER_OVERVIEW=1:

    ATELIER_RENDER_OVERVIEW=1 uv run --with matplotlib pytest tests/e2e/test_monitoring_e2e.py
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_monitoring", REPO / "scripts" / "gen_monitoring.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def render(prometheus_url: str, target: Path, minutes: float = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _generator().OVERVIEW
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, minutes * 60 / 200)
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 3.4 * rows))
    for axis, panel in zip(axes.flat, panels, strict=False):
        for expr, legend in panel.targets:
            answer = httpx.get(
                f"{prometheus_url}/api/v1/query_range",
                params={"query": expr, "start": start, "end": end, "step": step},
                timeout=30,
            ).json()
            for series in answer["data"]["result"]:
                xs = [float(t) - end for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                axis.plot(xs, ys, label=_legend(legend, series["metric"]), linewidth=1.4)
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel("seconds ago" if minutes < 10 else "seconds ago (range)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if panel.unit not in ("short", "bool"):
            axis.set_ylabel(panel.unit, fontsize=8)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=6, loc="upper left")
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(
        "Atelier overview (deploy/monitoring/grafana/dashboards/overview.json), drawn from a real "
        "Prometheus scraping the embedded default",
        fontsize=12,
    )
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=80)
    plt.close(figure)


if __name__ == "__main__":
    render(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 5)
