"""Does freeing the backbone's last stage carry the levels order to unseen photos? A fine-tune on cached features.

Every heads-only fine-tune so far (`scripts/heads_probe.py`) fits the training photos and moves the held-out
ones little; what is left looks to be in the backbone. This probe trains the VCG backbone's last stage (for
EfficientNet-Lite0 blocks 5-6, 2.3 M of its 4.7 M weights, at stride 32) together with the VCG and VDA heads,
BatchNorm statistics frozen, on the same levels series and loss as the heads probe: the hinge over every ordered
pair of a series (per tile position) and an anchor to the start's own crop and patch scores. The diffusion and
the earlier stages stay frozen, so their outputs are computed once and cached: for every tile and state, the
selected maps of the earlier stages at the token grid, their channel statistics (the VDA input), and the map
that enters the last stage; each step then runs only the last stage and the heads.

    python scripts/stage_probe.py --photos ../shared/pristine --cache runs/stage-probe --train-photos 10 \
      --epochs 3 --save runs/stage4

Held-out photos (`--part`) are whole-image tiles with noise seed 0, the same images and states as `python -m iqa
levels --crops 0 --noise-seed 0`; training photos are tiles too, distortion seed `--train-seed`. After each
epoch it prints the levels test on the held-out photos; with `--save` an epoch whose held-out sum (mean rho +
adjacent + clean above level 1) is `--min-gain` above the start's is saved as a checkpoint, and the training
state every `--state-every` steps, so a stopped run resumes with the same command. Features: one file a photo
(about 150 MB), resumable too. Nothing here changes the bundled model.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from heads_probe import LEVELS, _sum, add_probe_options, frozen_digest  # noqa: E402

from iqa.assess import DEFAULT_CHECKPOINT, TILE, Assessor, crop_boxes, load, to_tensor  # noqa: E402
from iqa.backbones import map_statistics  # noqa: E402
from iqa.checkpoint import read_metadata, save_checkpoint  # noqa: E402
from iqa.data.stream import held_out_photos  # noqa: E402
from iqa.images import load_image  # noqa: E402
from iqa.levels import PLAIN_KINDS, MethodLevels, distorted, series_result, summarise, weights_digest  # noqa: E402
from iqa.progress import progress_bar  # noqa: E402
from iqa.vcg import to_grid  # noqa: E402

STATE_FILE = "state.pt"


@dataclass
class StageSeries:
    """One (photo, kind) series (clean + 5 levels, K tiles, 4 states x, y0, y1, y2) as the last stage sees it."""

    photo: str
    kind: str
    fixed: torch.Tensor  # (6, K, C_fixed, g, g) float16: the VCG selection's maps of the frozen stages
    stats: torch.Tensor  # (6, K, 4, D_fixed) the frozen stages' channel means and stds (VDA input)
    enter: torch.Tensor  # (6, K, 4, C_in, h, w) float16: the map entering the last stage
    score0: torch.Tensor | None = None  # (6, K) the start's crop scores (the anchor; `anchor`)
    patch0: torch.Tensor | None = None  # (6, K, g, g) the start's VCG patch scores


class LastStage:
    """The VCG backbone split at the entry of its last intermediate: `tail` (trainable) maps the cached entry to the
    last map; `assemble` puts the VCG and VDA inputs together in the order the heads expect."""

    def __init__(self, a: Assessor):
        m = a.model
        if m.vda_backbone is not None or not m.cfg.use_vcg or not m.cfg.use_vda:
            raise SystemExit("stage_probe needs both branches on one shared backbone (the lite preset)")
        bb = m.backbone
        if not hasattr(bb.model, "stage_ends"):
            raise SystemExit(f"stage_probe knows timm EfficientNet-style backbones, not {bb.cfg.name}")
        idx = bb.indices
        self.model = m
        self.last = len(idx) - 1  # position of the trainable map in the config's indices
        ends = bb.model.stage_ends
        self.tail = nn.Sequential(*bb.model.blocks[ends[idx[-2]]:ends[idx[-1]]])
        self.selection = m.vcg.selection
        self.grid = m.cfg.vcg.grid

    def fixed_maps(self, maps: list[torch.Tensor], b: int) -> torch.Tensor:
        """Intermediates (4B, C_i, H_i, W_i) of every state -> (B, C_fixed, g, g), the selection less the last map."""
        per_state = [[mi.view(b, 4, *mi.shape[1:])[:, s] for mi in maps] for s in range(4)]
        return torch.cat([to_grid(per_state[s][i], self.grid) for s, sel in enumerate(self.selection)
                          for i in sel if i != self.last], dim=1)

    def assemble(self, fixed: torch.Tensor, stats: torch.Tensor, enter: torch.Tensor):
        """fixed (B, C_fixed, g, g), stats (B, 4, D_fixed), enter (B, 4, C_in, h, w) -> VCG (B, C_sel, g, g), VDA
        (B, 4, D) inputs, with the last stage run on `enter`."""
        b = fixed.shape[0]
        out = self.tail(enter.flatten(0, 1).float())  # (4B, C_last, h', w')
        vda = torch.cat([stats.float(), map_statistics([out]).view(b, 4, -1)], dim=2)
        last = out.view(b, 4, *out.shape[1:])
        parts, at = [], 0
        sizes = self.model.backbone.channels
        for s, sel in enumerate(self.selection):
            for i in sel:
                if i == self.last:
                    parts.append(to_grid(last[:, s], self.grid))
                else:
                    parts.append(fixed[:, at:at + sizes[i]].float())
                    at += sizes[i]
        return torch.cat(parts, dim=1), vda

    def scores(self, fixed, stats, enter) -> tuple[torch.Tensor, torch.Tensor]:
        """(crop scores (B,), VCG patch scores (B, g, g))."""
        vcg, vda = self.assemble(fixed, stats, enter)
        s1, f1, _ = self.model.vcg(vcg)
        s2, _, _ = self.model.vda(vda)
        return self.model.cfg.vcg_weight * s1 + self.model.cfg.vda_weight * s2, f1


def features(a: Assessor, stage: LastStage, img) -> dict[str, torch.Tensor]:
    """The cached parts of one image's tiles (noise seed 0)."""
    h, w = img.shape[:2]
    boxes = crop_boxes(w, h, a.cfg.crop, TILE, a.cell)
    m = a.model
    with torch.inference_mode():
        states, _ = a.restore(to_tensor(img), boxes, None, 0)
        crops = torch.stack([torch.stack([s[0, :, y0:y1, x0:x1] for s in states]) for x0, y0, x1, y1 in boxes])
        x, _ = m.backbone_input(crops)
        maps = m.backbone.model.forward_intermediates(x, indices=m.backbone.indices, intermediates_only=True)
        k = len(boxes)
        fixed = stage.fixed_maps(maps, k).half()
        stats = map_statistics(maps[:-1]).view(k, 4, -1)
        enter = maps[-2].view(k, 4, *maps[-2].shape[1:]).half()
    return dict(fixed=fixed, stats=stats, enter=enter)


