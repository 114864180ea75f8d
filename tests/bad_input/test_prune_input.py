"""Bad parents for `search_space=prune`: each is refused in one line, exit 2, before anything is
written (the stored study's folder stays byte for byte as it was)."""

from __future__ import annotations

import pytest

from tests.bad_input.conftest import Stored
from tests.bad_input.sweep import Case, case, check

PARENTS = [
    case(
        "search",
        expect="search_space=prune needs search_space.parent=DIR",
        id="parent-not-given",
    ),
    case(
        "search",
        "search_space.parent={bad}/no-such-parent",
        expect="{bad}/no-such-parent not found",
        id="parent-missing",
    ),
    case(
        "search",
        "search_space.parent={bad}/notext",
        expect="holds no config.json",
        id="parent-not-a-model",
    ),
    case(
        "search",
        "search_space.parent={bad}/gpt2-parent",
        expect="describes a 'gpt2' model; supported:",
        id="parent-unsupported-family",
    ),
    case(
        "search",
        "search_space.parent={bad}/no-tokenizer-parent",
        expect="has no tokenizer.json",
        id="parent-without-tokenizer",
    ),
    case(
        "search",
        "search_space.parent={bad}/small-vocab-parent",
        expect="but the parent embeds 300",
        id="parent-tokenizer-outgrows-embedding",
    ),
    case(
        "search",
        "search_space.parent={bad}/garbage-parent",
        expect="does not load with transformers",
        id="parent-weights-unreadable",
    ),
    case(
        "search",
        "search_space.parent={bad}/huge-parent",
        expect="too large for this device even fully pruned",
        id="parent-too-large-for-the-device",
    ),
]


@pytest.mark.parametrize("item", PARENTS)
def test_search_refuses_a_bad_parent(
    item: Case, stored: Stored, values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Aimed at the stored study B, in the prune space (the slm space's keys left out).
    base = [a for a in stored.base if not a.startswith("search_space.")]
    args = {**stored.study_args, "search": [*base, "search_space=prune"]}
    check(item, args, values, stored.runs, capsys)
