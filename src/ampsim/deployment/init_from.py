"""`ampsim init-from DEVICE SOURCE`: fine-tune a device from a model of similar gear.

The source is another device (its released model), a registry URI, a `.nam` file or a `.keras` file. It is
checked against the device's recipe (architecture and size, its knobs) before anything is written, then kept
beside the device's captures in `data/captures/<device>/.start/` (see ampsim.modelling.warm_start), DVC
re-adds the captures folder, and `recipes.<device>.train.init_from` records the source. The device's train
stage depends on that folder, so `dvc repro` retrains it, and retrains it again whenever the start changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ampsim.core.audio import atomic_dir
from ampsim.core.errors import AmpsimError
from ampsim.core.params import load_params

SOURCE_FORMS = ("a device with a released model (models/NAME/release), models:/NAME@ALIAS or models:/NAME/VERSION, "
                "a .nam file, or a .keras file (with its .card.json)")
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class Started:
    device: str
    folder: Path  # the starting model, beside the captures
    resolved: str  # what the source named, in words
    dvc_file: Path | None


def load_source(source: str, project: Path, device: str):
    """(model, card, what it resolved to) for any of SOURCE_FORMS."""
    from ampsim.modelling.models import load_model

    if source.startswith("models:/"):
        from ampsim.core.tracking import tracking_uri
        from ampsim.deployment.registry import load_registered

        model, card, version = load_registered(source, tracking_uri(project))
        return model, card, f"{source}: version {version.version} of {version.name} (run {version.run_id})"
    path = Path(source) if Path(source).is_absolute() else project / source
    if path.suffix.lower() == ".nam":
        from ampsim.deployment.nam_import import imported_model, read_nam_file

        nam = read_nam_file(path)
        model, card = imported_model(nam, device)
        return model, card, f"{path.name}: NAM {nam.architecture}, file version {nam.version}"
    if path.suffix == ".keras" or (path / "model.keras").is_file():
        model, card = load_model(path)
        return model, card, f"{path}: {card.architecture} of {card.device or ', '.join(card.captures)}"
    release = project / "models" / source / "release"
    if release.is_dir():
        model, card = load_model(release)
        return model, card, f"device {source}'s released model ({card.architecture}, models/{source}/release)"
    raise AmpsimError(f"cannot tell what the starting model {source!r} is", path=path,
                      fix=f"name {SOURCE_FORMS}")


def check_fits(model, card, params: dict, device: str, captures: Path, source: str) -> None:
    """The device's recipe, built for its knobs, takes the source's weights (else a clear error)."""
    from ampsim.core.knobs import interior_settings, knob_names
    from ampsim.data.captures import find_captures
    from ampsim.modelling.training import build_model, train_config
    from ampsim.modelling.warm_start import starting_weights

    config = train_config(params, card.sample_rate)
    if card.architecture != config.train.architecture:
        raise AmpsimError(f"the starting model is a `{card.architecture}`; device {device} trains a "
                          f"`{config.train.architecture}`", path=source,
                          fix=f"set `recipes.{device}: {{train: {{architecture: {card.architecture}}}}}` (and its size) "
                              "in params.yaml first, or start from a model of the device's architecture")
    found = find_captures(captures)
    knobs = knob_names(c.knobs for c in found)
    knots = interior_settings(knobs, [c.knobs for c in found if c.split != "val"])  # as training places them
    starting_weights(build_model(config, len(knobs), knots=knots), model, len(knobs), source,
                     f"device {device}'s recipe ({config.train.architecture}, {len(knobs)} knob(s))")


def init_from(project: Path, device: str, source: str, *, use_dvc: bool = True) -> Started:
    """Check, keep and record SOURCE as DEVICE's starting model. Nothing is written when it is refused."""
    from ampsim.core.params import device_params
    from ampsim.data.intake import dvc_add, params_with_recipe_setting, refuse_generated
    from ampsim.modelling.models import save_model
    from ampsim.modelling.warm_start import start_folder

    project = Path(project).resolve()
    params_file = project / "params.yaml"
    params = load_params(params_file)
    if device not in (params.get("devices") or []):
        raise AmpsimError(f"device '{device}' is not in params.yaml's `devices`", path=params_file,
                          fix="add its captures first: `ampsim add FOLDER --device NAME`")
    refuse_generated(project, device)
    captures = project / "data" / "captures" / device
    model, card, resolved = load_source(source, project, device)
    check_fits(model, card, device_params(params, device, params_file), device, captures, source)
    edited = params_with_recipe_setting(params_file.read_text(), device, "train", "init_from", source, params_file)

    folder = start_folder(captures)
    with atomic_dir(folder) as scratch:
        save_model(model, card, scratch)
        (scratch / SOURCE_FILE).write_text(json.dumps({"init_from": source, "resolved": resolved}, indent=2) + "\n")
    dvc_file = dvc_add(captures, project) if use_dvc else None
    params_file.write_text(edited)
    return Started(device, folder, resolved, dvc_file)
