"""bclviz: backward-compatible learning for embedding retrieval.

The light core is importable directly; plotting, projection and widgets live in their
own modules (``bclviz.plots``, ``bclviz.projection``, ``bclviz.widgets``) so that
``import bclviz`` stays fast and needs neither plotly nor umap.
"""

from .config import MethodConfig, TrainConfig
from .data import BCLData, Labeled, load_dataset
from .evaluation import average_compatibility, compatibility_matrix, evaluate, is_compatible
from .experiment import ExperimentConfig, ModelSpec, default_experiment, run_experiment
from .methods import list_methods
from .models import create_model, list_models
from .perturb import ndpp, odpp, pseudo_old
from .proxies import crowding, drift, recognisability
from .train import embed, train_new, train_old
from . import features, inspection  # your own embeddings: features.load, inspection.inspect_embeddings

__version__ = "0.1.0"

__all__ = [
    "BCLData", "ExperimentConfig", "Labeled", "MethodConfig", "ModelSpec", "TrainConfig",
    "average_compatibility", "compatibility_matrix", "create_model", "crowding",
    "default_experiment", "drift", "embed", "evaluate", "features", "inspection", "is_compatible",
    "list_methods", "list_models", "load_dataset", "ndpp", "odpp", "pseudo_old", "recognisability",
    "run_experiment", "train_new", "train_old",
]
