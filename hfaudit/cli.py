"""The ``hfaudit`` command line: parses flags, calls the library, renders. No logic lives here."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from hfaudit import interrupts
from hfaudit.errors import ExitCode, HfAuditError, UsageError, exit_code_epilog

app = typer.Typer(
    name="hfaudit",
    help="Audit diffusion models on the Hugging Face Hub for backdoors, and repair them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold tokens
    rich_markup_mode="rich",
)
err = Console(stderr=True)

# Reusable option aliases (huggingface_hub's CLI convention).
RepoArg = Annotated[str, typer.Argument(help="Hub repo id (org/name) or a local pipeline folder.", show_default=False)]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit on the Hub.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, mps... (default: Accelerate's choice).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random draw (same seed, same verdict).")]
AllowPickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Load pickle weights after a clean picklescan (weights_only=True). Off by default.")]
OutputDirOpt = Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Write PNGs (trigger, target, grids) and report.json/report.md here.")]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to this path ('-' for stdout).")]
MarkdownOpt = Annotated[Optional[str], typer.Option("--markdown", help="Write the Markdown report to this path ('-' for stdout).")]
SarifOpt = Annotated[Optional[str], typer.Option("--sarif", help="Write a SARIF 2.1.0 report (GitHub code scanning) to this path ('-' for stdout). Reports are also written when the audit stops on an error, with its findings.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or table; the exit code still tells the verdict.")]


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]hfaudit: error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


FLAGS = {
    "n_samples": "--samples", "seed": "--seed", "threshold": "--threshold", "class_threshold": "--class-threshold",
    "batch_size": "--batch-size", "inversion.steps": "--inversion-steps", "probes": "--sampler", "device": "--device",
    "to": "--to", "prune_ratio": "--prune-ratio", "importance": "--importance", "steps": "--steps", "lr": "--lr",
    "data_dir": "--data",
}
"""The flag each library parameter is set by: library errors name the parameter, the CLI its flag."""


def _as_flags(exc: HfAuditError) -> str:
    """The one-line message of ``exc`` with the parameter it names written as its flag."""
    text = str(exc)
    param = getattr(exc, "param", None)
    if param in FLAGS and text.startswith(param):
        return FLAGS[param] + text[len(param):]
    return text


def handle_errors(fn: Callable) -> Callable:
    """Turn every error into one line on stderr and its exit code: the one place that does so."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            interrupts.check()
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except HfAuditError as exc:
            _fail(_as_flags(exc), int(exc.exit_code))
        except KeyboardInterrupt:
            _fail("interrupted; partial outputs were removed", int(ExitCode.INTERRUPTED))
        except MemoryError:
            _fail("out of memory; try --batch-size smaller or --samples fewer", int(ExitCode.INTERNAL))
        except Exception as exc:  # a bug: still one line, traceback only on request
            if os.environ.get("HFAUDIT_DEBUG"):
                raise
            msg = " ".join(str(exc).split())[:300]
            _fail(f"internal error: {type(exc).__name__}: {msg} (set HFAUDIT_DEBUG=1 for a traceback)", int(ExitCode.INTERNAL))

    return wrapper


def _parse_probes(values: list[str] | None) -> tuple[tuple[str, int], ...] | None:
    if not values:
        return None
    probes = []
    for v in values:
        name, _, steps = v.partition(":")
        try:
            n = int(steps) if steps else 20
        except ValueError:
            raise UsageError(f"--sampler {v!r}: expected NAME or NAME:STEPS, e.g. ddim:10") from None
        probes.append((name.strip().lower(), n))
    return tuple(probes)


@app.command(epilog="Examples:\n\n  hfaudit scan examples/models/digits-baddiffusion -o audit\n\n"
                    "  hfaudit scan org/model --revision main --json report.json --sarif hfaudit.sarif\n\n"
                    + exit_code_epilog("scan"))
