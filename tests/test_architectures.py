"""Each architecture is one module that says how it builds, trains, renders and exports; nothing outside
`ampsim.modelling.architectures` asks which one a model is."""

from __future__ import annotations

import re

import pytest

keras = pytest.importorskip("keras")

from conftest import PROJECT  # noqa: E402

from ampsim.core.errors import AmpsimError  # noqa: E402
from ampsim.core.params import load_params  # noqa: E402
from ampsim.deployment.export import FORMATS  # noqa: E402
from ampsim.inference.engine import METHODS  # noqa: E402
from ampsim.modelling.architectures import architecture, registered  # noqa: E402


@pytest.mark.parametrize("name", sorted(registered()))
def test_every_architecture_module_says_how_it_builds_trains_renders_and_exports(name):
    module = architecture(name)
    assert module.NAME == name and module.DESCRIPTION and module.PARAMS in load_params(PROJECT / "params.yaml")
    assert set(module.FORMATS) <= set(FORMATS) and "nam" in module.FORMATS
    assert set(module.RENDER_METHODS) <= set(METHODS) and module.EVALUATION_METHOD in module.RENDER_METHODS
    for function in ("build", "recipe", "shortest_context", "nam"):
        assert callable(getattr(module, function))


def test_the_2018_model_is_named_for_what_it_is_and_unknown_names_are_refused():
    assert architecture("lstm2018").NAME == "lstm2018"
    with pytest.raises(AmpsimError, match="unknown architecture `transformer`.*lstm, lstm2018, wavenet"):
        architecture("transformer")


def test_the_modelling_modules_import_without_a_circle():
    """Each module's own `from ampsim...` imports, at module level or in a function, form no cycle (a package
    importing its own modules to list them, as `architectures.registered` does, is not one)."""
    import ast

    root = PROJECT / "src"
    names = {".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
             for path in (root / "ampsim" / "modelling").rglob("*.py")}
    edges = {}
    for name, path in names.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                imported.add(node.module)
                imported |= {f"{node.module}.{alias.name}" for alias in node.names} & set(names)
        edges[name] = {module for module in imported if module != name and not module.startswith(f"{name}.")}

    def reaches(start, goal, seen=()):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, (*seen, nxt))) for nxt in edges[start])

    circles = sorted(name for name in names if reaches(name, name))
    assert not circles, f"modules that import themselves through others: {circles}"


def test_no_module_outside_the_architectures_compares_architecture_names():
    pattern = re.compile(r"""architecture\s*[!=]=\s*["']|["'](seed|lstm|lstm2018)["']\s*[!=]=\s*\w*architecture""")
    for path in (PROJECT / "src" / "ampsim").glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path.name} asks which architecture a model is"


@pytest.mark.parametrize("name, section, short, long", [("lstm", "tbptt_samples", 200, 2048),
                                                        ("wavenet", "output_samples", 1000, 8192)])
def test_an_mrstft_term_needs_updates_as_long_as_its_longest_fft(name, section, short, long):
    from ampsim.cli import _train_config

    params = load_params(PROJECT / "params.yaml")
    params["fit"]["mrstft_weight"] = 0.1
    params[name][section] = short
    with pytest.raises(AmpsimError, match=rf"fit.mrstft_weight needs .*2048.*{name}.{section} is {short}"):
        architecture(name).recipe(_train_config(params, "params.yaml", 48000))
    params[name][section] = long
    assert architecture(name).recipe(_train_config(params, "params.yaml", 48000)).loss_name == "esr_dc+mrstft"
    params["fit"]["mrstft_weight"] = 0.0
    assert architecture(name).recipe(_train_config(params, "params.yaml", 48000)).loss_name == "esr_dc"


@pytest.mark.parametrize("rate, window, tail, context", [(44100, 4851, 441, 441), (48000, 5280, 480, 480),
                                                         (96000, 10560, 960, 960)])
def test_what_is_set_in_time_follows_the_devices_rate(rate, window, tail, context):
    from ampsim.cli import _train_config

    config = _train_config(load_params(PROJECT / "params.yaml"), "params.yaml", rate)
    plan = architecture("lstm2018").recipe(config)
    assert (plan.window, plan.scored) == (window, tail)  # the 2018 model's 110 ms crops, scored on their last 10 ms
    assert architecture("lstm").shortest_context(0, 0, rate) == context  # fast rendering's first warm-up: 10 ms
    # what the streaming LSTM counts in samples (as NAM counts its windows) stays in samples
    assert architecture("lstm").recipe(config).window == architecture("lstm").recipe(
        _train_config(load_params(PROJECT / "params.yaml"), "params.yaml", 48000)).window
