"""The service: what a shop asks a trained model, live, in raw ids. Framework-free (serving/api.py
puts HTTP in front of it).

    recommend(user, category, k, exclude_seen)   top-k items of a category, each with why
    similar(item, k, category)                   items nearest to an item in the model's space
    explain(user, item)                          the user's history items behind one score
    add_item(item, category, title, ...)         a new item, live at once from its text
    feedback(user, item, event, timestamp)       an event, durable when the call returns

**Scoring.** A two-tower model's items sit in one FAISS index per category (serving/index.py), the
item bias folded in, so an exact index returns `score`'s top-k. The flagship folds its content term
in too (`index_item_columns` / `index_user_columns`), and its sparse neighbourhood term is non-zero
only on the neighbours of the user's history (`sparse_candidates`): those are re-scored exactly
(`score_items`) with the index's top items outside them, so its top-k is exact as well. Other
models with user-item terms re-rank a pool of `serve.rerank_pool` index candidates; models without
vectors (popularity, ItemKNN) are scored in full. Items added while serving are scored from their
text (`score_text_items`) and merged in. `recommend_many` ranks the known users of one category in
one batched search and re-rank (the HTTP API micro-batches concurrent requests into it).

**Users the model has not seen.** A user id that is not in the training data is served from their
feedback (the items they touched, oldest first): through the model's own history path where it has
one (the flagship's `score_history`), else by the mean of those items' vectors; a user with no
feedback gets the category's most popular items. Every answer says which path served it (`source`).

**Explanations.** Each recommended item names up to `serve.explain_top` of the user's history
items, from any category, with the largest contribution to its score: the flagship's own terms
(`contributions`), or for other two-tower models the cosine of item vectors (serving/explain.py).

**Writes** (serving/live.py, mixed in): items added and feedback, through the store when there is
one, which also carries them between server processes (`serve.workers`).

Errors are `ServingError`s that name the request field and carry an HTTP status (404 for an unknown
user, item or category; 409 for what the served model cannot do; 422 for a bad value; 503, field
`model`, when the model's scores for a request are not finite: NaN or infinite weights rank nothing,
so no list is answered from them).
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from crossrec.artifact import Artifact, check_bundle
from crossrec.data.bundle import Bundle
from crossrec.encoders.config import EncoderConfig
from crossrec.models.base import (
    Decomposed,
    Explains,
    IndexColumns,
    ReadsImages,
    ScoresCandidates,
    ScoresHistory,
    ScoresText,
    SparseCandidates,
    TwoTower,
)
from crossrec.serving.config import ServeConfig
from crossrec.serving.errors import ServingError
from crossrec.serving.explain import Explanations
from crossrec.serving.flagship import serving_view
from crossrec.serving.index import ItemIndex
from crossrec.serving.live import LiveWrites
from crossrec.serving.store import Store


class Service(Explanations, LiveWrites):
    """A loaded artifact and its Bundle, answering in raw ids (see the module docstring)."""

    def __init__(
        self,
        artifact: Artifact,
        bundle: Bundle,
        cfg: ServeConfig = ServeConfig(),
        store: Store | None = None,
        encoder: EncoderConfig | None = None,
    ) -> None:
        check_bundle(artifact, bundle)
        self.cfg, self.store, self.encoder = cfg, store, encoder or EncoderConfig()
        # Any: what the service calls is gated by the model's declared capabilities (models/base.py's
        # protocols, checked at runtime into flags such as two_tower), which mypy cannot follow.
        self.model: Any = cast(Any, artifact.model.eval())
        # what the capabilities beyond `score` are asked of: the flagship's adapter (serving/flagship.py)
        self.view: Any = serving_view(self.model)
        self.name = str(artifact.name)
        self.version = str(artifact.meta.get("tensors_sha256", ""))[:12]
        self.categories = list(bundle.categories)
        self._cat = {name: i for i, name in enumerate(self.categories)}
        self._users = {str(u): i for i, u in enumerate(bundle.raw_user_ids())}
        # raw id -> the stored id (a pseudonym in a pseudonymised Bundle: the store never sees raw ids)
        self._key = bundle.user_key
        bundle.pseudonym_key  # noqa: B018 -- a missing or wrong key fails here, at start, not on a request
        self._raw_items = [str(i) for i in bundle.raw_item_ids()]
        self._items = {raw: i for i, raw in enumerate(self._raw_items)}
        self._titles = list(bundle.item_titles())
        self._item_cat = [int(c) for c in bundle.item_category]
        self._index_of = [torch.from_numpy(bundle.item_index(c)) for c in range(len(self.categories))]
        self._seen = bundle.csr(("train", "valid", "test"))  # [n_users, n_items] everything the data says they touched
        counts = np.bincount(bundle.interactions["item"].to_numpy().astype(np.int64), minlength=bundle.n_items)
        self._popular = [
            self._index_of[c][np.argsort(-counts[self._index_of[c].numpy()], kind="stable")]
            for c in range(len(self.categories))
        ]
        self._pad = bundle.n_items
        m = self.model
        self.two_tower = isinstance(m, TwoTower)
        self.rerank = isinstance(m, Decomposed)
        self.reads_text = isinstance(self.view, ScoresText)
        self._lock = threading.Lock()
        self._feedback: dict[str, list[int]] = defaultdict(list)  # raw user -> item ids, oldest first
        self._new: dict[int, list[int]] = defaultdict(list)  # category -> ids of items added while serving
        self._new_text: dict[int, torch.Tensor] = {}  # item id -> its text vector
        self._new_image: dict[int, torch.Tensor] = {}  # item id -> its image vector (models that read images)
        self.image_dim = m.image_dim if isinstance(m, ReadsImages) else None
        self._text_model: Any = None
        self._finite_index: dict[int, bool] = {}  # category -> its index vectors are all finite
        with torch.no_grad():
            self._indexes = [self._build_index(c) for c in range(len(self.categories))] if self._indexable else []
            self._vectors = self._all_vectors() if self.two_tower else None
            self._centers = (
                [self.model.item_vectors(c).mean(0) for c in range(len(self.categories))]
                if isinstance(self.view, Explains)
                else []
            )
        self._sync_lock = threading.Lock()
        self._applied = (0, 0)  # the store's last item row and feedback id applied here
        self.sync(at_start=True)

    @property
    def _indexable(self) -> bool:
        return self.two_tower and (not self.rerank or isinstance(self.view, ScoresCandidates))

    def _query(self, users: torch.Tensor, c: int) -> np.ndarray:
        u = self.model.user_vectors(users, c)
        if isinstance(self.view, IndexColumns):
            u = torch.cat([u, self.view.index_user_columns(users, c)], 1)
        return u.detach().float().cpu().numpy()

    def _build_index(self, c: int) -> ItemIndex:
        v = self.model.item_vectors(c)
        if isinstance(self.view, IndexColumns):
            v = torch.cat([v, self.view.index_item_columns(c)], 1)
        v = v.float().cpu().numpy()
        self._finite_index[c] = bool(np.isfinite(v).all())  # FAISS silently drops NaN scores: say so instead
        return ItemIndex(v, self._index_of[c].numpy(), self.cfg.index, self.cfg.hnsw_above)

    def _all_vectors(self) -> torch.Tensor:
        """[n_items, d] L2-normalised item vectors of every category (similar items, explanations)."""
        out = torch.zeros(self._pad, 0)
        for c, idx in enumerate(self._index_of):
            v = F.normalize(self.model.item_vectors(c).float().cpu(), dim=1)
            if out.shape[1] == 0:
                out = torch.zeros(self._pad, v.shape[1])
            out[idx] = v
        return out

    # ------------------------------------------------------------------ lookups
    def _category(self, name: str | None, field: str = "category") -> int:
        if name not in self._cat:
            raise ServingError(f"unknown category {name!r}; known: {', '.join(self.categories)}", field, 404)
        return self._cat[name]

    def _item(self, raw: str, field: str = "item") -> int:
        if raw not in self._items:
            raise ServingError(f"unknown item {raw!r}", field, 404)
        return self._items[raw]

    def _k(self, k: int) -> int:
        if not 1 <= int(k) <= self.cfg.max_k:
            raise ServingError(f"k={k}; expected 1..{self.cfg.max_k}", "k")
        return int(k)

    def _not_finite(self) -> ServingError:
        return ServingError(
            f"the served model ({self.name}, version {self.version}) gives non-finite scores (NaN or "
            "infinity) for this request, so it cannot rank; train again or reload a sound version",
            "model",
            503,
        )

    @staticmethod
    def _text(value: str, field: str) -> str:
        """`value` if it is text that can be stored (no lone surrogates), else a 422 naming `field`."""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ServingError(f"{field} holds a lone surrogate (not text)", field) from None
        return value

    def _describe(self, i: int) -> dict[str, Any]:
        return {"item": self._raw_items[i], "title": self._titles[i], "category": self.categories[self._item_cat[i]]}

    # ------------------------------------------------------------------ scoring
    def _seen_ids(self, u: int) -> np.ndarray:  # the items the data says user u touched (a CSR row, cheaply)
        return self._seen.indices[self._seen.indptr[u] : self._seen.indptr[u + 1]]

    def _ranked_many(self, users: list[int], c: int, want: int) -> list[list[tuple[int, float]] | None]:
        """For each known user, (item id, score) of the best `want` items of category c, best
        first: one batched index search and one batched re-rank for all of them. None for a user
        whose scores are not all finite (a NaN weight: FAISS would drop those items silently)."""
        us = torch.tensor(users, dtype=torch.int64)
        bad = np.zeros(len(users), dtype=bool)
        if self._indexable:
            query = self._query(us, c)
            bad |= ~np.isfinite(query).all(1) | (not self._finite_index.get(c, True))
            has_sparse = isinstance(self.view, SparseCandidates)
            sparse = [self.view.sparse_candidates(us[j : j + 1], c) for j in range(len(users))] if has_sparse else []
            if has_sparse and all(s is not None for s in sparse):
                # exact: the index ranks every item outside a user's sparse candidates by its full score
                extra = [s.numpy() for s in sparse]
                _, ids = self._indexes[c].search(query, want + max(len(e) for e in extra))
                rows = []
                for e, r in zip(extra, ids):
                    r = r[r >= 0]
                    rows.append(np.concatenate([e, r[~np.isin(r, e)][:want]]))
                vals: list[np.ndarray] = []
            else:  # a pool from the index, re-ranked (exact when the index holds every term)
                pool = max(want, self.cfg.rerank_pool) if self.rerank else want
                scores, ids = self._indexes[c].search(query, pool)
                rows = [r[r >= 0] for r in ids]
                vals = [s[r >= 0] for s, r in zip(scores, ids)]
            if self.rerank:
                vals = self._rescore(us, c, rows)
            out = [list(zip(r.tolist(), v.tolist())) for r, v in zip(rows, vals)]
        else:
            s = self.model.score(us, c).float()
            top = torch.topk(s, min(want, s.shape[1]), dim=1)
            top_ids = self._index_of[c][top.indices]
            out = [list(zip(i.tolist(), v.tolist())) for i, v in zip(top_ids, top.values)]
        new = self._new.get(c)
        if new and self.reads_text:
            text, image = self._new_content(new)
            for pairs, s in zip(out, self.view.score_text_items(us, c, text, image).tolist()):
                pairs += list(zip(new, s))
        for pairs in out:
            pairs.sort(key=lambda p: (-p[1], p[0]))
            del pairs[want:]
        return [
            None if b or not all(math.isfinite(s) for _, s in pairs) else pairs for b, pairs in zip(bad.tolist(), out)
        ]

    def _rescore(self, us: torch.Tensor, c: int, rows: list[np.ndarray]) -> list[np.ndarray]:
        """Exact scores of each user's candidate row (rows padded to one width for one call)."""
        if max(len(r) for r in rows) == 0:
            return [np.zeros(0, np.float32) for _ in rows]
        mat = np.full((len(rows), max(len(r) for r in rows)), next(r[0] for r in rows if len(r)), dtype=np.int64)
        for j, r in enumerate(rows):
            mat[j, : len(r)] = r
        s = self.view.score_items(us, c, torch.from_numpy(mat)).float().numpy()
        return [s[j, : len(r)] for j, r in enumerate(rows)]

    def _from_history(self, user: str, c: int, want: int) -> tuple[list[tuple[int, float]] | None, str]:
        """A user the model has not seen: their feedback items through the model, else popularity."""
        items = [i for i in self._feedback.get(user, []) if i < self._pad]  # items the model was trained with
        if items and isinstance(self.view, ScoresHistory):
            length = self.view.history_.shape[1]
            hist = torch.full((1, length), self._pad, dtype=torch.int64)
            recent = torch.tensor(items[-length:])
            hist[0, length - len(recent) :] = recent
            s = self.view.score_history(hist, c)[0].float()
            if not torch.isfinite(s).all():
                return None, "feedback history"
            top = torch.topk(s, min(want, len(s)))
            return list(zip(self._index_of[c][top.indices].tolist(), top.values.tolist())), "feedback history"
        if items and self._vectors is not None:
            q = F.normalize(self._vectors[torch.tensor(items)].mean(0), dim=0)
            s = self._vectors[self._index_of[c]] @ q
            if not torch.isfinite(s).all():
                return None, "feedback items"
            top = torch.topk(s, min(want, len(s)))
            return list(zip(self._index_of[c][top.indices].tolist(), top.values.tolist())), "feedback items"
        ids = self._popular[c][:want].tolist()
        return [(i, 0.0) for i in ids], "popularity"

    # ------------------------------------------------------------------ requests
    def recommend(self, user: str, category: str, k: int = 10, exclude_seen: bool = True) -> dict[str, Any]:
        """Top-k items of `category` for `user`, each with its score and explanation."""
        out = self.recommend_many([(user, category, k, exclude_seen)])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def recommend_many(self, requests: list[tuple[str, str, int, bool]]) -> list[dict[str, Any] | ServingError]:
        """`recommend` for many (user, category, k, exclude_seen) requests at once: the known users
        of each category are ranked by one batched search (serving/batcher.py feeds this). A bad
        request gets its `ServingError` in its slot; the others are answered."""
        out: list[Any] = [None] * len(requests)
        plan: list[tuple[int, str, int | None, int, int, bool, set[int], int]] = []
        for j, (user, category, k, exclude_seen) in enumerate(requests):
            try:
                c, k = self._category(category), self._k(k)
            except ServingError as e:
                out[j] = e
                continue
            key = self._key(user)
            u = self._users.get(key)
            seen = set(self._feedback.get(key, []))
            if u is not None and exclude_seen:
                seen |= set(self._seen_ids(u).tolist())
            plan.append((j, key, u, c, k, bool(exclude_seen), seen, k + (len(seen) if exclude_seen else 0)))
        with torch.no_grad():
            ranked: dict[int, tuple[list[tuple[int, float]] | None, str]] = {}
            groups: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
            for j, user, u, c, _, _, _, want in plan:
                if u is None:
                    ranked[j] = self._from_history(user, c, want)
                else:
                    groups[c].append((j, u, want))
            for c, members in groups.items():
                lists = self._ranked_many([u for _, u, _ in members], c, max(w for _, _, w in members))
                ranked.update(
                    {
                        j: (None if pairs is None else pairs[:want], "model")
                        for (j, _, want), pairs in zip(members, lists)
                    }
                )
            for j, user, u, c, k, exclude_seen, seen, _ in plan:
                best = ranked[j][0]
                if best is None:
                    out[j] = self._not_finite()
                    continue
                pairs = [(i, s) for i, s in best if not (exclude_seen and i in seen)][:k]
                because = self._because(u, user, [i for i, _ in pairs])
                items = [
                    self._describe(i) | {"score": float(s), "because": b} | self._like(i)
                    for (i, s), b in zip(pairs, because)
                ]
                out[j] = {
                    "user": str(requests[j][0]),
                    "category": self.categories[c],
                    "source": ranked[j][1],
                    "model_version": self.version,
                    "items": items,
                }
        return out

    def similar(self, item: str, k: int = 10, category: str | None = None) -> dict[str, Any]:
        """The k items nearest to `item` (cosine of the model's item vectors) in `category`
        (default: the item's own), the item itself left out."""
        i, k = self._item(item), self._k(k)
        c = self._item_cat[i] if category is None else self._category(category)
        if self._vectors is None:
            raise ServingError("the served model has no item vectors (it is not a two-tower model)", "item", 409)
        with torch.no_grad():
            q = self._vector(i)
            cand = self._index_of[c]
            s = self._vectors[cand] @ q
            ids, scores = cand.tolist(), s.tolist()
            for j in self._new.get(c, []):
                ids.append(j)
                scores.append(float(self._vector(j) @ q))
        if not all(math.isfinite(x) for x in scores):
            raise self._not_finite()
        order = sorted((p for p in zip(ids, scores) if p[0] != i), key=lambda p: (-p[1], p[0]))[:k]
        return {
            "item": item,
            "category": self.categories[c],
            "items": [self._describe(j) | {"score": s} for j, s in order],
        }

    def explain(self, user: str, item: str) -> dict[str, Any]:
        """The user's history items behind the user's score for `item` (serving/explain.py); 503
        when the model's vectors for that user or item are not finite."""
        i = self._item(item)
        u = self._users.get(self._key(user))
        with torch.no_grad():
            parts = [self._vector(i)] if self._vectors is not None else []
            if u is not None and self.two_tower:
                parts.append(self.model.user_vectors(torch.tensor([u]), self._item_cat[i]).float())
            if not all(bool(torch.isfinite(p).all()) for p in parts):
                raise self._not_finite()
        return super().explain(user, item)

    def history(self, user: str, limit: int = 50) -> dict[str, Any]:
        """The user's items (the data's and their feedback), grouped by category, at most `limit` each."""
        key = self._key(user)
        u = self._users.get(key)
        if u is None and key not in self._feedback:
            raise ServingError(f"unknown user {user!r} (no training data and no feedback)", "user", 404)
        ids = (self._seen_ids(u).tolist() if u is not None else []) + self._feedback.get(key, [])
        groups: dict[str, list[dict[str, Any]]] = {name: [] for name in self.categories}
        for i in dict.fromkeys(ids):  # distinct, first occurrence order
            group = groups[self.categories[self._item_cat[i]]]
            if len(group) < limit:
                group.append(self._describe(i))
        return {"user": str(user), "known": u is not None, "categories": {k: v for k, v in groups.items() if v}}


__all__ = ["Service", "ServingError"]
