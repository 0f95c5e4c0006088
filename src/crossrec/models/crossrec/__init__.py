"""The flagship cross-category model (see `model.py`), composed of:

- `towers.ItemTower`: ID embedding + projected content vector (image now, text next) + item bias;
- `encoder.HistoryEncoder`: attention / transformer / mean over the user's history in all categories;
- `neighbourhood.NeighbourhoodTerm`: Koren's co-occurrence neighbourhood term with learned weights;
- `objective.CategoryWeighting`: w_c of the joint objective (uniform, inverse frequency, learned);
- `config.CrossRecConfig`: its options.

and of the parts it owns and calls (plain objects holding the model; the tensors stay the model's):
`user_tower.UserTower`, `side.HistoryTerms`, `loss.Objective`, `softmax.SoftmaxLosses`,
`loss.AuxiliaryLosses`, `prior.NewUserPrior`, `borrow.Borrowing`, `shrink.TextShrinkage`, `trust.TextTrust`,
`calibration.ColdOffset`, `live_text.LiveTextEncoder`, each typed against `host.Flagship`;
`state` registers its buffers; `text_model.TextCrossRec` is the class a text item tower builds.
Its serving adapters live in serving/flagship.py.
"""

from crossrec.models.base import register
from crossrec.models.crossrec.config import CrossRecConfig
from crossrec.models.crossrec.model import CrossRec
from crossrec.models.crossrec.text_model import TextCrossRec


def _variant(config: CrossRecConfig) -> type[CrossRec]:
    """The class a config builds: the text flagship where the item tower reads text."""
    return TextCrossRec if "text" in config.item_tower else CrossRec


register(
    "crossrec",
    CrossRecConfig,
    paper="crossrec flagship (docs/DESIGN.md); DIN/SASRec history attention, DTCDR shared+specific users",
    variant=_variant,
)(CrossRec)

__all__ = ["CrossRec", "CrossRecConfig", "TextCrossRec"]
