"""The ``hfaudit`` command line: parses flags, calls the library, renders. No logic lives here."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console

from hfaudit import interrupts
from hfaudit.constants import VERDICT_CACHE_ENV
from hfaudit.errors import ExitCode, HfAuditError, UsageError, exit_code_epilog

app = typer.Typer(
    name="hfaudit",
    help="Audit diffusion models on the Hugging Face Hub for backdoors, and repair them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold tokens
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},  # the app's and, inherited, every command's
)
err = Console(stderr=True)


def debug_enabled() -> bool:
    """``HF_DEBUG`` (huggingface_hub's switch) or ``HFAUDIT_DEBUG`` set: internal errors show their
    traceback, and huggingface_hub's and diffusers' logs are shown (info level)."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("HF_DEBUG", "HFAUDIT_DEBUG"))


def _print_version(value: bool) -> None:
    if value:
        from hfaudit import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the hfaudit version and exit.")] = False,
) -> None:
    """Audit diffusion models on the Hugging Face Hub for backdoors, and repair them."""

# Reusable option aliases (huggingface_hub's CLI convention).
RepoArg = Annotated[str, typer.Argument(help="Hub repo id (org/name), hf://org/name\\[@revision], https://huggingface.co/org/name\\[/tree/revision], or a local pipeline folder.", show_default=False)]
ModelsArg = Annotated[Optional[list[str]], typer.Argument(help="Hub repo id (org/name), hf://org/name\\[@revision], https://huggingface.co/org/name\\[/tree/revision], or a local pipeline folder; several: one report folder each under --output-dir, and a summary.", show_default=False, metavar="MODEL")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit on the Hub.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, mps... (default: Accelerate's choice).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random draw (same seed, same verdict).")]
AllowPickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Load pickle weights after a clean picklescan (weights_only=True). Off by default.")]
OutputDirOpt = Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Write PNGs (trigger, target, grids) and report.json/report.md here.")]
JsonOpt = Annotated[Optional[str], typer.Option("--json", help="Write the JSON report to this path ('-' for stdout).")]
MarkdownOpt = Annotated[Optional[str], typer.Option("--markdown", help="Write the Markdown report to this path ('-' for stdout).")]
SarifOpt = Annotated[Optional[str], typer.Option("--sarif", help="Write a SARIF 2.1.0 report (GitHub code scanning) to this path ('-' for stdout). Reports are also written when the audit stops on an error, with its findings.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary; the exit code still tells the verdict.")]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="Hugging Face token for private or gated repos (default: HF_TOKEN or the login cache; prefer those: a flag shows in the process list).", show_default=False)]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Hugging Face cache folder to download into and, with HF_HUB_OFFLINE=1, read from (default: HF_HUB_CACHE).", show_default=False)]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also print every candidate trigger under every sampler (the JSON report always holds them).")]


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]hfaudit: error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


