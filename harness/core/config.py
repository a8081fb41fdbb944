"""Hydra composition for every `harness` subcommand.

Each subcommand has a primary config `configs/<name>.yaml`; the words after the subcommand are
Hydra overrides (`key=value`, `group=option`, `+new=value`). Composition happens before any model is
loaded, so an unknown group option or key fails at once with Hydra's message, which lists the valid
options.
"""
from __future__ import annotations

from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from harness.core.io import CONFIG_DIR


class ConfigError(ValueError):
    """A config that cannot be used; the message names the problem."""


def load_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<config_name>.yaml` with `overrides`; raise ConfigError with a readable message."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"arguments must be key=value overrides, got: {' '.join(bad)}")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    except Exception as e:  # hydra raises several types; all mean "this config is wrong"
        raise ConfigError(str(e)) from e
    finally:
        GlobalHydra.instance().clear()
    return cfg


def require_choice(value: str, valid: Sequence[str], name: str) -> str:
    """Check that `value` is one of `valid`; the error lists the valid ones."""
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, valid))}")
    return value


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
