"""`python -m iqa bundle`: make a trained checkpoint the bundled default (`checkpoints/default`).

The copy's model card gains the held-out report of `python -m iqa report --json` (the main model's
numbers, the peers', the acceptance checks) and says whether the checks passed. A checkpoint that
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

from iqa.assess import DEFAULT_CHECKPOINT
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


def is_provisional(card: dict[str, Any]) -> bool:
    """True for a checkpoint bundled although it failed the acceptance checks of its report."""
    ev = card.get("evaluation")
    return isinstance(ev, dict) and ev.get("passed") is False


def provisional_note(card: dict[str, Any]) -> str:
    """One sentence for users of a provisional checkpoint ('' for any other)."""
    if not is_provisional(card):
        return ""
    srcc = (card["evaluation"].get("test") or {}).get("srcc")
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


def bundle(checkpoint: str | Path, report_json: str | Path, out: str | Path = DEFAULT_CHECKPOINT) -> dict[str, Any]:
    """Copy `checkpoint` to `out` with the report in its card; returns the new card."""
    model, card = load_checkpoint(checkpoint)
    ev = evaluation(json.loads(Path(report_json).read_text()))
    own = (card.get("metrics") or {}).get("test") or {}
    if own.get("n") == ev["test"].get("n") and abs(own.get("srcc", 0) - ev["test"].get("srcc", 0)) > SRCC_AGREEMENT:
        raise ValueError(f"{report_json}: its main model (test SRCC {ev['test']['srcc']:.4f}) is not {checkpoint} "
                         f"(test SRCC {own['srcc']:.4f} on the same {own['n']} images); pass the matching report")
    card = _relative_paths(card, str(Path.cwd()) + "/")
    card["evaluation"] = ev
    card["bundled"] = {"from": str(checkpoint), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    save_checkpoint(model, out, card)
    return card


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="make a trained checkpoint the bundled default, its held-out report in the card",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder (e.g. runs/lite/best)")
    p.add_argument("--report", required=True, help="JSON written by `python -m iqa report --json`")
    p.add_argument("--out", default=str(DEFAULT_CHECKPOINT), help="destination folder (default: checkpoints/default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        card = bundle(args.checkpoint, args.report, args.out)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ev = card["evaluation"]
    print(f"{args.out}: bundled from {args.checkpoint}; held-out SRCC {ev['test'].get('srcc', float('nan')):.3f} "
          f"({ev['method']}, {ev['test_images']} images)")
    for c in ev["checks"]:
        print(f"  {'yes' if c['passed'] else 'NO '}  {c['text']}")
    if not ev["passed"]:
        print("  -> bundled as PROVISIONAL: the app and the CLI will say so when they use it")
    return 0