FLAGS = {
    "n_samples": "--samples", "seed": "--seed", "threshold": "--threshold", "class_threshold": "--class-threshold",
    "batch_size": "--batch-size", "inversion.steps": "--inversion-steps", "probes": "--sampler", "device": "--device",
    "to": "--to", "prune_ratio": "--prune-ratio", "importance": "--importance", "steps": "--steps", "lr": "--lr",
    "data_dir": "--data", "budget": "--budget", "revision": "--revision", "cache_dir": "--cache-dir",
    "commit_message": "--commit-message", "private": "--private", "prompts": "--prompts", "base": "--base",
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
            msg = " ".join(str(exc).split())[:300]
            if debug_enabled():
                traceback.print_exc(file=sys.stderr)
                _fail(f"internal error: {type(exc).__name__}: {msg}", int(ExitCode.INTERNAL))
            _fail(f"internal error: {type(exc).__name__}: {msg} (set HF_DEBUG=1 for a traceback)", int(ExitCode.INTERNAL))

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


def _read_prompts(path: Path) -> tuple[str, ...]:
    """The prompts of ``--prompts``: one a line, blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--prompts {path}: cannot read it ({type(exc).__name__})", param="prompts") from None
    found = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if len(found) < 4:
        raise UsageError(f"--prompts {path}: needs at least 4 prompts, one a line (got {len(found)})",
                         param="prompts")
    return found


@app.command(epilog="Examples:\n\n  hfaudit scan examples/models/digits-baddiffusion -o audit\n\n"
                    "  hfaudit scan org/model --revision main --json report.json --sarif hfaudit.sarif\n\n"
                    + exit_code_epilog("scan"))
@handle_errors
def scan(
    models: ModelsArg = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = 0,
    budget: Annotated[str, typer.Option("--budget", help="How much the scan may spend: fast, default, thorough (every search at full size), or a number of UNet evaluations (a cap: searches that would pass it are skipped, and the report says so).")] = "default",
    samples: Annotated[Optional[int], typer.Option("--samples", help="Samples per full probe (MSCR resolution 1/N; default: the budget's).", show_default=False)] = None,
    sampler: Annotated[Optional[list[str]], typer.Option("--sampler", help="Probe sampler NAME[:STEPS] (ddpm, ddim, dpm, unipc); repeat for several. Default: the budget's (ddim:10 and a DDPM).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="MSCR at or above which the model is called backdoored.")] = None,
    class_threshold: Annotated[Optional[float], typer.Option("--class-threshold", help="Top-class share (digit-shaped models) at or above which the model is called backdoored (class-target backdoors).")] = None,
    inversion_steps: Annotated[Optional[int], typer.Option("--inversion-steps", help="Optimiser steps of the gradient inversion at t = T (turns it on; thorough runs it with 60).", show_default=False)] = None,
    inversion: Annotated[Optional[bool], typer.Option("--inversion/--no-inversion", help="Run the gradient inversion at t = T (Elijah-style objectives); default: the budget decides (thorough only).", show_default=False)] = None,
    blackbox: Annotated[Optional[bool], typer.Option("--blackbox/--no-blackbox", help="Invert triggers black-box, from samples alone, under DDPM and DDIM, for backdoors whose response to a trigger is not a linear shift; default: the budget decides (thorough only).", show_default=False)] = None,
    midstep: Annotated[Optional[bool], typer.Option("--midstep/--no-midstep", help="Run the mid-timestep inversion (the directions the model passes least of at 0.8 T) for SDE-trained backdoors; default: the budget decides.", show_default=False)] = None,
    ode: Annotated[Optional[bool], typer.Option("--ode/--no-ode", help="Run the ODE inversion (a mid-timestep direction refined through DDIM) for ODE-trained backdoors; default: the budget decides.", show_default=False)] = None,
    stamps: Annotated[Optional[bool], typer.Option("--stamps/--no-stamps", help="Screen stamps (noise regions overwritten with a constant) for patch triggers that replace the noise, like TrojDiff's; default: the budget decides.", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images denoised at once (default 64).", show_default=False)] = None,
    allow_pickle: AllowPickleOpt = False,
    output_dir: OutputDirOpt = None,
    json_path: JsonOpt = None,
    markdown: MarkdownOpt = None,
    sarif: SarifOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
    verdict_cache: Annotated[Optional[Path], typer.Option("--verdict-cache", envvar=VERDICT_CACHE_ENV, help="Folder of earlier verdicts: a scan of the same model bytes with the same settings and hfaudit is served from it, and a clean or backdoor verdict is stored in it. Whoever can write it can forge a verdict: keep it private to the audit.", show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Text-to-image pipelines: a file of probe prompts, one a line, that each candidate caption trigger is appended to (at least 4; default: built from the tokenizer's common words). Prompts of your model's own domain make the search sharper.", show_default=False)] = None,
    base: Annotated[str, typer.Option("--base", help="A base model to compare the weights with (which components changed, and how): a reading aid beside the verdict, never part of it. auto: the base the repo names, when it is a local folder; none: no comparison; or a repo id or folder to fetch and compare.")] = "auto",
    from_file: Annotated[Optional[str], typer.Option("--from", help="Also scan the models listed in this file ('-' for stdin): one repo id, URI or folder a line, '#' comments and blank lines skipped, duplicates once. Like several MODELs, it needs --output-dir.", show_default=False)] = None,
) -> None:
    """Detect a backdoor: invert a trigger from the model alone and test whether it collapses the samples."""
    if quiet:
        os.environ["HFAUDIT_QUIET"] = "1"
    from hfaudit import report
    from hfaudit.detect.budgets import configure
    from hfaudit.verdict_cache import cached_scan

    cfg = configure(budget, seed=seed, n_samples=samples, probes=_parse_probes(sampler), threshold=threshold,
                    class_threshold=class_threshold, batch_size=batch_size, inversion_steps=inversion_steps,
                    searches={"inversion": inversion, "blackbox": blackbox, "midstep": midstep, "ode": ode,
                              "stamps": stamps}, prompts=None if prompts is None else _read_prompts(prompts))
    cfg = replace(cfg, base=base.strip() or "auto")
    if from_file is not None or len(models or []) > 1:
        _scan_batch(list(models or []), from_file, output_dir=output_dir, files={"--json": json_path,
                    "--markdown": markdown, "--sarif": sarif}, quiet=quiet, revision=revision, token=token,
                    cache_dir=cache_dir, device=device, allow_pickle=allow_pickle, config=cfg,
                    verdict_cache=verdict_cache)
    if not models:
        raise UsageError("Missing argument 'MODEL': give a Hub repo id or a folder (several, or --from FILE, "
                         "for a batch)")
    model = models[0]
    outputs = report.Outputs(output_dir=output_dir, json_path=json_path, markdown_path=markdown, sarif_path=sarif,
                             source=model)
    outputs.check_writable()  # before any work: never into the model, onto a device, or two formats on stdout
    with outputs.guard(model, revision):  # error report on failure; nothing left behind on Ctrl-C
        outcome = cached_scan(model, outputs, verdict_cache=verdict_cache, revision=revision, token=token,
                              cache_dir=cache_dir, device=device, allow_pickle=allow_pickle, config=cfg)
    if not quiet:
        for note in outcome.notes:
            err.print(f"hfaudit: {note}", highlight=False, soft_wrap=True)
        if outcome.result is None:
            err.print(report.verdict_line(outcome.doc), highlight=False)
        else:
            report.render_rich(outcome.result, err, verbose=verbose, reports=[str(p) for p in outputs.file_paths])
    raise typer.Exit(outcome.exit_code)


def _scan_batch(models: list[str], from_file: str | None, *, output_dir: Path | None,
                files: dict[str, str | None], quiet: bool, **kwargs) -> None:
    """``scan`` with several models: parse the batch's flags, run ``batch.scan_many``, print, exit with the worst."""
    from hfaudit import batch, report

    if output_dir is None:
        raise UsageError("several models need --output-dir/-o: each gets its report folder under it, with "
                         "summary.json and summary.md beside them")
    given = [flag for flag, path in files.items() if path is not None]
    if given:
        raise UsageError(f"{', '.join(given)} name one report file, and several models are scanned: each "
                         "model's reports go to its folder under --output-dir, and summary.json lists them all")
    if from_file is not None:
        models += batch.read_sources(from_file)

    def progress(row: batch.ModelResult, i: int, n: int) -> None:
        for note in row.notes:
            err.print(f"hfaudit: {row.source}: {note}", highlight=False, soft_wrap=True, markup=False)
        err.print(f"[{i}/{n}] {row.source}: {row.headline}", style=report.VERDICT_STYLE.get(row.verdict),
                  highlight=False, soft_wrap=True, markup=False)

    result = batch.scan_many(models, output_dir, on_result=None if quiet else progress, **kwargs)
    if not quiet and result.is_main_process:
        for source in result.duplicates:
            err.print(f"hfaudit: {source}: listed more than once; scanned once", highlight=False, soft_wrap=True,
                      markup=False)
        err.print(batch.summary_table(result))
        err.print("summary: " + ", ".join(str(p) for p in result.summary_files), highlight=False, soft_wrap=True,
                  markup=False)
    raise typer.Exit(result.process_exit_code)


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
    commit_message: Annotated[Optional[str], typer.Option("--commit-message", help="One-line message of the pushed commit. A new pull request keeps hfaudit's title, so a later run finds it, and starts its description with this message.")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push --to: create the repo private (refused for an existing public repo, and without --to).")] = False,
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
    token: TokenOpt = None,
    cache_dir: CacheDirOpt = None,
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
    result = run_clean(model, output_dir=output_dir, revision=revision, token=token, cache_dir=cache_dir,
                       device=device, force=force,
                       prune_ratio=prune_ratio, importance=importance, steps=steps, lr=lr, batch_size=batch_size,
                       data_dir=data, push=push, to=to, report_paths=reports.file_paths,
                       commit_message=commit_message, private=private,
                       scan_config=ScanConfig(seed=seed), seed=seed)
    report.write_clean_reports(result, json_path=reports.json_path, markdown_path=reports.markdown_path,
                               sarif_path=reports.sarif_path)
    if not quiet:
        report.render_clean_rich(result, err, reports=[str(p) for p in reports.file_paths])
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
    """huggingface_hub logs retries and diffusers logs hints on stderr; our errors must stay one line.
    With ``HF_DEBUG``/``HFAUDIT_DEBUG`` (:func:`debug_enabled`) both log at info level instead."""
    from huggingface_hub.utils import logging as hf_logging

    debug = debug_enabled()
    (hf_logging.set_verbosity_info if debug else hf_logging.set_verbosity_error)()
    try:
        from diffusers.utils import logging as diffusers_logging

        (diffusers_logging.set_verbosity_info if debug else diffusers_logging.set_verbosity_error)()
    except ImportError:  # diffusers missing: the command will say so itself
        pass


if __name__ == "__main__":
    main()
