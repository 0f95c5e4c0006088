"""One contract suite, parametrised over the model registry (every registered model runs it).

Checks: score shape and dtype, determinism under a seed, safetensors round trip, a loss that
decreases, single and pooled modes, and a config dataclass plus paper citation per model.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.data.batch import Sizes
from crossrec.models import REGISTRY
from crossrec.models.base import Decomposed, HasSetup, Trainable, TwoTower
from crossrec.models.per_category import build
from crossrec.training.optim import Optimizers
from crossrec.training.trainer import TrainConfig, Trainer

NAMES = sorted(set(REGISTRY) - {"pick"})  # pick composes trained models: tests/unit/test_pick.py has its contract
SMALL = {
    "mf": {"dim": 8},
    "neumf": {"dim": 8, "layers": [16, 8]},
    "itemknn": {"k": 20},
    "lightgcn": {"dim": 16, "n_layers": 2},
    "cmf": {"dim": 8, "category_offset": True},
    "dtcdr": {"dim": 8, "combine": "concat"},
    "conet": {"dim": 8, "layers": [16, 8]},
    "emcdr": {"dim": 8, "map_hidden": [16]},
    "bitgcf": {"dim": 8, "n_layers": 2, "transfer": "count"},
    "sasrec": {"dim": 16, "max_len": 10},
    "crossrec": {"dim": 16, "history": {"length": 10}},
}
TEXT_VARIANT = {"dim": 16, "history": {"length": 10}, "item_tower": "text+id"}  # the flagship's text tower


@pytest.fixture(autouse=True)
def item_text(tiny_bundle, tiny_text):
    """Models that read item text (textknn, the text tower) find the vectors on the Bundle."""
    tiny_bundle.text_vectors = tiny_text


def fitted(name: str, mode: str, bundle, seed: int = 0, epochs: int = 2, params: dict | None = None):
    torch.manual_seed(seed)
    model = build(name, mode, SMALL.get(name, {}) if params is None else params, Sizes.from_bundle(bundle))
    cfg = TrainConfig(epochs=epochs, batch_size=256, lr=1e-2, progress=False, checkpoint=False, seed=seed)
    if mode == "single":
        for c, sub in enumerate(model.models):
            Trainer(cfg, categories=[c]).fit(sub, bundle)
    else:
        Trainer(cfg).fit(model, bundle)
    return model


@pytest.mark.parametrize("mode", ["pooled", "single"])
@pytest.mark.parametrize("name", NAMES)
def test_score_shape_dtype_and_determinism(name, mode, tiny_bundle):
    a = fitted(name, mode, tiny_bundle)
    b = fitted(name, mode, tiny_bundle)
    users = torch.arange(min(17, tiny_bundle.n_users))
    for c in range(tiny_bundle.n_categories):
        with torch.no_grad():
            s = a.score(users, c)
            assert s.shape == (len(users), tiny_bundle.n_items_in(c))
            assert s.dtype == torch.float32 and torch.isfinite(s).all()
            assert torch.equal(s, b.score(users, c)), "same seed must give the same model"


@pytest.mark.parametrize("name", NAMES + ["crossrec[text+id]"])
def test_save_load_round_trip(name, tiny_bundle, tmp_path):
    text = name.endswith("[text+id]")
    name = name.split("[")[0]
    params = TEXT_VARIANT if text else SMALL.get(name, {})
    model = fitted(name, "pooled", tiny_bundle, params=params)
    save_artifact(tmp_path / name, model, name, "pooled", params, Sizes.from_bundle(tiny_bundle))
    art = load_artifact(tmp_path / name)
    users = torch.arange(tiny_bundle.n_users)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            assert torch.allclose(model.score(users, c), art.model.score(users, c))
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(REGISTRY[n].cls, Trainable)])
def test_loss_decreases(name, tiny_bundle):
    from crossrec.data.sampling import TrainSampler

    torch.manual_seed(0)
    model = build(name, "pooled", SMALL.get(name, {}), Sizes.from_bundle(tiny_bundle))
    if isinstance(model, HasSetup):
        model.setup(tiny_bundle, None)
    batches = list(TrainSampler(tiny_bundle, batch_size=512, seed=0))
    opts = Optimizers(model, TrainConfig(lr=1e-2))

    def total() -> float:
        with torch.no_grad():
            return sum(float(model.loss(b)) for b in batches)

    before = total()
    for _ in range(5):
        for b in batches:
            opts.zero_grad()
            model.loss(b).backward()
            opts.step()
    assert total() < 0.9 * before


TWO_TOWER = [n for n in NAMES if issubclass(REGISTRY[n].cls, TwoTower)]


def test_the_two_tower_models_are_the_expected_ones():
    # The dot-product models: the service indexes them with user_vectors / item_vectors alone.
    assert set(TWO_TOWER) >= {
        "mf",
        "cmf",
        "dtcdr",
        "emcdr",
        "lightgcn",
        "bitgcf",
        "sasrec",
        "crossrec",
        "ials",
        "textknn",
    }
    assert issubclass(REGISTRY["crossrec"].cls, Decomposed)  # its neighbourhood term is extra


@pytest.mark.parametrize("name", TWO_TOWER + ["crossrec[text+id]"])
def test_two_tower_vectors_reproduce_the_score(name, tiny_bundle):
    """score == user_vectors @ item_vectors.T (+ extra_scores for a Decomposed model)."""
    text = name.endswith("[text+id]")
    model = fitted(name.split("[")[0], "pooled", tiny_bundle, epochs=1, params=TEXT_VARIANT if text else None)
    assert isinstance(model, TwoTower)
    users = torch.arange(min(23, tiny_bundle.n_users))
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            u, v = model.user_vectors(users, c), model.item_vectors(c)
            assert u.shape[1] == v.shape[1] and v.shape[0] == tiny_bundle.n_items_in(c)
            dot = u @ v.T
            if isinstance(model, Decomposed):
                dot = dot + model.extra_scores(users, c)
            assert torch.allclose(dot, model.score(users, c), atol=1e-5), name


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_has_config_dataclass_and_paper(name):
    entry = REGISTRY[name]
    assert dataclasses.is_dataclass(entry.config_cls)
    assert entry.paper, f"{name} must cite its paper"
    assert entry.cls.__doc__ and entry.cls.__module__
    import inspect

    assert "Reference" in inspect.getmodule(entry.cls).__doc__


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_trains_scores_and_evaluates_on_cuda(name, tiny_bundle):
    """`train.device=auto` picks CUDA; the model trains, scores and is evaluated there."""
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator

    torch.manual_seed(0)
    model = build(name, "pooled", SMALL.get(name, {}), Sizes.from_bundle(tiny_bundle))
    cfg = TrainConfig(epochs=2, batch_size=256, lr=1e-2, progress=False, checkpoint=False, device="auto")
    trainer = Trainer(cfg)
    assert trainer.device.type == "cuda"
    trainer.fit(model, tiny_bundle)
    model.to(trainer.device)
    users = torch.arange(min(17, tiny_bundle.n_users), device=trainer.device)
    with torch.no_grad():
        s = model.score(users, 0)
    assert s.device.type == "cuda" and s.shape == (len(users), tiny_bundle.n_items_in(0))
    assert torch.isfinite(s).all()
    result = Evaluator(tiny_bundle, EvalConfig(ks=(10,))).evaluate(model)
    assert result.metric("ndcg@10") >= 0.0


# ---------------------------------------------------------------------------- declared capabilities
# What each registered model (and its "single" per-category wrapper) declares, as the runtime-checkable
# protocols of models/base.py it satisfies. Callers dispatch on these with isinstance (no hasattr
# probes: tests/unit/test_no_probes.py), so a model gaining or losing one must show up here.
# A per-category wrapper forwards `score`, ratings where every sub-model predicts them, and whether
# any sub-model reads text (`ReadsText`: its `uses_text`); never the vectors (one space per category).
FLAGSHIP = {
    "Calibrates",
    "Decomposed",
    "HasParameterGroups",
    "HasSetup",
    "RatingPredictor",
    "ReadsImages",
    "ReadsText",
    "Recommender",
    "Trainable",
    "TwoTower",
}
# what the service asks of the flagship beyond `score` is its adapter's (serving/flagship.py)
FLAGSHIP_SERVING = {"Borrows", "Explains", "IndexColumns", "ScoresCandidates", "ScoresHistory", "SparseCandidates"}
SINGLE = {"ReadsText", "Recommender"}
CAPABILITIES = {
    ("bitgcf", "pooled"): {"HasParameterGroups", "HasSetup", "Recommender", "Trainable", "TwoTower"},
    ("cmf", "pooled"): {"HasParameterGroups", "HasSetup", "Recommender", "Trainable", "TwoTower"},
    ("conet", "pooled"): {"HasParameterGroups", "Recommender", "Trainable"},
    ("crossrec", "pooled"): FLAGSHIP,
    ("crossrec[text+id]", "pooled"): FLAGSHIP | {"Staged", "TrainsEncoder"},  # TextCrossRec: the text tower's class
    ("dtcdr", "pooled"): {"HasParameterGroups", "HasSetup", "Recommender", "Trainable", "TwoTower"},
    ("emcdr", "pooled"): {"HasParameterGroups", "HasSetup", "Recommender", "Trainable", "TwoTower"},
    ("ials", "pooled"): {"Fittable", "Recommender", "TwoTower"},
    ("itemknn", "pooled"): {"Fittable", "Recommender"},
    ("lightgcn", "pooled"): {"HasSetup", "Recommender", "Trainable", "TwoTower"},
    ("mf", "pooled"): {"FusedStep", "ManualBackward", "RatingPredictor", "Recommender", "Trainable", "TwoTower"},
    ("neumf", "pooled"): {"Recommender", "Trainable"},
    ("pop", "pooled"): {"Fittable", "Recommender"},
    ("sasrec", "pooled"): {"HasParameterGroups", "HasSetup", "Recommender", "Trainable", "TwoTower"},
    ("textknn", "pooled"): {"Fittable", "ReadsText", "Recommender", "ScoresText", "TwoTower"},
    ("bitgcf", "single"): SINGLE,
    ("cmf", "single"): SINGLE,
    ("conet", "single"): SINGLE,
    ("crossrec", "single"): SINGLE | {"RatingPredictor"},
    ("dtcdr", "single"): SINGLE,
    ("emcdr", "single"): SINGLE,
    ("ials", "single"): SINGLE,
    ("itemknn", "single"): SINGLE,
    ("lightgcn", "single"): SINGLE,
    ("mf", "single"): SINGLE | {"RatingPredictor"},
    ("neumf", "single"): SINGLE,
    ("pop", "single"): SINGLE,
    ("sasrec", "single"): SINGLE,
    ("textknn", "single"): SINGLE,
}


def _protocols() -> dict[str, type]:
    """Every runtime-checkable protocol models/base.py declares, by name."""
    import inspect

    from crossrec.models import base

    return {
        n: o
        for n, o in vars(base).items()
        if inspect.isclass(o) and getattr(o, "_is_runtime_protocol", False) and o.__module__ == base.__name__
    }


def test_the_capability_table_covers_every_model_and_mode():
    assert {(n.split("[")[0], mode) for n, mode in CAPABILITIES} == {
        (n, mode) for n in NAMES for mode in ("pooled", "single")
    }
    named = set().union(*CAPABILITIES.values(), FLAGSHIP_SERVING)
    assert named <= set(_protocols()), "the table names a protocol models/base.py does not declare"


@pytest.mark.parametrize(("name", "mode"), sorted(CAPABILITIES))
def test_declared_capabilities(name, mode, tiny_bundle):
    """Each model satisfies exactly the protocols of its row (built, not trained: declarations
    do not depend on the data)."""
    text = name.endswith("[text+id]")
    model = build(
        name.split("[")[0], mode, TEXT_VARIANT if text else SMALL.get(name, {}), Sizes.from_bundle(tiny_bundle)
    )
    got = {n for n, proto in _protocols().items() if isinstance(model, proto)}
    assert got == CAPABILITIES[(name, mode)], (
        f"{name} ({mode}): gained {sorted(got - CAPABILITIES[(name, mode)])}, "
        f"lost {sorted(CAPABILITIES[(name, mode)] - got)}"
    )


@pytest.mark.parametrize("tower", ["id", "text+id"])
def test_the_flagships_serving_adapter_declares_what_the_service_asks(tower, tiny_bundle):
    """The service dispatches on `serving_view(model)`: the flagship's adapter adds the serving
    capabilities, and only the text flagship's scores items known by their text alone."""
    from crossrec.serving.flagship import serving_view

    params = TEXT_VARIANT if tower == "text+id" else SMALL.get("crossrec", {})
    view = serving_view(build("crossrec", "pooled", params, Sizes.from_bundle(tiny_bundle)))
    got = {n for n, proto in _protocols().items() if isinstance(view, proto)}
    assert got == FLAGSHIP_SERVING | ({"EmbedsText", "ScoresText"} if tower == "text+id" else set())
    others = [build(n, "pooled", SMALL.get(n, {}), Sizes.from_bundle(tiny_bundle)) for n in ("mf", "textknn")]
    assert all(serving_view(m) is m for m in others)  # every other model answers for itself


def test_a_per_category_wrapper_forwards_ratings_only_when_every_sub_model_predicts_them(tiny_bundle):
    from crossrec.models.base import RatingPredictor, ReadsText, reads_text
    from crossrec.models.per_category import PerCategory, PerCategoryRatings

    sizes = Sizes.from_bundle(tiny_bundle)
    mf, knn, text = (build(n, "single", SMALL.get(n, {}), sizes) for n in ("mf", "itemknn", "textknn"))
    assert type(mf) is PerCategoryRatings and isinstance(mf, (PerCategory, RatingPredictor))
    assert type(knn) is PerCategory and not isinstance(knn, RatingPredictor)
    mixed = PerCategory([mf.models[0], *knn.models[1:]], sizes.item_category)
    assert type(mixed) is PerCategory and not hasattr(mixed, "predict_rating")  # the claim under test
    assert isinstance(text, ReadsText) and reads_text(text) and not reads_text(mf)