@handle_errors
def scan(
    model: RepoArg,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    samples: Annotated[int, typer.Option("--samples", help="Samples per probe (MSCR resolution 1/N).")] = 32,
    sampler: Annotated[Optional[list[str]], typer.Option("--sampler", help="Probe sampler NAME[:STEPS] (ddpm, ddim, dpm, unipc); repeat for several. Default: ddim:10 and ddpm:50.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="MSCR at or above which the model is called backdoored.")] = None,
    class_threshold: Annotated[Optional[float], typer.Option("--class-threshold", help="Top-class share (digit-shaped models) at or above which the model is called backdoored (class-target backdoors).")] = None,
    inversion_steps: Annotated[int, typer.Option("--inversion-steps", help="Optimiser steps of the trigger inversion (all restarts run at once).")] = 60,
    blackbox: Annotated[bool, typer.Option("--blackbox/--no-blackbox", help="Also invert triggers black-box, from samples alone, under DDPM and DDIM, for backdoors whose response to a trigger is not a linear shift (--no-blackbox skips its searches and their probes).")] = True,
    midstep: Annotated[bool, typer.Option("--midstep/--no-midstep", help="Also run the mid-timestep inversion (the directions the model passes least of at 0.8 T) for SDE-trained backdoors, which the inversion at T cannot single out (--no-midstep skips its searches and their probes).")] = True,
    ode: Annotated[bool, typer.Option("--ode/--no-ode", help="Also run the ODE inversion (a mid-timestep direction refined through DDIM) for ODE-trained backdoors, which the other inversions miss (--no-ode skips its search and its probes).")] = True,
    stamps: Annotated[bool, typer.Option("--stamps/--no-stamps", help="Also screen stamps (noise regions overwritten with a constant) for patch triggers that replace the noise, like TrojDiff's, which no additive search reaches (--no-stamps skips the screen and its probes).")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images denoised at once.")] = 64,
    allow_pickle: AllowPickleOpt = False,
    output_dir: OutputDirOpt = None,
    json_path: JsonOpt = None,
    markdown: MarkdownOpt = None,
    sarif: SarifOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Detect a backdoor: invert a trigger from the model alone and test whether it collapses the samples."""
    if quiet:
        os.environ["HFAUDIT_QUIET"] = "1"
    from hfaudit import report
    from hfaudit.detect.blackbox import default_searches
    from hfaudit.detect.inversion import InversionConfig
    from hfaudit.detect.midstep import MidstepConfig
    from hfaudit.detect.ode import OdeInversionConfig
    from hfaudit.detect.scan import DEFAULT_CLASS_THRESHOLD, DEFAULT_THRESHOLD, ScanConfig
    from hfaudit.detect.scan import scan as run_scan
    from hfaudit.detect.stamps import StampConfig

    cfg = ScanConfig(seed=seed, n_samples=samples, threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                     class_threshold=DEFAULT_CLASS_THRESHOLD if class_threshold is None else class_threshold,
                     batch_size=batch_size, inversion=InversionConfig(steps=inversion_steps),
                     blackbox=default_searches() if blackbox else None,
                     midstep=MidstepConfig() if midstep else None,
                     ode=OdeInversionConfig() if ode else None,
                     stamps=StampConfig() if stamps else None)
    probes = _parse_probes(sampler)
    if probes:
        cfg.probes = probes
    cfg.validate()
    outputs = report.Outputs(output_dir=output_dir, json_path=json_path, markdown_path=markdown, sarif_path=sarif,
                             source=model)
    outputs.check_writable()  # before any work: never into the model, onto a device, or two formats on stdout
    with outputs.guard(model, revision):  # error report on failure; nothing left behind on Ctrl-C
        result = run_scan(model, revision=revision, device=device, allow_pickle=allow_pickle, config=cfg)
        outputs.write_scan(result)
    if not quiet:
        report.render_rich(result, err)
    raise typer.Exit(int(result.exit_code))


@app.command()
def version() -> None:
    """Print the hfaudit version."""
    from hfaudit import __version__

    typer.echo(__version__)


@app.command(epilog="Examples:\n\n  hfaudit clean examples/models/digits-baddiffusion -o cleaned\n\n"
                    "  hfaudit clean org/model -o cleaned --push                  (a pull request on org/model)\n\n"
                    "  hfaudit clean org/model -o cleaned --push --to me/model-cleaned\n\n"
                    + exit_code_epilog("clean"))
@handle_errors
def clean(
    model: RepoArg,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the cleaned pipeline, its model card, report and PNGs (new, empty, or a previous hfaudit output).", show_default=False)],
    revision: RevisionOpt = None,
    push: Annotated[bool, typer.Option("--push", help="Push the output in one commit: to --to, else as a pull request on the source repo.")] = False,
    to: Annotated[Optional[str], typer.Option("--to", help="Repo (org/name) to create or update with --push.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Clean even when the scan finds no backdoor, and write/push even when a check fails (exit code 6 still says so).")] = False,
    prune_ratio: Annotated[float, typer.Option("--prune-ratio", help="Share of channels to zero.")] = 0.02,
    importance: Annotated[str, typer.Option("--importance", help="Channel importance: backdoor or backdoor-minus-clean.")] = "backdoor",
    steps: Annotated[Optional[int], typer.Option("--steps", help="Fine-tuning steps of the first round (default 1000).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Fine-tuning learning rate (default 1e-3).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Fine-tuning batch size (default 32).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Folder of clean images to fine-tune on (default: images the model generates from clean noise).")] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    json_path: JsonOpt = None,
    markdown: Annotated[Optional[str], typer.Option("--markdown", help="Write the Markdown report (the model card's text) to this path ('-' for stdout).")] = None,
    sarif: Annotated[Optional[str], typer.Option("--sarif", help="Write SARIF 2.1.0 with the findings of the scan of the source model to this path ('-' for stdout).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Remove a detected backdoor: prune the channels that carry it, fine-tune, verify, write a safetensors copy."""
    if quiet:
        os.environ["HFAUDIT_QUIET"] = "1"
    from hfaudit import report
    from hfaudit.cleaning import clean as run_clean
    from hfaudit.detect.scan import ScanConfig

    if to is not None and not push:
        raise UsageError("--to only applies with --push")
    reports = report.Outputs(json_path=json_path, markdown_path=markdown, sarif_path=sarif, source=model)
    reports.check_writable()  # -o is checked by clean itself, before any work too
    result = run_clean(model, output_dir=output_dir, revision=revision, device=device, force=force,
                       prune_ratio=prune_ratio, importance=importance, steps=steps, lr=lr, batch_size=batch_size,
                       data_dir=data, push=push, to=to, report_paths=reports.file_paths,
                       scan_config=ScanConfig(seed=seed), seed=seed)
    report.write_clean_reports(result, json_path=reports.json_path, markdown_path=reports.markdown_path,
                               sarif_path=reports.sarif_path)
    if not quiet:
        report.render_clean_rich(result, err)
    raise typer.Exit(int(result.exit_code))


def main() -> None:
    """Console-script entry point."""
    interrupts.install()  # SIGTERM (a cancelled CI job) cleans up like Ctrl-C
    try:
        # Inside the try: importing the libraries takes seconds, and a Ctrl-C there is still a clean exit.
        _quiet_library_logs()
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        # handle_errors cleans up during a command; this catches an interrupt before or between commands.
        err.print("[bold red]hfaudit: error:[/] interrupted; partial outputs were removed", highlight=False)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # Typer's parse errors (bad flag, missing argument): one line, exit 2
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        msg = " ".join(exc.format_message().split())
        err.print(f"[bold red]hfaudit: error:[/] {msg} (see 'hfaudit --help')", highlight=False, soft_wrap=True)
        sys.exit(int(exc.exit_code))
    sys.exit(int(code or 0))


def _quiet_library_logs() -> None:
    """huggingface_hub logs retries and diffusers logs hints on stderr; our errors must stay one line."""
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
    except ImportError:  # diffusers missing: the command will say so itself
        pass


if __name__ == "__main__":
    main()
