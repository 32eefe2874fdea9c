"""The Results step's plain words: shares as people say them."""

from __future__ import annotations

from transfer_gui.app.plain import in_words


def test_shares_are_said_as_n_in_m():
    assert [in_words(x) for x in (0.75, 0.86, 0.5, 0.62, 0.33, 0.42, 0.97, 0.02)] == [
        "3 in 4", "9 in 10", "1 in 2", "3 in 5", "1 in 3", "2 in 5", "almost all", "almost none"]
