"""The science: model-based embedding segmentation and its baselines. No Dagster here."""

from .baselines import (
    DemographicSegmenter,
    EmpiricalBayes,
    KMedoidsCosine,
    LatentClassEM,
    PopulationModel,
    SpectralCosine,
)
from .graph import DISLIKE, LIKE, PreferenceGraph
from .segmenters import HardSegmenter, ModelEmbeddingSegmenter

__all__ = [
    "DISLIKE",
    "LIKE",
    "DemographicSegmenter",
    "EmpiricalBayes",
    "HardSegmenter",
    "KMedoidsCosine",
    "LatentClassEM",
    "ModelEmbeddingSegmenter",
    "PopulationModel",
    "PreferenceGraph",
    "SpectralCosine",
]
