"""Static checks (``hfaudit.safety``): each problem becomes a finding on the right file, nothing is executed."""

from __future__ import annotations

import json
import logging
import pathlib
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfaudit.errors import ExitCode, UnsafeCheckpointError, UnsupportedModelError
from hfaudit.hub import resolve
from hfaudit.pipeline import SUPPORTED_PIPELINES, load_model
from hfaudit.safety import RULES, safetensors_findings, scan_pickle, static_checks
from helpers import UNET_BIN, UNET_ST, WriteMarker



pytestmark = pytest.mark.usefixtures("one_thread")



class SneakyWriteMarker(WriteMarker):
    """The same effect through a gadget picklescan only flags in strict mode (not on its deny-list)."""

    def __reduce__(self):
        return (pathlib.PosixPath.write_text, (pathlib.PosixPath(self.path), "pwned"))


def checks(root: Path, **kw):
    return static_checks(root, supported_pipelines=SUPPORTED_PIPELINES, **kw)


def rules(report) -> list[tuple[str, str, str]]:
    return [(f.rule, f.level, f.path) for f in report.findings]


def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + hlen:])


def test_a_clean_pipeline_has_no_findings(tiny_pipeline_dir: Path) -> None:
    report = checks(tiny_pipeline_dir)
    assert report.findings == []
    assert report.pipeline_class == "DDPMPipeline"
    assert report.unet_weights == UNET_ST
    assert report.weights == {"unet": [UNET_ST]}
    report.raise_for_blocking()  # nothing to raise


@pytest.mark.parametrize("edit, needle", [
    (lambda h: h[next(k for k in h if k != "__metadata__")]["data_offsets"].__setitem__(1, 10**9), "lies about tensor"),
    (lambda h: h[next(k for k in h if k != "__metadata__")].__setitem__("dtype", "F99"), "unknown dtype"),
    (lambda h: h[next(k for k in h if k != "__metadata__")].__setitem__("shape", [-1]), "negative dimension"),
    (lambda h: h.__setitem__("evil", {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}), "overlap"),
])
def test_lying_safetensors_headers(tiny_pipeline_dir: Path, edit, needle: str) -> None:
    _rewrite_header(tiny_pipeline_dir / UNET_ST, edit)
    report = checks(tiny_pipeline_dir)
    assert rules(report) == [("HFA200", "error", UNET_ST)]
    assert needle in report.findings[0].message
    with pytest.raises(UnsafeCheckpointError, match=needle) as err:
        report.raise_for_blocking()
    assert err.value.exit_code == ExitCode.UNSAFE and err.value.findings == report.findings


def test_truncated_and_padded_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(4), "b": torch.zeros(2, 2)}, str(path))
    good = path.read_bytes()
    assert safetensors_findings(path) == []
    for data, needle in ((good[:-3], "lies about tensor"), (good + b"\0" * 8, "no tensor indexes"),
                         (good[:5], "shorter than its 8-byte header"), (struct.pack("<Q", 50) + b"{}", "exceeds file size"),
                         (struct.pack("<Q", 2) + b"[]", "not a JSON object"), (struct.pack("<Q", 3) + b"{x}", "not valid JSON")):
        path.write_bytes(data)
        (finding,) = safetensors_findings(path, "unet/w.safetensors")
        assert finding.rule == "HFA200" and finding.path == "unet/w.safetensors" and needle in finding.message, finding


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(tiny_pipeline_dir: Path, value: float) -> None:
    path = tiny_pipeline_dir / UNET_ST
    tensors = load_file(str(path))
    key = sorted(tensors)[3]
    tensors[key].view(-1)[0] = value
    save_file(tensors, str(path))
    report = checks(tiny_pipeline_dir)
    assert rules(report) == [("HFA201", "error", UNET_ST)]
    assert key in report.findings[0].message
    # check_values=False skips the read (the header is still checked)
    assert checks(tiny_pipeline_dir, check_values=False).findings == []


