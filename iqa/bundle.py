"""`python -m iqa bundle`: make a trained checkpoint the bundled default (`checkpoints/default`).

The copy's model card gains the held-out results: the levels test of `python -m iqa levels` (the
default's gate: does the score fall as distortions grow on unseen photos, beside BRISQUE and NIQE)
and/or the crop report of `python -m iqa report --json` (SRCC against pseudo-MOS, the peers, its
checks), and says whether every check passed. A checkpoint that
fails them can still be bundled, as *provisional*: the app and `python -m iqa score` then say so
wherever it is used, with its held-out SRCC, instead of silently presenting it as a finished model.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from iqa.assess import DEFAULT_CHECKPOINT, RESTORE_ON, override_diffusion
from iqa.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SRCC_AGREEMENT = 1e-3  # the report and the run's own test SRCC on the same images must agree this closely
SHOWN_METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "n")


def evaluation(report: dict[str, Any]) -> dict[str, Any]:
    """The card's `evaluation` entry from a report JSON: main model, peers, checks."""
    methods = report.get("methods") or []
    if not methods:
        raise ValueError("the report holds no method; run `python -m iqa report --method NAME=RUN --json ...`")
    main = methods[0]
    checks = report.get("checks") or []
    return {
        "method": main["name"],
        "command": report.get("command"),
        "split_file": report.get("split_file"),
        "test_images": report.get("n_test"),
        "test_photos": report.get("n_groups"),
        "test": {k: main["overall"][k] for k in SHOWN_METRICS if k in main["overall"]},
        "score_falls_with_level_monotone_kinds": main.get("monotone_kinds_share"),
        "others": {m["name"]: m["overall"]["srcc"] for m in methods[1:]},
        "kind_level_oracle_srcc": report.get("kind_level_oracle_srcc"),
        "labels": "full-reference pseudo-MOS of a synthetic set, not human opinion",
        "checks": checks,
        "passed": bool(checks) and all(c["passed"] for c in checks),
    }


LEVELS_SRCC_MIN = 0.70  # crop-report SRCC a default must also reach beside the levels gate
LEVELS_CHECKS = {
    "plain_mean": "mean ρ over the six plain kinds ≥ {plain_mean}",
    "plain_each": "every plain kind's mean ρ ≥ {plain_each}",
    "kadid_monotone_mean": "mean ρ over the monotone KADID kinds ≥ {kadid_monotone_mean}",
    "adjacent": "adjacent levels ordered ≥ {adjacent}",
    "clean_above_level1": "clean photo above its level-1 version in ≥ {clean_above_level1} of the series",
}
LEVELS_SHOWN = ("rho", "plain_rho", "kadid_monotone_rho", "adjacent", "clean_above_all", "clean_above_level1",
                "series")


def levels_evaluation(levels: dict[str, Any], digest: str, method: str | None = None) -> dict[str, Any]:
    """The card's `evaluation.levels` entry from a levels JSON, for the checkpoint whose weights
    have SHA-256 `digest` (the first checkpoint row unless `method` names one)."""
    rows = levels.get("results") or []
    ours = [r for r in rows if r.get("weights")] if method is None else [r for r in rows if r["method"] == method]
    if not ours:
        raise ValueError("the levels file holds no checkpoint row" + (f" named {method!r}" if method else ""))
    main = ours[0]
    if main["weights"] != digest:
        raise ValueError(f"the levels row {main['method']!r} was measured on other weights than this checkpoint's; "
                         "run `python -m iqa levels --checkpoint NAME=THIS_CHECKPOINT` and pass that file")
    thresholds = levels.get("gate_thresholds") or {}
    checks = [{"text": f"levels: {text.format(**thresholds)}", "passed": bool(main["gate"][key])}
              for key, text in LEVELS_CHECKS.items()]
    return {"command": levels.get("command"), "photos": len(levels.get("photos") or []),
            "kinds": levels.get("kinds"), "monotone_kinds": levels.get("monotone_kinds"), "crops": main.get("crops"),
            "method": main["method"], **{k: main[k] for k in LEVELS_SHOWN}, "per_kind": main["per_kind"],
            "others": {r["method"]: {k: r[k] for k in LEVELS_SHOWN} for r in rows if r is not main},
            "checks": checks}


def is_provisional(card: dict[str, Any]) -> bool:
    """True for a checkpoint bundled although it failed the acceptance checks of its report."""
    ev = card.get("evaluation")
    return isinstance(ev, dict) and ev.get("passed") is False


def provisional_note(card: dict[str, Any]) -> str:
    """One sentence for users of a provisional checkpoint ('' for any other)."""
    if not is_provisional(card):
        return ""
    ev = card["evaluation"]
    lv = ev.get("levels")
    if isinstance(lv, dict) and isinstance(lv.get("rho"), (int, float)):
        return (f"provisional model: on unseen photos its score falls with the distortion level at mean "
                f"ρ {lv['rho']:.3f} ({lv.get('photos')} photos, {len(lv.get('kinds') or [])} kinds), short of the "
                "project's acceptance checks (docs/LEVELS.md). Treat scores as a rough ranking.")
    srcc = (ev.get("test") or {}).get("srcc")
    shown = f"{srcc:.2f}" if isinstance(srcc, (int, float)) else "unknown"
    return (f"provisional model: held-out SRCC {shown} against synthetic pseudo-MOS, below the project's "
            "acceptance checks (docs/RESULTS.md). Treat scores as a rough ranking.")