def anchor(stage: LastStage, series: list[StageSeries]) -> None:
    """Set every series' anchor: the start's crop and patch scores on the cached (float16) features, as training
    sees them. Computed from the loaded checkpoint, so one cache serves any start with the same frozen stages."""
    stage.model.eval()
    with torch.no_grad():
        for s in progress_bar(series, desc="anchors", unit="series", file=sys.stdout):
            score, patch = stage.scores(s.fixed.flatten(0, 1), s.stats.flatten(0, 1), s.enter.flatten(0, 1))
            s.score0, s.patch0 = score.view(s.fixed.shape[:2]), patch.view(*s.fixed.shape[:2], *patch.shape[1:])


def build(a: Assessor, stage: LastStage, photos: list[tuple[int, Path]], seed: int,
          folder: Path) -> tuple[list[StageSeries], float]:
    """The plain-kind series of `photos` (place in the split, path; distortion seed `seed`), from `folder` (one file
    a photo, named by its place) where cached, else computed and saved photo by photo; and the seconds their
    features took (recorded beside each file)."""
    out, seconds, t0 = [], 0.0, time.time()
    for n, (pi, p) in enumerate(photos):
        path = folder / f"{pi:03d}-{p.name}.pt"
        if not path.is_file():
            t1, img = time.time(), load_image(p).array
            clean, mine = features(a, stage, img), []
            for kind in PLAIN_KINDS:
                items = [clean] + [features(a, stage, distorted(img, kind, lv, seed, pi))
                                   for lv in range(1, LEVELS + 1)]
                mine.append(dict(photo=p.name, kind=kind, **{k: torch.stack([d[k] for d in items]) for k in clean}))
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(mine, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            path.with_suffix(".json").write_text(json.dumps({"seconds": round(time.time() - t1),
                                                             "threads": torch.get_num_threads()}))
            print(f"{folder.name}: {n + 1}/{len(photos)} photos, {time.time() - t0:.0f} s", flush=True)
        out += [StageSeries(**d) for d in torch.load(path, weights_only=True)]
        seconds += json.loads(path.with_suffix(".json").read_text())["seconds"]
    return out, seconds


def levels(stage: LastStage, series: list[StageSeries], name: str) -> MethodLevels:
    """The levels test on cached features (image score = mean of its tiles') and one printed line."""
    stage.model.eval()
    with torch.no_grad():
        res = [series_result(s.photo, s.kind, [float(v) for v in stage.scores(
            s.fixed.flatten(0, 1), s.stats.flatten(0, 1), s.enter.flatten(0, 1))[0].view(LEVELS + 1, -1).mean(1)])
            for s in series]
    r = summarise(name, res)
    print(f"{name}: mean rho {r.rho:.3f}, adjacent {r.adjacent:.3f}, clean above level 1 {r.clean_above_level1:.3f}, "
          f"sum {_sum(r):.3f}; " + ", ".join(f"{k} {v:.3f}" for k, v in r.per_kind.items()), flush=True)
    return r


def card(args, epoch: int, seconds: float) -> dict:
    """The saved checkpoint's model card: the start's training history, then this fine-tune and its compute."""
    init = args.checkpoint or str(DEFAULT_CHECKPOINT)
    start = read_metadata(init)[1]
    keep = ("diffusion_training", "rank_training", "backbone_weights")
    threads = torch.get_num_threads()
    return {"trained": True, "stage": "stage-probe", "init": init, "init_weights": weights_digest(init)[:16],
            **{k: start.get(k) for k in keep},
            "init_stage": start.get("stage"), "init_command": start.get("command"),
            "init_heads_probe": start.get("heads_probe"), "init_compute": start.get("compute"),
            "stage_probe": {**vars(args), "epoch": epoch},
            "compute": {"seconds": round(seconds), "threads": threads,
                        "cpu_core_hours": round(seconds * threads / 3600, 3)},
            "command": shlex.join(["python", "scripts/stage_probe.py", *sys.argv[1:]])}


def trainables(stage: LastStage) -> dict[str, nn.Module]:
    return {"tail": stage.tail, "vcg": stage.model.vcg, "vda": stage.model.vda}


def train(stage: LastStage, series: list[StageSeries], held: list[StageSeries], args, start: MethodLevels,
          build_seconds: float) -> None:
    """`args.epochs` epochs of hinge + anchor on the last stage and the heads, one series a step; the held-out
    levels after each epoch; the state saved every `args.state_every` steps and resumed from `args.save`."""
    m = stage.model
    m.requires_grad_(False)
    mods = trainables(stage)
    for name, mod in mods.items():
        mod.requires_grad_(name != "tail" or args.stage_lr > 0)  # --stage-lr 0: the heads alone, same features
    opt = torch.optim.AdamW([{"params": stage.tail.parameters(), "lr": args.stage_lr},
                             {"params": [p for k in ("vcg", "vda") for p in mods[k].parameters()], "lr": args.lr}],
                            weight_decay=args.weight_decay)
    n = LEVELS + 1
    better, worse = (torch.tensor(t) for t in zip(*[(i, j) for i in range(n) for j in range(i + 1, n)]))
    weight = torch.where(better == 0, args.clean_weight, 1.0)
    gen = torch.Generator().manual_seed(args.seed)
    state_path = Path(args.save) / STATE_FILE if args.save else None
    st = {"epoch": 0, "step": 0, "order": None, "seconds": 0.0}
    if state_path is not None and state_path.is_file():
        saved = torch.load(state_path, weights_only=True)
        for k, mod in mods.items():
            mod.load_state_dict(saved[k])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        st = {k: saved[k] for k in st}
        print(f"resumed from {state_path}: epoch {st['epoch'] + 1}, step {st['step']}", flush=True)

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({**{k: mod.state_dict() for k, mod in mods.items()}, "opt": opt.state_dict(),
                    "gen": gen.get_state(), **st}, tmp)
        tmp.replace(state_path)

    while st["epoch"] < args.epochs:
        if st["order"] is None:
            st["order"] = torch.randperm(len(series), generator=gen).tolist()
        stage.tail.eval()  # BatchNorm statistics frozen (and no drop-path)
        m.vcg.train(), m.vda.train()
        t0 = time.time()
        steps = progress_bar(range(st["step"], len(series)), desc=f"epoch {st['epoch'] + 1}", unit="step",
                             file=sys.stdout)
        for b in steps:
            s = series[st["order"][b]]
            k = s.fixed.shape[1]
            pos = torch.randperm(k, generator=gen)[:args.tiles] if args.tiles else torch.arange(k)
            score, patch = stage.scores(s.fixed[:, pos].flatten(0, 1), s.stats[:, pos].flatten(0, 1),
                                        s.enter[:, pos].flatten(0, 1))
            v = score.view(n, -1)
            diff = v[better] - v[worse]  # (pairs, tiles)
            rank = (weight[:, None] * F.relu(args.margin - diff)).mean() / weight.mean()
            anchor = (F.mse_loss(score, s.score0[:, pos].flatten())
                      + F.mse_loss(patch, s.patch0[:, pos].flatten(0, 1)))
            loss = rank + args.anchor * anchor
            opt.zero_grad()
            loss.backward()
            opt.step()
            st["step"] = b + 1
            if state_path is not None and (b + 1) % args.state_every == 0:
                st["seconds"] += time.time() - t0
                t0 = time.time()
                save_state()
        st["seconds"] += time.time() - t0
        st["epoch"] += 1
        st["step"], st["order"] = 0, None
        epoch = st["epoch"]
        r = levels(stage, held, f"epoch {epoch}, {args.part} photos")
        if args.save:
            if _sum(r) >= _sum(start) + args.min_gain:
                where = save_checkpoint(m, Path(args.save) / f"epoch-{epoch}",
                                        card(args, epoch, build_seconds + st["seconds"]))
                print(f"saved {where}", flush=True)
            with (Path(args.save) / "levels.jsonl").open("a") as f:
                f.write(json.dumps({"epoch": epoch, "rho": r.rho, "adjacent": r.adjacent,
                                    "clean_above_level1": r.clean_above_level1, "per_kind": r.per_kind}) + "\n")
            save_state()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_options(p, cache="runs/stage-probe", anchor=0.3)
    p.add_argument("--train-photos", type=int, default=0,
                   help="train on N photos spread evenly over the training part (0: all of them)")
    p.add_argument("--stage-lr", type=float, default=2e-5,
                   help="learning rate of the backbone's last stage (0: the heads alone)")
    p.add_argument("--tiles", type=int, default=0, help="tile positions of a series a step (0: all)")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="save the training state (resumable) and each epoch's model that passes --min-gain to DIR")
    p.add_argument("--state-every", type=int, default=20, help="steps between saves of the training state")
    p.add_argument("--min-gain", type=float, default=0.03,
                   help="save an epoch whose held-out sum is this much above the start's")
    p.add_argument("--build-only", action="store_true", help="compute the features and stop")
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    a = load(args.checkpoint, device="cpu", fold_batchnorm=False)
    stage = LastStage(a)
    cache = Path(args.cache) / frozen_digest(args.checkpoint or DEFAULT_CHECKPOINT)[:16]
    folders = {"train": cache / f"train-seed{args.train_seed}", "held": cache / f"{args.part}-seed0"}
    held, held_s = build(a, stage, list(enumerate(held_out_photos(args.photos, args.part, args.ratios))), 0,
                         folders["held"])
    train_photos = list(enumerate(held_out_photos(args.photos, "train", args.ratios)))
    if args.train_photos:
        keep = np.unique(np.linspace(0, len(train_photos) - 1, args.train_photos).round().astype(int))
        train_photos = [train_photos[i] for i in keep]
        print(f"training on {len(train_photos)} photos: {', '.join(p.name for _, p in train_photos)}", flush=True)
    series, train_s = build(a, stage, train_photos, args.train_seed, folders["train"])
    if args.build_only:
        return 0
    start = levels(stage, held, f"start, {args.part} photos")
    anchor(stage, series)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    train(stage, series, held, args, start, held_s + train_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
