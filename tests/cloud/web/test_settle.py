"""``cloud.app.settle``: what ``vend-cloud`` does before its first request."""

import gc
import glob
import os

import pytest

import cloud.app
from cloud.web import pages


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


def test_settling_compiles_every_page_and_hides_the_objects_so_far_from_the_collector(unfrozen):
    env = pages.templates.env
    found = {os.path.basename(p) for d in pages.TEMPLATE_DIRS for p in glob.glob(os.path.join(d, "*.html"))}
    assert len(found) > 40
    env.cache.clear()
    cloud.app.settle()
    assert {name for _loader, name in env.cache.keys()} == found  # each compiled once, none on a first view
    assert gc.get_freeze_count() > 10_000
