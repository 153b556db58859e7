"""Can the quality heads alone learn to order the levels better? A heads-only fine-tune on cached features.

The bundled default still puts a level-1 version of its own training photos at or above the clean photo
in some series. This probe freezes the diffusion and the backbones, computes once the features of the
levels series (clean + 6 plain kinds x 5 levels, as `python -m iqa levels` makes them) of the training
photos (`--train-crops` fixed crops, distortion seed `--train-seed`, so the realisations differ from the
held-out runs) and of the held-out photos of `--part` (whole-image tiles, noise seed 0: the same images
and states as `python -m iqa levels --crops 0 --noise-seed 0`), then trains only the VCG and VDA heads
on them: the hinge of `train-rank` over every ordered pair of a series (per crop position), plus an
anchor, the MSE of the crop scores and VCG patch scores to the start's own (`--checkpoint`, by default
the bundled default), which keeps the scale and the maps close. With `--mos DIR` (a `python -m iqa synth`
folder of the training photos' crops) each step also regresses `--mos-batch` crop scores to their
pseudo-MOS, for calibration across the 25 kinds; `--mos-val DIR` (the same of the held-out photos) prints
that SRCC after each epoch. `--kinds` widens the series beyond the 6 plain kinds (e.g. to the 25 KADID ones);
the criterion stays on the plain kinds, and the other kinds' mean rho is printed beside it. After each epoch it
prints the levels test on both sets; nothing here changes the bundled model.

    python scripts/heads_probe.py --photos ../shared/pristine --cache runs/heads-probe --epochs 3

Features are cached under `--cache`, one folder per checkpoint's frozen weights (diffusion and
backbones; a checkpoint this probe saved shares its start's), one file per photo as it is done (a stopped
run resumes with the photo it stopped on), and reused: about 1 GB per set of 3 crops, 7 GB for the
training photos' tiles (`--train-crops 0`), which also want `--series-per-batch 1` (a batch of 6 series of
~15 tiles each outgrows 24 GB of memory). `--train-limit N` computes and uses the first N training photos only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iqa.assess import DEFAULT_CHECKPOINT, TILE, Assessor, crop_boxes, load, to_tensor
from iqa.checkpoint import read_metadata, save_checkpoint, weights_path
from iqa.data.datasets import load_dataset
from iqa.data.stream import held_out_photos
from iqa.images import load_image
from iqa.levels import (PLAIN_KINDS, MethodLevels, distorted, parse_kinds, series_result, summarise,
                        weights_digest)
from iqa.metrics import correlations
from iqa.progress import progress_bar

LEVELS = 5
CHUNK = 256  # crops a forward pass when scoring cached features
HEADS = ("vcg", "vda")  # the trained modules; every other tensor is frozen and shapes the cached features


@dataclass
class Series:
    """One (photo, kind) series: features of the clean image and its 5 levels."""

    photo: str
    kind: str
    vcg: torch.Tensor  # (6, K, C, g, g) float16
    vda: torch.Tensor  # (6, K, 4, D)


@dataclass
class Crops:
    """Synthetic crops (one 224-px crop each) with their pseudo-MOS (0-1, the scale of the scores)."""

    vcg: torch.Tensor  # (N, C, g, g) float16
    vda: torch.Tensor  # (N, 4, D)
    mos: torch.Tensor  # (N,)


@dataclass
class ProbeLevels:
    """The levels test on cached features: the plain kinds' summary (the probe's criterion) and, when the series
    hold other kinds too, their mean rho."""

    plain: MethodLevels
    other_rho: float = float("nan")


def frozen_digest(path: str | Path) -> str:
    """SHA-256 of the checkpoint's frozen tensors (all but the heads): the key of its cached features."""
    h = hashlib.sha256()
    with safe_open(str(weights_path(path)), "pt") as f:
        for name in sorted(k for k in f.keys() if k.split(".")[0] not in HEADS):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def features(a: Assessor, img, crops: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, C, g, g) float16 VCG and (K, 4, D) VDA features of the image's crops, noise seed 0."""
    h, w = img.shape[:2]
    boxes = crop_boxes(w, h, a.cfg.crop, crops, a.cell)
    with torch.inference_mode():
        states, _ = a.restore(to_tensor(img), boxes, None, 0)
        crop_states = torch.stack([torch.stack([s[0, :, y0:y1, x0:x1] for s in states]) for x0, y0, x1, y1 in boxes])
        f = a.model.features(crop_states)
    return f.vcg.half(), f.vda.float()