def test_malicious_pickle_is_flagged_and_never_unpickled(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": WriteMarker(marker)}, tiny_pipeline_dir / UNET_BIN)
    for allow in (False, True):
        report = checks(tiny_pipeline_dir, allow_pickle=allow)
        assert ("HFA211", "error", UNET_BIN) in rules(report)
        assert "exec" in next(f.message for f in report.findings if f.rule == "HFA211")
        with pytest.raises(UnsafeCheckpointError):
            report.raise_for_blocking()
    assert not marker.exists()


def test_gadgets_off_the_deny_list_are_flagged(tmp_path: Path) -> None:
    """Strict scanning, and 'suspicious' counted as dangerous: anything off the tensor allow-list blocks."""
    marker = tmp_path / "pwned"
    torch.save({"w": SneakyWriteMarker(marker)}, tmp_path / "model.bin")
    (finding,) = scan_pickle(tmp_path / "model.bin", "model.bin")
    assert finding.rule == "HFA211" and "pathlib" in finding.message
    from picklescan.scanner import scan_file_path

    # picklescan's default mode would call pathlib merely "suspicious": hfaudit blocks it all the same
    lax = scan_file_path(str(tmp_path / "model.bin"))  # no strict=: older releases do not take it
    assert {g.safety.value for g in lax.globals if g.module == "pathlib"} == {"suspicious"}
    assert not marker.exists()


def test_a_clean_state_dict_pickle_scans_clean(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(3), "b": torch.ones(2, dtype=torch.float16)}, tmp_path / "ok.bin")
    assert scan_pickle(tmp_path / "ok.bin") == []


def test_picklescan_prints_nothing(tmp_path: Path, capsys, caplog) -> None:
    """Its log lines would break the CLI's one-line errors; the findings carry the facts."""
    torch.save({"w": WriteMarker(tmp_path / "m")}, tmp_path / "evil.pt")
    with caplog.at_level(logging.DEBUG):
        assert scan_pickle(tmp_path / "evil.pt")
    assert not [r for r in caplog.records if r.name.startswith("picklescan")]
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
    assert logging.getLogger("picklescan").disabled is False  # restored


def test_unscannable_pickle(tmp_path: Path) -> None:
    # A pickle that imports os.system and then breaks off: a partial, malicious stream.
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\xff")
    found = {f.rule for f in scan_pickle(tmp_path / "broken.pkl")}
    assert "HFA212" in found


def test_pickle_beside_safetensors_is_a_note(tiny_pipeline_dir: Path) -> None:
    torch.save(load_file(str(tiny_pipeline_dir / UNET_ST)), tiny_pipeline_dir / UNET_BIN)
    report = checks(tiny_pipeline_dir)
    assert rules(report) == [("HFA214", "note", UNET_BIN)]
    assert report.unet_weights == UNET_ST and not report.blocking


def test_pickle_only(tiny_pipeline_dir: Path) -> None:
    torch.save(load_file(str(tiny_pipeline_dir / UNET_ST)), tiny_pipeline_dir / UNET_BIN)
    (tiny_pipeline_dir / UNET_ST).unlink()
    refused = checks(tiny_pipeline_dir)
    assert rules(refused) == [("HFA210", "error", UNET_BIN)] and refused.unet_weights is None
    allowed = checks(tiny_pipeline_dir, allow_pickle=True)
    assert rules(allowed) == [("HFA210", "note", UNET_BIN)] and allowed.unet_weights == UNET_BIN


def test_allow_pickle_loads_a_clean_pickle_with_weights_only(tiny_pipeline_dir: Path) -> None:
    reference = load_file(str(tiny_pipeline_dir / UNET_ST))
    torch.save(reference, tiny_pipeline_dir / UNET_BIN)
    (tiny_pipeline_dir / UNET_ST).unlink()
    source = resolve(str(tiny_pipeline_dir))
    with pytest.raises(UnsafeCheckpointError, match="pickle-only"):
        load_model(source, device="cpu")
    model = load_model(source, device="cpu", allow_pickle=True)
    assert model.weights_file == UNET_BIN
    assert [f.rule for f in model.findings] == ["HFA210"]
    state = model.unet.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_remote_pickles_not_downloaded_are_noted(tiny_pipeline_dir: Path) -> None:
    report = checks(tiny_pipeline_dir, files=[*_tree(tiny_pipeline_dir), UNET_BIN, "extra/model.ckpt"])
    assert rules(report) == [("HFA213", "note", "extra/model.ckpt"), ("HFA213", "note", UNET_BIN)]
    assert report.unet_weights == UNET_ST


