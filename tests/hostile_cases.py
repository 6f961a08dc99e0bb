"""The hostile-input matrix: every case is a copy of a model folder made hostile one way, and the
command line to run on it, with the exit code and the words of the one-line error it must give.

``tests/test_hostile_inputs.py`` runs each case and checks the contract common to all of them
(exit code, one line on stderr, no traceback, the model folder byte-for-byte unchanged, any JSON
report valid JSON, a bound on wall time and, for the cases run in a child process, on memory).
Cases are built from the shipped example models (``bd``: the BadDiffusion example, ``clean``: the
clean one) so that a refusal is shown on the model whose backdoor it must not hide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hfaudit.errors import ExitCode

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"
BASES = {"bd": EXAMPLES / "digits-baddiffusion", "clean": EXAMPLES / "digits-clean"}
UNET = "unet/diffusion_pytorch_model.safetensors"
INDEX = "unet/diffusion_pytorch_model.safetensors.index.json"
QUICK = ["--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2", "--no-blackbox", "--no-midstep",
         "--no-ode", "--no-stamps"]
"""A scan small enough for the cases that must get through to a verdict."""
VERDICT = (int(ExitCode.CLEAN), int(ExitCode.BACKDOOR))
"""Expected 'code' of a case that must not be refused: either verdict is fine (QUICK decides nothing)."""

Build = Callable[[Path, Path], list[str]]
"""``(model folder, scratch folder) -> the CLI arguments after 'hfaudit'`` (the model folder is edited in place)."""


@dataclass(frozen=True)
class Case:
    """One hostile input and what hfaudit must answer."""

    id: str
    build: Build
    code: int | tuple[int, ...]
    needle: str
    """Words the one error line must contain (case-insensitive); empty for a verdict."""
    base: str = "bd"
    child: bool = False
    """Run the console script in a child process under an address-space limit (hangs, memory)."""
    issue: bool = False
    """One of the cases listed in the issue that asked for this matrix (the others are our own)."""
    hub: str | None = None
    """A hostile Hub endpoint to point ``HF_ENDPOINT`` at (a key of ``test_hub_hostile.SERVERS``)."""
    check: Callable[[Path, str], None] | None = None
    """More to check after the run: ``(scratch folder, stdout)``."""


# ------------------------------------------------------------------------------------- builders
def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def edit_header(path: Path, change: Callable[[dict], object]) -> None:
    """Rewrite a safetensors file's JSON header with ``change`` (data bytes kept)."""
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    replaced = change(header)
    text = replaced if isinstance(replaced, (str, bytes)) else json.dumps(header)
    new = text.encode() if isinstance(text, str) else text
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + hlen:])


def first_tensor(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def scan(*flags: str) -> Build:
    """A case whose only hostile part is the command line."""
    return lambda model, tmp: ["scan", str(model), *flags, "--json", str(tmp / "report.json")]


def with_model(edit: Callable[[Path], object], *flags: str) -> Build:
    """A case that edits the model folder, then scans it (JSON report requested, to check it)."""
    def build(model: Path, tmp: Path) -> list[str]:
        edit(model)
        return ["scan", str(model), *flags, "--json", str(tmp / "report.json")]
    return build


def shard(model: Path, parts: int = 3) -> list[str]:
    """Re-save the unet as a sharded checkpoint (an index plus ``parts`` shards, diffusers' layout)."""
    tensors = load_file(str(model / UNET))
    names = sorted(tensors)
    per = -(-len(names) // parts)
    weight_map: dict[str, str] = {}
    files = []
    for i in range(parts):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{parts:05d}.safetensors"
        chunk = {k: tensors[k] for k in names[i * per:(i + 1) * per]}
        save_file(chunk, str(model / "unet" / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in chunk})
        files.append(name)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    (model / INDEX).write_text(json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}))
    (model / UNET).unlink()
    return files


def nan_shard(which: int) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        path = model / "unet" / shard(model)[which]
        tensors = {k: torch.full_like(v, float("nan")) for k, v in load_file(str(path)).items()}
        save_file(tensors, str(path), metadata={"format": "pt"})
    return edit


def set_dtype(dtype: str) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        edit_header(model / UNET, lambda h: [v.update(dtype=dtype) for k, v in h.items()
                                             if k != "__metadata__" and v["dtype"] == "F32"])
    return edit


