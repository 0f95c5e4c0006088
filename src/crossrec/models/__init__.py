"""Models: the Recommender contract, the registry, and every registered model.

Importing this package registers all models (an explicit import list, like cornac's).
"""

from crossrec.data.batch import Batch, Sizes
from crossrec.models import (  # noqa: F401  (registration side effect)
    bitgcf,
    cmf,
    conet,
    crossrec,
    dtcdr,
    emcdr,
    ials,
    itemknn,
    lightgcn,
    mf,
    neumf,
    pick,
    pop,
    sasrec,
    textknn,
)
from crossrec.models.base import REGISTRY, build_model, config_from_dict, register
from crossrec.models.per_category import PerCategory

__all__ = ["REGISTRY", "Batch", "PerCategory", "Sizes", "build_model", "config_from_dict", "register"]