def _relative_paths(obj: Any, base: str) -> Any:
    """`obj` with strings under `base` made relative (a committed card should not name a build machine)."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, base) for v in obj]
    if isinstance(obj, str) and obj.startswith(base):
        return obj[len(base):] or "."
    return obj


def bundle(checkpoint: str | Path, report_json: str | Path | None = None, out: str | Path = DEFAULT_CHECKPOINT,
           levels_json: str | Path | None = None, levels_method: str | None = None,
           diffusion_on: str | None = None, diffusion_scale: int | None = None,
           full_res_steps: int | None = None) -> dict[str, Any]:
    """Copy `checkpoint` to `out` with its held-out results in the card (and, with `diffusion_on` /
    `diffusion_scale` / `full_res_steps`, those settings of `DiffusionConfig.on` / `.unet_scale` /
    `.full_res_steps` in its config); returns the new card."""
    if report_json is None and levels_json is None:
        raise ValueError("name the held-out results: --levels (python -m iqa levels) and/or --report "
                         "(python -m iqa report --json)")
    model, card = load_checkpoint(checkpoint)
    if report_json is not None:
        ev = evaluation(json.loads(Path(report_json).read_text()))
        own = (card.get("metrics") or {}).get("test") or {}
        if (own.get("n") == ev["test"].get("n")
                and abs(own.get("srcc", 0) - ev["test"].get("srcc", 0)) > SRCC_AGREEMENT):
            raise ValueError(f"{report_json}: its main model (test SRCC {ev['test']['srcc']:.4f}) is not "
                             f"{checkpoint} (test SRCC {own['srcc']:.4f} on the same {own['n']} images); "
                             "pass the matching report")
    if levels_json is not None:
        from iqa.levels import weights_digest
        lv = levels_evaluation(json.loads(Path(levels_json).read_text()), weights_digest(checkpoint), levels_method)
        if report_json is None:
            ev = {"method": lv["method"], "test": {}, "labels": "full-reference pseudo-MOS (levels test: level order)",
                  "checks": [{"text": f"crop report SRCC vs pseudo-MOS ≥ {LEVELS_SRCC_MIN}: not measured "
                              "(run `python -m iqa report` and bundle with --report)", "passed": False}]}
        ev["levels"] = lv
        ev["checks"] = lv["checks"] + ev["checks"]
        ev["passed"] = all(c["passed"] for c in ev["checks"])
    override_diffusion(model.cfg.diffusion, diffusion_on, diffusion_scale, full_res_steps)
    card = _relative_paths(card, str(Path.cwd()) + "/")
    card["evaluation"] = ev
    card["bundled"] = {"from": str(checkpoint), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    save_checkpoint(model, out, card)
    return card


def register(sub: argparse._SubParsersAction) -> None:
    from iqa.score import add_diffusion_scale_option  # iqa.score imports this module
    p = sub.add_parser("bundle", help="make a trained checkpoint the bundled default, its held-out report in the card",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder (e.g. runs/lite/best)")
    p.add_argument("--report", default=None, help="JSON written by `python -m iqa report --json`")
    p.add_argument("--levels", default=None, help="levels.json written by `python -m iqa levels` (the default's gate)")
    p.add_argument("--levels-method", default=None,
                   help="its row for this checkpoint (default: the first checkpoint row)")
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="destination folder (default: checkpoints/default)")
    p.add_argument("--diffusion-on", default=None, choices=RESTORE_ON,
                   help="where the bundled model's diffusion runs (default: the checkpoint's setting); "
                        "the levels run should use the same (`levels --diffusion-on`)")
    add_diffusion_scale_option(p, "the checkpoint's")  # the levels run should use the same settings
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        card = bundle(args.checkpoint, args.report, args.out, args.levels, args.levels_method, args.diffusion_on,
                      args.diffusion_scale, args.full_res_steps)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ev = card["evaluation"]
    if "srcc" in ev["test"]:
        print(f"{args.out}: bundled from {args.checkpoint}; held-out SRCC {ev['test']['srcc']:.3f} "
              f"({ev['method']}, {ev['test_images']} images)")
    if lv := ev.get("levels"):
        print(f"{args.out}: bundled from {args.checkpoint}; levels test mean ρ {lv['rho']:.3f} "
              f"(plain kinds {lv['plain_rho']:.3f}, {lv['photos']} photos)")
    for c in ev["checks"]:
        print(f"  {'yes' if c['passed'] else 'NO '}  {c['text']}")
    if not ev["passed"]:
        print("  -> bundled as PROVISIONAL: the app and the CLI will say so when they use it")
    return 0