def _save_cache(obj, path: Path, seconds: float) -> None:
    """Save cached features, with how long they took beside them (`path`.json), for the model card."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    path.with_suffix(".json").write_text(json.dumps({"seconds": round(seconds), "threads": torch.get_num_threads()}))


def cache_seconds(paths: list[Path]) -> float | None:
    """Seconds the cached features at `paths` took to compute (None if one of them has no record)."""
    side = [p.with_suffix(".json") for p in paths]
    return sum(json.loads(s.read_text())["seconds"] for s in side) if all(s.is_file() for s in side) else None


def cache_files(path: Path, photos: list[Path]) -> list[Path]:
    """Where the series of `photos` are cached: one file for all (`path`, the older layout) when it exists, else one
    file a photo in the folder `path` less its suffix, named by the photo's place in the split (its distortion seed)."""
    if path.is_file():
        return [path]
    return [path.with_suffix("") / f"{pi:03d}-{p.name}.pt" for pi, p in enumerate(photos)]


def build(a: Assessor, photos: list[Path], kinds: list[str], crops: int, seed: int, path: Path) -> list[Series]:
    """The series of `photos`, one per kind in `kinds`, read from their cache files where these exist; the others
    are computed and saved photo by photo, so a stopped build loses one photo at most."""
    if path.is_file():
        names = {p.name for p in photos}
        return [Series(**d) for d in torch.load(path, weights_only=True) if d["photo"] in names]
    out, t0 = [], time.time()
    for pi, (p, part) in enumerate(zip(photos, cache_files(path, photos))):
        if part.is_file():
            out += [Series(**d) for d in torch.load(part, weights_only=True)]
            continue
        t1, img = time.time(), load_image(p).array
        clean, mine = features(a, img, crops), []
        for kind in kinds:
            items = [clean] + [features(a, distorted(img, kind, lv, seed, pi), crops) for lv in range(1, LEVELS + 1)]
            mine.append(Series(p.name, kind, torch.stack([v for v, _ in items]), torch.stack([d for _, d in items])))
        _save_cache([vars(s) for s in mine], part, time.time() - t1)
        out += mine
        print(f"{path.stem}: {pi + 1}/{len(photos)} photos, {time.time() - t0:.0f} s", flush=True)
    return out


def build_crops(a: Assessor, folder: str, path: Path) -> Crops:
    """The features and pseudo-MOS of the synthetic set in `folder`, from `path` when cached there."""
    if path.is_file():
        return Crops(**torch.load(path, weights_only=True))
    records, t0 = load_dataset(folder, "generic").records, time.time()
    vcg, vda = [], []
    for i, r in enumerate(records):
        v, d = features(a, load_image(r.image).array, 1)
        vcg.append(v), vda.append(d)
        if (i + 1) % 500 == 0:
            print(f"{path.name}: {i + 1}/{len(records)} crops, {time.time() - t0:.0f} s", flush=True)
    mos = torch.tensor([r.raw for r in records])  # pseudo-MOS as written (`r.mos` is min-max rescaled)
    out = Crops(torch.cat(vcg), torch.cat(vda), mos)
    _save_cache(vars(out), path, time.time() - t0)
    return out


def _label_digest(folder: str) -> str:
    """Short SHA-256 of a synth folder's meta.csv: its cached features' name."""
    return hashlib.sha256((Path(folder) / "meta.csv").read_bytes()).hexdigest()[:12]


