"""The flagship cross-category model (see `model.py`), composed of:

- `towers.ItemTower`: ID embedding + projected content vector (image now, text next) + item bias;
- `encoder.HistoryEncoder`: attention / transformer / mean over the user's history in all categories;
- `neighbourhood.NeighbourhoodTerm`: Koren's co-occurrence neighbourhood term with learned weights;
- `objective.CategoryWeighting`: w_c of the joint objective (uniform, inverse frequency, learned);
- `config.CrossRecConfig`: its options.

and of the parts it owns and calls (plain objects holding the model; the tensors stay the model's):
`user_tower.UserTower`, `side.HistoryTerms`, `loss.Objective`, `softmax.SoftmaxLosses`,
`loss.AuxiliaryLosses`, `prior.NewUserPrior`, `borrow.Borrowing`, `shrink.TextShrinkage`,
`calibration.ColdOffset`, `live_text.LiveTextEncoder`, `inference.FlagshipInference` (serving
adapters), each typed against `host.Flagship`.
"""

from crossrec.models.crossrec.config import CrossRecConfig
from crossrec.models.crossrec.model import CrossRec

__all__ = ["CrossRec", "CrossRecConfig"]
