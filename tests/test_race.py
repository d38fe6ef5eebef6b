"""`ampsim race`'s recipes: each candidate over the device's own entry, on the race's time budget. The race
itself runs as DVC experiments in tests/test_dvc_pipeline.py."""

from __future__ import annotations

import pytest
from conftest import PROJECT

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


@pytest.mark.parametrize("name, seed", [("seed-3", 3), ("seed-7", 7), ("seed-11", 11)])
def test_a_seed_candidate_races_the_devices_own_recipe_from_another_start(name, seed):
    """race.candidates' seed-N set only the random start: over an amp with a cabinet, its race recipe still trains
    through the IR with the cabinet recipe's guards, and the device's own settings stay (session 33: four starts of
    one recipe spread 0.0205-0.0374 on the 5150 at 15 minutes)."""
    from ampsim.core.params import device_params, load_params

    params = load_params(PROJECT / "params.yaml")
    assert params["race"]["candidates"][name] == {"train": {"random_seed": seed}}
    assert params["train"]["random_seed"] != seed  # another start than the default's
    params["recipes"]["amp"] = race_recipe({"lstm": {"hidden_size": 20}}, params["race"]["candidates"][name], 5)
    trained = device_params(params, "amp", cabinet=True)
    assert trained["train"]["random_seed"] == seed and trained["train"]["max_minutes"] == 5.0
    assert trained["fit"]["through_ir_taps"] == params["train"]["cabinet_recipe"]["fit"]["through_ir_taps"] > 0
    assert trained["fit"]["collapsed_loss"] == params["train"]["cabinet_recipe"]["fit"]["collapsed_loss"] > 0
    assert trained["lstm"]["hidden_size"] == 20
    assert {k: v for k, v in trained["train"].items() if k not in ("random_seed", "max_minutes", "max_steps")} == \
        {k: v for k, v in params["train"].items() if k not in ("random_seed", "max_minutes", "max_steps")}
