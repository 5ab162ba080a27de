"""The core's figures are bare matplotlib Figures: importing them leaves the session's
backend alone, and they render without pyplot."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
from matplotlib.figure import Figure

from segmentation_dagster.core import plots
from segmentation_dagster.core.sequence import figures
from segmentation_dagster.core.sequence.segments import KResult


def test_importing_the_figures_leaves_matplotlib_alone():
    """No module that draws switches the backend or pulls in pyplot when imported."""
    code = (
        "import sys, matplotlib; matplotlib.use('svg'); "
        "import segmentation_dagster.core.nmf, segmentation_dagster.core.plots, "
        "segmentation_dagster.core.sequence.figures; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _png(figure: Figure) -> bytes:
    assert isinstance(figure, Figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def test_core_figures_render_without_pyplot():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.5, 100), rng.normal(2, 0.5, 100)])
    drawn = [
        plots.embedding_density(x, (x > 0).astype(int)),
        plots.bar_chart(["a", "b"], [0.4, 0.6], "title", "value"),
    ]
    history = [
        SimpleNamespace(epoch=e, train_loss=1 / e, validation_hr=0.1 * e,
                        validation_ndcg=0.05 * e)
        for e in (1, 2, 3)
    ]
    results = {
        k: KResult(k=k, silhouette=0.1 * k, labels=np.arange(10) % k,
                   centres=np.eye(k), distances=np.full(10, 0.2), sizes=np.full(k, 10 // k),
                   segment_mean_distance=np.linspace(0.1, 0.3, k),
                   segment_std_distance=np.full(k, 0.05))
        for k in (2, 3)
    }
    labels = rng.integers(0, 2, 100)
    drawn += [
        figures.training_curve(history),
        figures.k_selection(results, 3, length_scale=0.5),
        figures.centre_distances(results[3], length_scale=0.5),
        figures.lookalike(rng.random(20), rng.random(50), rng.random(50) > 0.5,
                          rng.random(80), 0.5, labels, rng.random(100)),
    ]
    for figure in drawn:
        assert _png(figure)[:4] == b"\x89PNG"
    assert len(drawn[-1].axes) == 3  # score densities, F2 and its twin (audience size)
