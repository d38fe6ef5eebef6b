"""`ampsim race`'s recipes: each candidate over the device's own entry, on the race's time budget. The race
itself runs as DVC experiments in tests/test_dvc_pipeline.py."""

from __future__ import annotations

import pytest

from ampsim.core.errors import AmpsimError
from ampsim.deployment.race import UNLIMITED_STEPS, race_recipe


def test_a_candidate_lies_over_the_devices_own_recipe_section_by_section():
    own = {"train": {"random_seed": 7, "max_steps": 300}, "lstm": {"hidden_size": 24}, "fit": {"learning_rate": 0.005}}
    recipe = race_recipe(own, {"lstm": {"hidden_size": 32}, "wavenet": {"layers": "lite"}}, 5)
    assert recipe == {"train": {"random_seed": 7, "max_steps": UNLIMITED_STEPS, "max_minutes": 5.0},
                      "lstm": {"hidden_size": 32}, "fit": {"learning_rate": 0.005}, "wavenet": {"layers": "lite"}}
    assert own["train"]["max_steps"] == 300 and own["lstm"]["hidden_size"] == 24  # the entry itself is untouched
    assert race_recipe(None, {}, 2.5) == {"train": {"max_minutes": 2.5, "max_steps": UNLIMITED_STEPS}}


@pytest.mark.parametrize("candidate", [{"render": {"workers": 1}}, {"lstm": 32}])
def test_a_candidate_that_sets_anything_but_a_recipe_is_refused(candidate):
    with pytest.raises(AmpsimError) as caught:
        race_recipe({}, candidate, 5)
    assert "a recipe sets only train, fit, lstm2018, lstm, wavenet" in caught.value.message
    assert "race.candidates" in caught.value.fix
