"""Several services on one store (the processes of `serve.workers`): what one is told, the others
serve after `sync`; each row is applied once, the writer's own included."""

from __future__ import annotations

import pytest

from crossrec.serving.service import Service
from crossrec.serving.store import SQLiteStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pair(text_flagship, tiny_bundle, tmp_path):
    path = tmp_path / "store.sqlite"
    a = Service(text_flagship, tiny_bundle, store=SQLiteStore(path))
    b = Service(text_flagship, tiny_bundle, store=SQLiteStore(path))
    return a, b


def _title(bundle, c: int) -> str:
    return str(bundle.items.filter(bundle.items["category"] == c)["title"][0])


def test_an_item_added_through_one_is_served_by_the_other_after_sync(pair, tiny_bundle):
    a, b = pair
    name = tiny_bundle.categories[1]
    a.add_item("from-a", name, _title(tiny_bundle, 1))
    assert a.similar("from-a", 3)["items"]
    with pytest.raises(Exception, match="from-a"):
        b.similar("from-a", 3)
    assert b.sync() == 1
    assert b.similar("from-a", 3)["items"]
    assert b.sync() == 0  # applied once


def test_feedback_through_one_serves_the_user_on_the_other_once(pair, tiny_bundle, text_flagship):
    a, b = pair
    name = tiny_bundle.categories[0]
    liked = str(tiny_bundle.raw_item_ids()[int(text_flagship.model.index[1][0])])
    a.feedback("nobody", liked, "purchase", 1.0)
    assert b.recommend("nobody", name, 5)["source"] == "popularity"
    b.sync()
    assert b.recommend("nobody", name, 5)["source"] == "feedback history"
    for svc in (a, b):  # the writer applied its own event through the store: once, like the other
        assert len(svc._feedback[svc._key("nobody")]) == 1


def test_the_same_item_added_through_both_is_one_item_in_each(pair, tiny_bundle):
    a, b = pair
    name = tiny_bundle.categories[1]
    before = len(a._raw_items), len(b._raw_items)
    a.add_item("twice", name, _title(tiny_bundle, 1))
    b.add_item("twice", name, _title(tiny_bundle, 1))  # b had not synced: its write replaces a's row
    a.sync()
    b.sync()
    assert (len(a._raw_items), len(b._raw_items)) == (before[0] + 1, before[1] + 1)
    assert a.similar("twice", 3)["items"] and b.similar("twice", 3)["items"]


def test_a_restart_replays_what_both_stored(pair, tiny_bundle, text_flagship, tmp_path):
    a, b = pair
    a.add_item("one", tiny_bundle.categories[0], _title(tiny_bundle, 0))
    b.add_item("two", tiny_bundle.categories[1], _title(tiny_bundle, 1))
    again = Service(text_flagship, tiny_bundle, store=SQLiteStore(tmp_path / "store.sqlite"))
    assert again.similar("one", 3)["items"] and again.similar("two", 3)["items"]
