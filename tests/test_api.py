"""The library API: the names ``from hfaudit import ...`` promises, one seed for the whole scan,
``clean``'s config honoured, errors that are also the standard exception types, ``python -m hfaudit``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import fields

import pytest

import hfaudit


def test_every_public_name_imports_and_is_listed() -> None:
    from hfaudit import CleanConfig, ExitCode, ScanConfig, clean, scan

    assert all(callable(x) for x in (CleanConfig, ExitCode, ScanConfig, clean, scan))

    for name in hfaudit.__all__:
        assert getattr(hfaudit, name) is not None, name
        assert name in dir(hfaudit), name
    assert callable(hfaudit.clean) and callable(hfaudit.scan)
    module = importlib.import_module("hfaudit.cleaning")  # importing the module must not shadow the function
    assert callable(hfaudit.clean) and hfaudit.clean is module.clean
    with pytest.raises(AttributeError):
        hfaudit.no_such_name  # noqa: B018


def test_library_errors_are_standard_exceptions() -> None:
    assert issubclass(hfaudit.UsageError, ValueError) and issubclass(hfaudit.OutputError, OSError)
    with pytest.raises(ValueError, match="^n_samples must be between") as exc:
        hfaudit.ScanConfig(n_samples=1).validate()
    assert exc.value.param == "n_samples"  # the CLI names its flag instead: --samples (test_bad_input)


def test_one_seed_reaches_every_search() -> None:
    cfg = hfaudit.ScanConfig(seed=7).seeded()
    seeds = {cfg.inversion.seed, *(b.seed for b in cfg.searches), cfg.midstep.seed, cfg.ode.seed, cfg.stamps.seed}
    assert seeds == {7}
    assert hfaudit.ScanConfig(seed=7).inversion.seed == 0  # seeded() copies; the caller's config is untouched
    off = hfaudit.ScanConfig(seed=3, blackbox=None, midstep=None, ode=None, stamps=None).seeded()
    assert off.blackbox is None and off.midstep is None and off.inversion.seed == 3


def test_clean_honours_its_config_and_keywords_override_only_when_given() -> None:
    from hfaudit.cleaning import merged_config

    scan_cfg = hfaudit.ScanConfig(seed=4)
    mine = hfaudit.CleanConfig(prune_ratio=0.05, seed=9)
    cfg = merged_config(mine, scan_cfg)
    assert (cfg.prune_ratio, cfg.seed, cfg.finetune.seed) == (0.05, 9, 9)
    assert cfg is not mine and cfg.finetune is not mine.finetune
    cfg = merged_config(mine, scan_cfg, prune_ratio=0.01, steps=5, seed=2)
    assert (cfg.prune_ratio, cfg.finetune.steps, cfg.seed) == (0.01, 5, 2)
    assert mine.prune_ratio == 0.05  # never changed in place
    default = merged_config(None, scan_cfg)
    assert default.seed == 4 and default.prune_ratio == hfaudit.CleanConfig().prune_ratio
    assert {f.name for f in fields(default)} >= {"prune_ratio", "importance", "seed", "finetune"}


def test_python_dash_m_hfaudit_is_the_cli() -> None:
    run = subprocess.run([sys.executable, "-m", "hfaudit", "version"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == hfaudit.__version__, run.stderr


def test_verdicts_are_an_enum_that_reads_as_the_plain_word() -> None:
    import json

    from hfaudit import Verdict

    assert [v.value for v in Verdict] == ["backdoor", "clean", "collapsed"]
    v = Verdict.BACKDOOR
    assert v == "backdoor" and str(v) == f"{v}" == "backdoor" and {"backdoor": 1}[v] == 1
    assert json.dumps({"verdict": v}) == '{"verdict": "backdoor"}'
