"""The prepared dataset: integer ids, splits, per-category item sets and CSR matrices.

On disk a Bundle is a directory:

    manifest.json          schema version, categories, counts, settings, source checksums
    interactions.parquet   user, item, category, [rating], order, split, new_to_category, cold_item
    items.parquet          item, raw_item, category, [title], [description], ...
    users.parquet          user, raw_user
    image_vectors.safetensors   optional: `vectors` [n_items, d] float32 and `present` [n_items] bool

Items are numbered so that each category's items are one contiguous block, but code never relies
on that: it asks for `item_index(c)` (global ids of category c's items, in the category's local
order) and `item_local` (global id -> position within its category).

`split` is an int8 code: 0 = train, 1 = valid, 2 = test. `new_to_category` is true on valid/test
rows whose user has no training interaction in that row's category (but has some elsewhere);
`cold_item` is true on rows whose item has no training interaction at all.

Example:
    >>> b = Bundle.load("runs/demo/bundle")               # doctest: +SKIP
    >>> b.categories, b.n_users, b.n_items_in(0)          # doctest: +SKIP
    (['books', 'music', 'garden'], 3000, 1200)
    >>> b.csr("train", 0).shape                           # [n_users, n_items(0)]  # doctest: +SKIP
    (3000, 1200)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import scipy.sparse as sp

from crossrec.data.bundle_files import IMAGE_FILE, check_fingerprint, read_image_vectors, read_parquet
from crossrec.data.schema import SCHEMA_VERSION, DataError
from crossrec.errors import UnknownNameError
from crossrec.integrity import verify_checksums, write_checksums
from crossrec.io import CorruptFileError, atomic_dir, check_output, read_json, write_marker

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}


def split_code(split: str) -> int:
    """Map a split name to its int8 code, raising on an unknown name."""
    try:
        return SPLIT_CODES[split]
    except KeyError:
        raise UnknownNameError(f"unknown split {split!r}; expected one of {list(SPLIT_CODES)}") from None


@dataclass(eq=False)
class Bundle:
    """A prepared multi-category dataset (see the module docstring for the layout)."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    manifest: dict[str, Any]
    root: Path | None = None
    image_vectors: np.ndarray | None = None  # [n_items, d] float32, rows in item-id order; zeros where absent
    image_present: np.ndarray | None = None  # [n_items] bool: the source had a vector for this item
    text_vectors: np.ndarray | None = (
        None  # [n_items, d] float32 item-text vectors (in memory: encoders/text.py attaches them)
    )
    _csr_cache: dict[tuple[Any, ...], sp.csr_matrix] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ sizes and id maps
    @property
    def categories(self) -> list[str]:
        return list(self.manifest["categories"])

    @property
    def n_categories(self) -> int:
        return len(self.manifest["categories"])

    @property
    def n_users(self) -> int:
        return self.users.height

    @property
    def n_items(self) -> int:
        return self.items.height

    @property
    def has_ratings(self) -> bool:
        return "rating" in self.interactions.columns

    def category_id(self, category: int | str) -> int:
        """Category index from an index or a name."""
        if isinstance(category, str):
            try:
                return self.categories.index(category)
            except ValueError:
                raise UnknownNameError(f"unknown category {category!r}; have {self.categories}") from None
        if not 0 <= int(category) < self.n_categories:
            raise UnknownNameError(f"category index {category} out of range 0..{self.n_categories - 1}")
        return int(category)

    @cached_property
    def item_category(self) -> np.ndarray:
        """[n_items] category index of every item."""
        return self.items["category"].to_numpy().astype(np.int64)

    @cached_property
    def _item_order(self) -> tuple[np.ndarray, np.ndarray]:
        # Stable sort by category gives each category's items in increasing global id.
        order = np.argsort(self.item_category, kind="stable")
        counts = np.bincount(self.item_category, minlength=self.n_categories)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return order, offsets

    def items_by_category(self) -> tuple[np.ndarray, np.ndarray]:
        """(all global item ids ordered category by category [n_items], offsets [n_categories + 1])."""
        return self._item_order

    def item_index(self, category: int | str) -> np.ndarray:
        """Global item ids of one category, in that category's local order."""
        c = self.category_id(category)
        order, offsets = self._item_order
        return order[offsets[c] : offsets[c + 1]]

    def n_items_in(self, category: int | str) -> int:
        c = self.category_id(category)
        _, offsets = self._item_order
        return int(offsets[c + 1] - offsets[c])

    @cached_property
    def category_sizes(self) -> np.ndarray:
        """[n_categories] number of items per category."""
        return np.diff(self._item_order[1])

    @cached_property
    def item_local(self) -> np.ndarray:
        """[n_items] position of each item within its own category."""
        order, offsets = self._item_order
        local = np.empty(self.n_items, dtype=np.int64)
        local[order] = np.arange(self.n_items) - np.repeat(offsets[:-1], self.category_sizes)
        return local

    def raw_item_ids(self) -> np.ndarray:
        return self.items["raw_item"].to_numpy()

    def raw_user_ids(self) -> np.ndarray:
        return self.users["raw_user"].to_numpy()

    @cached_property
    def _user_lookup(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.users["raw_user"].to_list())}

    @property
    def pseudonymised(self) -> bool:
        """User ids are keyed hashes (`prepare.pseudonymise`, data/pseudonym.py)."""
        return "pseudonymised" in self.manifest

    @cached_property
    def pseudonym_key(self) -> bytes | None:
        """The key of a pseudonymised Bundle, from $CROSSREC_PSEUDONYM_KEY and checked against the
        manifest (None: not pseudonymised); PseudonymKeyError when it is missing or not this Bundle's."""
        if not self.pseudonymised:
            return None
        from crossrec.data.pseudonym import checked_key

        return checked_key(self.manifest["pseudonymised"])

    def user_key(self, raw: str) -> str:
        """The id this Bundle stores for a raw user id: the raw id itself, or, in a pseudonymised
        Bundle, its pseudonym under `pseudonym_key` (a pseudonym given as such is kept)."""
        raw = str(raw)
        key = self.pseudonym_key
        if key is None:
            return raw
        from crossrec.data.pseudonym import pseudonym

        hashed = pseudonym(raw, key)
        return raw if hashed not in self._user_lookup and raw in self._user_lookup else hashed

    def user_id(self, raw: str) -> int:
        """Internal user index for a raw user id (as it appeared in the source; see `user_key`)."""
        try:
            return self._user_lookup[self.user_key(raw)]
        except KeyError:
            raise UnknownNameError(f"unknown user {raw!r}") from None

    def item_titles(self) -> list[str]:
        """[n_items] titles (empty string where the source had none)."""
        if "title" not in self.items.columns:
            return [""] * self.n_items
        return self.items["title"].fill_null("").to_list()

    # ------------------------------------------------------------------ interactions
    def split(self, split: str | tuple[str, ...], category: int | str | None = None) -> pl.DataFrame:
        """Interaction rows of one split (or several), optionally of one category."""
        names = (split,) if isinstance(split, str) else split
        codes = [split_code(s) for s in names]
        expr = pl.col("split").is_in(codes)
        if category is not None:
            expr = expr & (pl.col("category") == self.category_id(category))
        return self.interactions.filter(expr)

    def rows(self, split: str | tuple[str, ...], categories: Sequence[int] | None = None) -> pl.DataFrame:
        """Interaction rows of a split (or several) in some categories (None = all of them)."""
        rows = self.split(split)
        if categories is None:
            return rows
        return rows.filter(pl.col("category").is_in([int(c) for c in categories]))

    def csr(self, split: str | tuple[str, ...] = "train", category: int | str | None = None) -> sp.csr_matrix:
        """Binary user x item matrix of a split (cached).

        With `category`, columns are that category's local item positions: [n_users, n_items(c)].
        Without, columns are global item ids: [n_users, n_items].
        """
        names = (split,) if isinstance(split, str) else tuple(split)
        c = None if category is None else self.category_id(category)
        key = (names, c)
        if key not in self._csr_cache:
            rows = self.split(names, c)
            users = rows["user"].to_numpy().astype(np.int64)
            items = rows["item"].to_numpy().astype(np.int64)
            if c is None:
                cols, n_cols = items, self.n_items
            else:
                cols, n_cols = self.item_local[items], self.n_items_in(c)
            mat = sp.csr_matrix(
                (np.ones(len(users), dtype=np.float32), (users, cols)),
                shape=(self.n_users, n_cols),
            )
            mat.sum_duplicates()
            mat.data[:] = 1.0
            self._csr_cache[key] = mat
        return self._csr_cache[key]

    # ------------------------------------------------------------------ provenance
    def fingerprint(self) -> dict[str, str]:
        """What identifies this prepared data: hashes of its id maps, its interactions (with the
        split), its prepare settings and its source files, and `bundle`, a hash of all four.

        An artifact records the fingerprint of the Bundle it was trained on; evaluate / recommend
        refuse a Bundle whose fingerprint differs (`check_same_bundle`).
        """
        from crossrec.data.fingerprint import fingerprint

        return fingerprint(self.interactions, self.items, self.users, self.manifest)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, root: str | Path) -> Bundle:
        """Read a Bundle directory written by `save` (or by `prepare`).

        Raises:
            DataError: not a Bundle directory, or another schema version.
            FileNotFoundError: a file of the Bundle is missing.
            CorruptFileError: a file differs from the SHA-256 recorded in checksums.json (or that
                file is damaged), or its content differs from the manifest's fingerprint (edited after
                prepare). A Bundle written before checksums.json existed is checked by its
                fingerprint only.
        """
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not root.is_dir():
            raise DataError(
                root,
                None,
                None,
                "a prepared bundle directory (crossrec prepare writes one)",
                "a file" if root.exists() else "no such directory",
            )
        if not manifest_path.is_file():
            raise DataError(root, None, None, "a prepared bundle directory with manifest.json")
        verify_checksums(root, "bundle", required=False, remedy="prepare it again")
        manifest = read_json(manifest_path, "bundle manifest")
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            got = manifest.get("schema_version") if isinstance(manifest, dict) else manifest
            raise DataError(manifest_path, None, "schema_version", f"schema version {SCHEMA_VERSION}", repr(got))
        missing = [k for k in ("categories", "n_items", "n_users") if k not in manifest]
        if missing:
            raise CorruptFileError(f"{manifest_path}: expected a bundle manifest with {missing}")
        vectors, present = read_image_vectors(root, manifest)
        bundle = cls(
            interactions=read_parquet(root / "interactions.parquet", INTERACTION_COLUMNS),
            items=read_parquet(root / "items.parquet", ("item", "raw_item", "category")),
            users=read_parquet(root / "users.parquet", ("user", "raw_user")),
            manifest=manifest,
            root=root,
            image_vectors=vectors,
            image_present=present,
        )
        bundle._check_consistent()
        check_fingerprint(bundle.fingerprint, root, manifest)
        return bundle

    def _check_consistent(self) -> None:
        """The tables agree with the manifest and with each other (ids in range, sizes)."""
        where = self.root if self.root is not None else "<bundle>"
        if self.users.height != self.manifest["n_users"] or self.items.height != self.manifest["n_items"]:
            raise CorruptFileError(
                f"{where}: users.parquet / items.parquet have {self.users.height} users, {self.items.height} "
                f"items; manifest.json says {self.manifest['n_users']}, {self.manifest['n_items']}"
            )
        checks = (
            (self.interactions["user"], self.n_users, "interactions.parquet", "user"),
            (self.interactions["item"], self.n_items, "interactions.parquet", "item"),
            (self.interactions["category"], self.n_categories, "interactions.parquet", "category"),
            (self.items["category"], self.n_categories, "items.parquet", "category"),
            (self.interactions["split"], len(SPLIT_CODES), "interactions.parquet", "split"),
        )
        for col, n, file, name in checks:
            if not col.len():
                continue
            lo, hi = cast(int, col.min()), cast(int, col.max())  # integer id columns (None only if all null)
            if col.null_count() or lo < 0 or hi >= n:
                raise CorruptFileError(f"{where}/{file}: column {name!r} has values outside 0..{n - 1}")

    def save(self, root: str | Path, what: str = "bundle directory") -> Path:
        """Write atomically: into a temporary sibling directory, then rename into place.

        `root` must be missing, empty, or a Bundle directory (see `crossrec.io.check_output`):
        anything else raises `OutputError` and is left untouched. `what` names the setting that
        gave the path, for that message.
        """
        root = Path(root)
        check_output(root, "bundle", what)
        self.manifest["fingerprint"] = self.fingerprint()
        with atomic_dir(root) as tmp:
            self.interactions.write_parquet(tmp / "interactions.parquet")
            self.items.write_parquet(tmp / "items.parquet")
            self.users.write_parquet(tmp / "users.parquet")
            (tmp / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")
            if self.image_vectors is not None:
                from safetensors.numpy import save_file

                present = np.ones(self.n_items, bool) if self.image_present is None else self.image_present
                arrays: dict[str, np.ndarray] = {
                    "vectors": np.ascontiguousarray(self.image_vectors, dtype=np.float32),
                    "present": present.astype(np.uint8),
                }
                save_file(arrays, str(tmp / IMAGE_FILE))
            # last: the SHA-256 of every file above, verified by `load` before it parses them
            write_checksums(tmp, sorted(p.name for p in tmp.iterdir() if p.is_file()))
            write_marker(tmp, "bundle")
        self.root = root
        return root


INTERACTION_COLUMNS = ("user", "item", "category", "split")
