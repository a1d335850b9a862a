"""The port a test's server gets is one a browser will open: Chromium refuses 10080 (ERR_UNSAFE_PORT), and a
browser test failed in CI when free_port handed it out."""

import random

from tests.e2e import harness


def test_free_port_never_hands_out_a_port_the_browser_refuses(monkeypatch):
    picks = iter([10080, 10080, 10081])

    class Rigged(random.Random):
        def randrange(self, *args):
            return next(picks)

    monkeypatch.setattr(harness.random, "Random", Rigged)
    monkeypatch.setattr(harness, "_handed_out", set())
    assert harness.free_port() == 10081