@pytest.mark.parametrize("change, rule, exit_code, needle", [
    (lambda d: (d / "model_index.json").unlink(), "HFA100", ExitCode.UNSUPPORTED, "not a diffusers pipeline"),
    (lambda d: (d / "model_index.json").write_text("[1, 2]"), "HFA101", ExitCode.UNSUPPORTED, "not a JSON object"),
    (lambda d: (d / "unet" / "config.json").write_text("{oops"), "HFA101", ExitCode.UNSUPPORTED, "not valid JSON"),
    (lambda d: _edit_json(d / "model_index.json", _class_name="StableDiffusionPipeline"), "HFA102",
     ExitCode.UNSUPPORTED, "StableDiffusionPipeline"),
    (lambda d: _edit_json(d / "model_index.json", unet=None), "HFA103", ExitCode.UNSUPPORTED, "no unet component"),
    (lambda d: (d / "scheduler" / "scheduler_config.json").unlink(), "HFA103", ExitCode.UNSUPPORTED,
     "scheduler/scheduler_config.json not found"),
    (lambda d: _edit_json(d / "unet" / "config.json", _class_name="UNet2DConditionModel"), "HFA104",
     ExitCode.UNSUPPORTED, "model_index.json says unet is a UNet2DModel"),
    (lambda d: _edit_json(d / "unet" / "config.json", sample_size=0), "HFA105", ExitCode.UNSUPPORTED, "sample_size"),
    (lambda d: _edit_json(d / "unet" / "config.json", sample_size=[8, 0]), "HFA105", ExitCode.UNSUPPORTED, "sample_size"),
    (lambda d: _edit_json(d / "unet" / "config.json", in_channels=0), "HFA105", ExitCode.UNSUPPORTED, "in_channels"),
    (lambda d: _edit_json(d / "scheduler" / "scheduler_config.json", num_train_timesteps=1), "HFA106",
     ExitCode.UNSUPPORTED, "1 training timesteps"),
    (lambda d: _edit_json(d / "scheduler" / "scheduler_config.json", beta_schedule="bogus"), "HFA106",
     ExitCode.UNSUPPORTED, "unusable"),
    (lambda d: _edit_json(d / "scheduler" / "scheduler_config.json", prediction_type="v_prediction"), "HFA106",
     ExitCode.UNSUPPORTED, "epsilon only"),
    (lambda d: (d / UNET_ST).unlink(), "HFA107", ExitCode.UNSUPPORTED, "no weight files"),
])
def test_config_findings(tiny_pipeline_dir: Path, change, rule: str, exit_code: ExitCode, needle: str) -> None:
    change(tiny_pipeline_dir)
    report = checks(tiny_pipeline_dir)
    found = [f for f in report.findings if f.rule == rule]
    assert found and needle in found[0].message, report.findings
    with pytest.raises(UnsupportedModelError) as err:
        report.raise_for_blocking()
    assert err.value.exit_code == exit_code


def test_unsafe_outranks_unsupported(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """A repo both unsupported and holding a malicious pickle: 'do not load this' wins (exit 5)."""
    _edit_json(tiny_pipeline_dir / "model_index.json", _class_name="StableDiffusionPipeline")
    torch.save({"w": WriteMarker(tmp_path / "m")}, tiny_pipeline_dir / "text_encoder.bin")
    report = checks(tiny_pipeline_dir)
    assert {f.rule for f in report.blocking} == {"HFA102", "HFA211"}
    with pytest.raises(UnsafeCheckpointError, match=r"text_encoder.bin.*and 1 more blocking finding"):
        report.raise_for_blocking()


def test_checks_write_nothing(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    torch.save({"w": WriteMarker(tmp_path / "m")}, tiny_pipeline_dir / UNET_BIN)
    before = _tree(tiny_pipeline_dir)
    checks(tiny_pipeline_dir, allow_pickle=True)
    assert _tree(tiny_pipeline_dir) == before


def test_every_rule_is_well_formed() -> None:
    for rid, rule in RULES.items():
        assert rid == rule.id and rid.startswith("HFA") and rule.level in ("error", "warning", "note")
        assert rule.summary and rule.help and rule.name.replace("-", "").isalpha()
        if rule.level != "error":
            assert rule.exit_code is None, rid


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