def crop_srcc(a: Assessor, crops: Crops, name: str) -> float:
    """SRCC of the heads' crop scores against pseudo-MOS, and one printed line."""
    a.model.eval()
    with torch.no_grad():
        pred = torch.cat([heads(a, crops.vcg[i:i + CHUNK], crops.vda[i:i + CHUNK])[0]
                          for i in range(0, len(crops.mos), CHUNK)])
    srcc = correlations(pred.numpy(), crops.mos.numpy()).srcc
    print(f"{name}: SRCC against pseudo-MOS {srcc:.4f} ({len(crops.mos)} crops)", flush=True)
    return srcc


def _sum(r: MethodLevels) -> float:
    """The probe's criterion: mean rho + adjacent levels ordered + clean above level 1."""
    return r.rho + r.adjacent + r.clean_above_level1


def kinds_tag(kinds: list[str]) -> str:
    """The cache names' mark of a kind list: empty for the plain kinds (so that older caches stay valid)."""
    return "" if kinds == list(PLAIN_KINDS) else "-kinds" + hashlib.sha256(",".join(kinds).encode()).hexdigest()[:8]


def heads(a: Assessor, vcg: torch.Tensor, vda: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(crop scores (N,), VCG patch scores (N, g, g)) of the heads on cached features."""
    s1, f1, _ = a.model.vcg(vcg.float())
    s2, _, _ = a.model.vda(vda.float())
    return a.cfg.vcg_weight * s1 + a.cfg.vda_weight * s2, f1


def levels(a: Assessor, series: list[Series], name: str) -> ProbeLevels:
    """The levels test on cached features (image score = mean of its crops') and one printed line: the plain
    kinds' summary, the other kinds' mean rho, then every kind's."""
    a.model.eval()
    with torch.no_grad():
        res = [series_result(s.photo, s.kind, [float(heads(a, s.vcg[i], s.vda[i])[0].mean())
                                               for i in range(LEVELS + 1)]) for s in series]
    r = summarise(name, [x for x in res if x.kind in PLAIN_KINDS])
    other = [x.rho for x in res if x.kind not in PLAIN_KINDS]
    out = ProbeLevels(r, float(np.mean(other)) if other else float("nan"))
    print(f"{name}: mean rho {r.rho:.3f}, adjacent {r.adjacent:.3f}, clean above level 1 {r.clean_above_level1:.3f}, "
          f"sum {_sum(r):.3f}; " + (f"other kinds mean rho {out.other_rho:.3f}; " if other else "")
          + ", ".join(f"{k} {v:.3f}" for k, v in summarise(name, res).per_kind.items()),
          flush=True)
    return out


def passes(r: ProbeLevels, start: ProbeLevels, args) -> bool:
    """The save criterion: the plain kinds' sum `args.min_gain` above the start's and, with other kinds, their
    mean rho `args.min_other_gain` above it."""
    other = np.isnan(start.other_rho) or r.other_rho >= start.other_rho + args.min_other_gain
    return _sum(r.plain) >= _sum(start.plain) + args.min_gain and bool(other)


def card(args, epoch: int, feature_seconds: float | None, train_seconds: float) -> dict:
    """The saved checkpoint's model card: the start's training history, then this fine-tune and its compute
    (feature caching, None when not recorded, plus the epochs up to this one)."""
    init = args.checkpoint or str(DEFAULT_CHECKPOINT)
    start = read_metadata(init)[1]
    keep = ("diffusion_training", "rank_training", "backbone_weights")
    threads = torch.get_num_threads()
    hours = None if feature_seconds is None else round((feature_seconds + train_seconds) * threads / 3600, 3)
    return {"trained": True, "stage": "heads-probe", "init": init, "init_weights": weights_digest(init)[:16],
            **{k: start.get(k) for k in keep},
            "init_stage": start.get("stage"), "init_command": start.get("command"),
            "init_heads_probe": start.get("heads_probe"), "init_compute": start.get("compute"),
            "heads_probe": {**vars(args), "epoch": epoch},
            "compute": {"feature_seconds": feature_seconds, "train_seconds": round(train_seconds),
                        "threads": threads, "cpu_core_hours": hours},
            "command": shlex.join(["python", "scripts/heads_probe.py", *sys.argv[1:]])}


def train(a: Assessor, series: list[Series], held: list[Series], args, start: ProbeLevels,
          mos: Crops | None = None, mos_held: Crops | None = None, feature_seconds: float | None = None) -> None:
    """`args.epochs` epochs of hinge + anchor (+ pseudo-MOS regression on `mos`) on the heads, the levels test
    (and the SRCC on `mos_held`) after each; with `args.save`, the model of each epoch that `passes` on the held-out
    photos is saved as a checkpoint."""
    m = a.model
    for p in m.parameters():
        p.requires_grad_(False)
    params = [p for h in (m.vcg, m.vda) for p in h.parameters()]
    for p in params:
        p.requires_grad_(True)
    m.eval()
    with torch.no_grad():
        anchors = [heads(a, s.vcg.flatten(0, 1), s.vda.flatten(0, 1)) for s in series]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    n = LEVELS + 1
    better, worse = zip(*[(i, j) for i in range(n) for j in range(i + 1, n)])
    better, worse = torch.tensor(better), torch.tensor(worse)
    weight = torch.where(better == 0, args.clean_weight, 1.0)
    gen = torch.Generator().manual_seed(args.seed)
    trained = 0.0
    for epoch in range(args.epochs):
        m.vcg.train(), m.vda.train()
        order, t0 = torch.randperm(len(series), generator=gen).tolist(), time.time()
        steps = range(0, len(order), args.series_per_batch)
        for b in progress_bar(steps, desc=f"epoch {epoch + 1}", unit="step", file=sys.stdout):
            idx = order[b:b + args.series_per_batch]
            s, f = heads(a, torch.cat([series[i].vcg.flatten(0, 1) for i in idx]),
                         torch.cat([series[i].vda.flatten(0, 1) for i in idx]))
            rank = 0.0
            for v in s.split([series[i].vda.shape[:2].numel() for i in idx]):  # photos differ in tile count K
                diff = v.view(n, -1)[better] - v.view(n, -1)[worse]  # (pairs, K)
                rank = rank + (weight[:, None] * F.relu(args.margin - diff)).mean() / weight.mean() / len(idx)
            anchor = (F.mse_loss(s, torch.cat([anchors[i][0] for i in idx]))
                      + F.mse_loss(f, torch.cat([anchors[i][1] for i in idx])))
            loss = rank + args.anchor * anchor
            if mos is not None:
                j = torch.randint(len(mos.mos), (args.mos_batch,), generator=gen)
                loss = loss + args.mos_weight * F.mse_loss(heads(a, mos.vcg[j], mos.vda[j])[0], mos.mos[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained += time.time() - t0
        print(f"epoch {epoch + 1}: {time.time() - t0:.0f} s", flush=True)
        levels(a, series, f"epoch {epoch + 1}, training photos")
        r = levels(a, held, f"epoch {epoch + 1}, {args.part} photos")
        if mos_held is not None:
            crop_srcc(a, mos_held, f"epoch {epoch + 1}, {args.part} crops")
        if args.save and passes(r, start, args):
            where = save_checkpoint(m, Path(args.save) / f"epoch-{epoch + 1}",
                                    card(args, epoch + 1, feature_seconds, trained))
            print(f"saved {where}", flush=True)


def add_probe_options(p: argparse.ArgumentParser, cache: str, anchor: float) -> None:
    """The options the heads and stage probes share: photos and split, feature cache, start, training series, loss."""
    p.add_argument("--photos", required=True)
    p.add_argument("--part", default="val", help="held-out part to test on (val or test)")
    p.add_argument("--ratios", default="7:1:2", help="train:val:test split of the photos")
    p.add_argument("--cache", default=cache, help="folder for the cached features")
    p.add_argument("--checkpoint", default=None, help="default: the bundled default")
    p.add_argument("--train-seed", type=int, default=100, help="distortion seed of the training series")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate of the heads")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--margin", type=float, default=0.05)
    p.add_argument("--clean-weight", type=float, default=2.0)
    p.add_argument("--anchor", type=float, default=anchor)
    p.add_argument("--seed", type=int, default=0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_options(p, cache="runs/heads-probe", anchor=1.0)
    p.add_argument("--train-crops", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=0,
                   help="train on the first N training photos of the split only (0: all; only their features are "
                        "computed, a file a photo that runs with other N share): how the held-out result grows with "
                        "content")
    p.add_argument("--series-per-batch", type=int, default=6, help="series a step (1 with --train-crops 0)")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="save each epoch's model that passes (--min-gain, --min-other-gain) to DIR/epoch-N")
    p.add_argument("--min-gain", type=float, default=0.03,
                   help="save an epoch whose held-out plain-kind sum is this much above the start's")
    p.add_argument("--min-other-gain", type=float, default=0.0,
                   help="and, with --kinds beyond the plain ones, whose other kinds' mean rho is this much above")
    p.add_argument("--kinds", default="plain",
                   help="kinds of the series: plain, kadid, all or comma-separated names (see `iqa levels`)")
    p.add_argument("--skip-kinds", default="", help="comma-separated kinds left out of --kinds")
    p.add_argument("--held-crops", type=int, default=TILE,
                   help=f"crops per held-out image ({TILE}: whole-image tiles, as `iqa levels --crops 0`)")
    p.add_argument("--mos", default=None, metavar="DIR",
                   help="synth folder of the training photos' crops: regress to their pseudo-MOS")
    p.add_argument("--mos-val", default=None, metavar="DIR",
                   help="synth folder of the held-out photos' crops: report the SRCC on them")
    p.add_argument("--mos-weight", type=float, default=1.0)
    p.add_argument("--mos-batch", type=int, default=32, help="pseudo-MOS crops a step")
    args = p.parse_args()
    try:
        skip = set(parse_kinds(args.skip_kinds)) if args.skip_kinds else set()
        kinds = [k for k in (list(PLAIN_KINDS) if args.kinds == "plain" else parse_kinds(args.kinds)) if k not in skip]
    except ValueError as err:
        p.error(str(err))
    if not kinds:
        p.error(f"--skip-kinds {args.skip_kinds} leaves none of --kinds {args.kinds}")
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    a = load(args.checkpoint, device="cpu", fold_batchnorm=False)
    cache = Path(args.cache) / frozen_digest(args.checkpoint or DEFAULT_CHECKPOINT)[:16]
    synth = {"mos": args.mos, "mos_val": args.mos_val}
    held_name = "tiles" if args.held_crops == TILE else f"crops{args.held_crops}"
    paths = {"train": cache / f"train-crops{args.train_crops}-seed{args.train_seed}{kinds_tag(kinds)}.pt",
             "held": cache / f"{args.part}-{held_name}-seed0{kinds_tag(kinds)}.pt",
             **{k: cache / f"mos-{_label_digest(d)}.pt" for k, d in synth.items() if d}}
    train_photos = held_out_photos(args.photos, "train", args.ratios)[:args.train_limit or None]
    held_photos = held_out_photos(args.photos, args.part, args.ratios)
    if args.train_limit:
        print(f"training on {len(train_photos)} photos: {', '.join(p.name for p in train_photos)}", flush=True)
    series = build(a, train_photos, kinds, args.train_crops, args.train_seed, paths["train"])
    held = build(a, held_photos, kinds, args.held_crops, 0, paths["held"])
    mos, mos_held = (build_crops(a, d, paths[k]) if d else None for k, d in synth.items())
    files = [*cache_files(paths["train"], train_photos), *cache_files(paths["held"], held_photos),
             *(paths[k] for k, d in synth.items() if d)]
    levels(a, series, "start, training photos")
    start = levels(a, held, f"start, {args.part} photos")
    if mos_held is not None:
        crop_srcc(a, mos_held, f"start, {args.part} crops")
    train(a, series, held, args, start, mos, mos_held, cache_seconds(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