def to_float16(model: Path) -> None:
    tensors = {k: v.half() for k, v in load_file(str(model / UNET)).items()}
    save_file(tensors, str(model / UNET), metadata={"format": "pt"})


def drop_tensor(model: Path) -> None:
    tensors = load_file(str(model / UNET))
    del tensors[sorted(tensors)[-1]]
    save_file(tensors, str(model / UNET), metadata={"format": "pt"})


def nan_last_tensor(model: Path) -> None:
    tensors = load_file(str(model / UNET))
    tensors[sorted(tensors)[-1]].view(-1)[-1] = float("nan")
    save_file(tensors, str(model / UNET), metadata={"format": "pt"})


def overflow(model: Path) -> None:
    """Finite weights whose output overflows: the samples become Inf/NaN, which used to read as clean."""
    tensors = load_file(str(model / UNET))
    tensors.update({k: v * 1e36 for k, v in tensors.items() if k.startswith("conv_out")})
    save_file(tensors, str(model / UNET), metadata={"format": "pt"})


def replace_with(rel: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        (model / rel).unlink()
        make(model / rel)
    return edit


def deep_json(depth: int) -> Callable[[Path], None]:
    return lambda model: (model / "model_index.json").write_text("[" * depth + "]" * depth)


def million_empty_tensors(model: Path) -> None:
    """A real header (92 MB) that indexes a million empty tensors, before the real ones."""
    def change(h: dict) -> str:
        entries = ", ".join(f'"e{i}": {{"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}'
                            for i in range(1_000_000))
        return "{" + entries + ", " + json.dumps(h)[1:]
    edit_header(model / UNET, change)


def index_with(weight_map: object) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        shard(model)
        (model / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return edit


def drop_shard(model: Path) -> None:
    (model / "unet" / shard(model)[1]).unlink()


def broken_index(model: Path) -> None:
    shard(model)
    (model / INDEX).write_text("{nope")


def sched(**changes: object) -> Callable[[Path], None]:
    return lambda model: edit_json(model / "scheduler" / "scheduler_config.json", **changes)


def unet_cfg(**changes: object) -> Callable[[Path], None]:
    return lambda model: edit_json(model / "unet" / "config.json", **changes)


def index_cfg(**changes: object) -> Callable[[Path], None]:
    return lambda model: edit_json(model / "model_index.json", **changes)


def header(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda model: edit_header(model / UNET, change)


def write_raw(rel: str, text: str) -> Callable[[Path], None]:
    return lambda model: (model / rel).write_text(text)


def outputs(make: Callable[[Path, Path], list[str]]) -> Build:
    """A case about output paths: ``make(model, tmp)`` gives the output flags."""
    return lambda model, tmp: ["scan", str(model), *QUICK, "-q", *make(model, tmp)]


def json_to_link(model: Path, tmp: Path) -> list[str]:
    (tmp / "target.json").write_text("{}")
    (tmp / "link.json").symlink_to(tmp / "target.json")
    return ["--json", str(tmp / "link.json")]


def link_kept(tmp: Path, out: str) -> None:
    assert (tmp / "link.json").is_symlink(), "the link was replaced"
    assert json.loads((tmp / "target.json").read_text())["exit_code"] in VERDICT


def devnull_kept() -> None:
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null was replaced"


def json_to_fifo(model: Path, tmp: Path) -> list[str]:
    os.mkfifo(tmp / "fifo")
    return ["--json", str(tmp / "fifo")]


def json_through_link(model: Path, tmp: Path) -> list[str]:
    (tmp / "into-model").symlink_to(model / "unet")
    return ["--json", str(tmp / "into-model" / "config.json")]


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def hub_scan(model: Path, tmp: Path) -> list[str]:
    return ["scan", "org/model", "--json", str(tmp / "report.json")]


def clean_with(*flags: str) -> Build:
    return lambda model, tmp: ["clean", str(model), "-o", str(tmp / "out"), *flags]


def lfs_pointer_weights(model: Path, tmp: Path) -> list[str]:
    """A checkout without Git LFS: the unet weights are the pointer file git leaves in their place."""
    data = (model / UNET).read_bytes()
    (model / UNET).write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}"
                              f"\nsize {len(data)}\n")
    return ["scan", str(model), "--json", str(tmp / "report.json"), "--sarif", str(tmp / "report.sarif")]


def no_security_finding(tmp: Path, out: str) -> None:
    """The SARIF names the pointer (HFA108) and holds no result of a rule with a security severity."""
    run = json.loads((tmp / "report.sarif").read_text())["runs"][0]
    rules = {r["id"]: r.get("properties", {}) for r in run["tool"]["driver"]["rules"]}
    assert [r["ruleId"] for r in run["results"]] == ["HFA108"], run["results"]
    assert not [r["ruleId"] for r in run["results"] if "security-severity" in rules[r["ruleId"]]]


def no_such_model(model: Path, tmp: Path) -> list[str]:
    shutil.rmtree(model)
    model.write_text("a file, not a folder")
    return ["scan", str(model)]


def base_is_a_fifo(model: Path, tmp: Path) -> list[str]:
    os.mkfifo(tmp / "fifo")
    return ["scan", str(model), *QUICK, "--base", str(tmp / "fifo"), "--json", str(tmp / "report.json")]


def card_names_a_fifo_as_base(model: Path, tmp: Path) -> list[str]:
    """The model's own card names a FIFO as its base: the scan must not open it, nor stop."""
    os.mkfifo(tmp / "fifo")
    (model / "README.md").write_text(f"---\nbase_model: {tmp / 'fifo'}\n---\n")
    return ["scan", str(model), *QUICK, "--json", str(tmp / "report.json")]


def base_not_compared(words: str) -> Callable[[Path, str], None]:
    """The report's base comparison did not run, for the reason ``words`` says."""
    def check(tmp: Path, out: str) -> None:
        base = json.loads((tmp / "report.json").read_text())["base_model"]
        assert base is not None and not base["compared"] and words in base["reason"], base
    return check


# ------------------------------------------------------------------------------------------ cases
U, S, N, B = int(ExitCode.USAGE), int(ExitCode.UNSUPPORTED), int(ExitCode.NOT_FOUND), int(ExitCode.UNSAFE)
OUT = "hfaudit never writes into the model"

CASES: list[Case] = [
    # -- the two fail-open paths, and the dtype relabelling: never a clean verdict from broken evidence
    Case("sharded-nan-second-shard", with_model(nan_shard(1)), B, "holds NaN", issue=True),
    Case("schedule-betas-0.5-to-1.5", with_model(sched(beta_start=0.5, beta_end=1.5)), S,
         "not a diffusion schedule", issue=True),
    Case("f32-relabelled-i32", with_model(set_dtype("I32")), B, "not a floating-point type", issue=True),
    # -- writing into the audited model
    Case("output-dir-is-the-model", outputs(lambda m, t: ["-o", str(m)]), U, OUT, issue=True),
    Case("output-dir-inside-the-model", outputs(lambda m, t: ["-o", str(m / "audit")]), U, OUT, issue=True),
    Case("json-over-model-index", outputs(lambda m, t: ["--json", str(m / "model_index.json")]), U, OUT, issue=True),
    Case("sarif-over-the-weights", outputs(lambda m, t: ["--sarif", str(m / UNET)]), U, OUT, issue=True),
    Case("json-to-a-symlink", outputs(json_to_link), VERDICT, "", issue=True, check=link_kept),
    Case("json-to-dev-stdout", outputs(lambda m, t: ["--json", "/dev/stdout"]), VERDICT, "", issue=True,
         check=lambda t, out: json.loads(out)),
    Case("json-to-a-fifo", outputs(json_to_fifo), U, "FIFO"),
    Case("sarif-to-dev-null", outputs(lambda m, t: ["--sarif", "/dev/null"]), VERDICT, "",
         check=lambda t, out: devnull_kept()),
    Case("json-into-the-model-through-a-link", outputs(json_through_link), U, OUT),
    Case("two-formats-on-stdout", outputs(lambda m, t: ["--json", "-", "--markdown", "-"]), U, "standard output", issue=True),
    # -- hangs
    Case("fifo-as-weights", with_model(replace_with(UNET, make_fifo)), B, "FIFO", child=True, issue=True),
    # -- hostile configs and headers that used to end in exit 70
    Case("class-name-list", with_model(index_cfg(_class_name=["DDPMPipeline"])), S, "_class_name", issue=True),
    Case("class-name-dict", with_model(index_cfg(_class_name={"a": 1})), S, "_class_name", issue=True),
    Case("model-index-200000-deep", with_model(deep_json(200_000)), S, "nested too deep", issue=True),
    Case("sample-size-2048", with_model(unet_cfg(sample_size=2048)), S, "memory", child=True, issue=True),
    Case("sample-size-100000", with_model(unet_cfg(sample_size=100_000)), S, "beyond hfaudit's limit",
         child=True, issue=True),
    Case("sample-size-15", with_model(unet_cfg(sample_size=15)), S, "not divisible by 2", issue=True),
    Case("missing-tensor", with_model(drop_tensor), B, "lack tensor", issue=True),
    Case("header-shape-as-strings", with_model(header(lambda h: h[first_tensor(h)].update(
        shape=[str(d) for d in h[first_tensor(h)]["shape"]]))), B, "lists of integers", issue=True),
    Case("header-non-string-metadata", with_model(header(lambda h: h.update(__metadata__={"format": 1}))), B,
         "__metadata__", issue=True),
    Case("header-float-offsets", with_model(header(lambda h: h[first_tensor(h)].update(
        data_offsets=[float(o) for o in h[first_tensor(h)]["data_offsets"]]))), B, "lists of integers", issue=True),
    Case("weights-link-to-dev-zero", with_model(replace_with(UNET, link_to("/dev/zero"))), B, "character device",
         child=True, issue=True),
    Case("ten-train-timesteps", with_model(sched(num_train_timesteps=10)), S, "sampler steps this scan runs", issue=True),
    Case("samples-a-billion", scan("--samples", "1000000000"), U, "--samples must be between", child=True, issue=True),
    Case("sampler-ddim-100000", scan("--sampler", "ddim:100000"), U, "steps must be between", issue=True),
    Case("device-meta", scan("--device", "meta"), U, "not a device hfaudit can compute on", issue=True),
    Case("seed-2-to-the-70", scan("--seed", str(2**70)), U, "--seed must be between", issue=True),
    Case("train-timesteps-1e9", with_model(sched(num_train_timesteps=1_000_000_000)), S, "beyond hfaudit's limit",
         child=True, issue=True),
    Case("header-a-million-empty-tensors", with_model(million_empty_tensors), B, "beyond hfaudit's limit",
         child=True, issue=True),
    Case("empty-source", lambda m, t: ["scan", ""], U, "no model given", issue=True),
    Case("hub-never-answers", hub_scan, N, "no answer within", child=True, issue=True, hub="silent"),
    Case("hub-200-not-json", hub_scan, N, "not a Hub API response", child=True, issue=True, hub="html"),
    Case("hub-200-json-list", hub_scan, N, "not a Hub API response", child=True, hub="json-list"),
    # -- our own
    Case("sharded-nan-first-shard", with_model(nan_shard(0)), B, "holds NaN"),
    Case("sharded-nan-last-shard", with_model(nan_shard(2)), B, "holds NaN"),
    Case("single-file-nan", with_model(nan_last_tensor), B, "holds NaN"),
    Case("f32-relabelled-i64-halves", with_model(header(lambda h: h[first_tensor(h)].update(dtype="U8"))), B,
         "header lies"),
    Case("index-names-missing-shard", with_model(drop_shard), B, "not there"),
    Case("index-names-a-path-outside", with_model(index_with({"w": "../../model_index.json"})), B,
         "not a safetensors file beside it"),
    Case("index-without-weight-map", with_model(index_with([])), B, "no weight_map"),
    Case("index-not-json", with_model(broken_index), S, "not valid JSON"),
    Case("header-duplicate-key", with_model(header(lambda h: json.dumps(h)[:-1] + ", " + json.dumps(
        {first_tensor(h): h[first_tensor(h)]})[1:])), B, "twice"),
    Case("header-metadata-a-list", with_model(header(lambda h: h.update(__metadata__=["x"]))), B, "__metadata__"),
    Case("dangling-weights-link", with_model(replace_with(UNET, link_to("/nonexistent/weights.safetensors"))), B,
         "dangling link"),
    Case("fifo-as-unet-config", with_model(replace_with("unet/config.json", make_fifo)), B, "FIFO", child=True),
    Case("weights-path-is-a-folder", with_model(replace_with(UNET, lambda p: p.mkdir())), S, "no weight files"),
    Case("model-index-50-mb", with_model(write_raw("model_index.json", " " * 50_000_000 + "{}")), S,
         "more than"),
    Case("beta-end-nan", with_model(sched(beta_end=float("nan"))), S, "not a diffusion schedule"),
    Case("beta-start-negative", with_model(sched(beta_start=-0.1)), S, "not a diffusion schedule"),
    Case("trained-betas-wrong-length", with_model(sched(trained_betas=[0.01] * 7)), S, "must list 1000"),
    Case("trained-betas-reach-one", with_model(sched(trained_betas=[0.01] * 999 + [1.0])), S,
         "not a diffusion schedule"),
    Case("zero-snr-schedule", with_model(sched(rescale_betas_zero_snr=True)), S, "not a diffusion schedule"),
    Case("train-timesteps-a-string", with_model(sched(num_train_timesteps="1000")), S, "invalid num_train_timesteps"),
    Case("train-timesteps-true", with_model(sched(num_train_timesteps=True)), S, "invalid num_train_timesteps"),
    Case("in-channels-100000", with_model(unet_cfg(in_channels=100_000)), S, "invalid in_channels"),
    Case("block-channels-a-million", with_model(unet_cfg(block_out_channels=[1_000_000, 64])), S,
         "invalid block_out_channels"),
    Case("layers-per-block-a-million", with_model(unet_cfg(layers_per_block=1_000_000)), S,
         "invalid layers_per_block"),
    Case("block-types-mismatch", with_model(unet_cfg(down_block_types=["DownBlock2D"])), S,
         "one block type per entry"),
    Case("norm-groups-do-not-divide", with_model(unet_cfg(norm_num_groups=7)), S, "does not build a UNet2DModel"),
    Case("unet-class-name-list", with_model(unet_cfg(_class_name=["UNet2DModel"])), S, "not a string"),
    Case("scheduler-class-name-dict", with_model(sched(_class_name={"x": 1})), S, "not a string"),
    Case("threshold-nan", scan("--threshold", "nan"), U, "--threshold"),
    Case("class-threshold-inf", scan("--class-threshold", "inf"), U, "--class-threshold"),
    Case("inversion-steps-a-billion", scan("--inversion-steps", "1000000000"), U, "--inversion-steps"),
    Case("samples-2-to-the-63", scan("--samples", str(2**63)), U, "--samples"),
    Case("batch-size-2-to-the-40", scan("--batch-size", str(2**40)), U, "--batch-size"),
    Case("seed-negative", scan("--seed", "-1"), U, "--seed"),
    Case("device-cuda-99", scan("--device", "cuda:99"), U, "--device"),
    Case("source-is-a-file", no_such_model, N, "no such folder"),
    Case("weights-are-an-lfs-pointer", lfs_pointer_weights, N, "git lfs pull", check=no_security_finding),
    Case("clean-steps-a-billion", clean_with("--steps", "1000000000"), U, "--steps must be between"),
    Case("clean-lr-nan", clean_with("--lr", "nan"), U, "--lr must be positive and finite"),
    Case("clean-lr-inf", clean_with("--lr", "inf"), U, "--lr must be positive and finite"),
    Case("clean-output-is-the-model", lambda m, t: ["clean", str(m), "-o", str(m)], U, OUT),
    Case("clean-json-into-the-model", lambda m, t: ["clean", str(m), "-o", str(t / "out"), "--json",
                                                    str(m / "unet" / "config.json")], U, OUT),
    Case("weights-overflow-to-inf", with_model(overflow, *QUICK), int(ExitCode.INCONCLUSIVE), "NaN or Inf"),
    Case("base-is-a-fifo", base_is_a_fifo, N, "no such folder"),
    Case("card-names-a-fifo-as-base", card_names_a_fifo_as_base, VERDICT, "",
         check=base_not_compared("no such folder")),
    Case("base-of-another-architecture", scan(*QUICK, "--base", str(EXAMPLES / "t2i-clean")), VERDICT, "",
         check=base_not_compared("not the same architecture")),
    # -- not refused: real variants of a model that the checks must let through
    Case("float16-weights", with_model(to_float16, *QUICK), VERDICT, ""),
    Case("sharded-weights", with_model(shard, *QUICK), VERDICT, ""),
    Case("cosine-schedule", with_model(sched(beta_schedule="squaredcos_cap_v2"), *QUICK), VERDICT, ""),
]
