"""Mean pseudo-MOS per distortion kind and level of a synthetic set: python scripts/synth_levels.py OUT/meta.csv"""
import csv
import sys
import numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
mos = np.array([float(r["mos"]) for r in rows])
print("percentiles 1/25/50/75/99:", " / ".join(f"{v:.2f}" for v in np.percentile(mos, [1, 25, 50, 75, 99])))
for kind in dict.fromkeys(r["distortion"] for r in rows):
    m = [np.mean([float(r["mos"]) for r in rows if r["distortion"] == kind and r["level"] == str(level)])
         for level in range(1, 6)]
    lo = min(float(r["mos"]) for r in rows if r["distortion"] == kind)
    print(f"| `{kind}` | " + " | ".join(f"{v:.2f}" for v in m) + f" | {lo:.2f} |")
seqs = {}
for r in rows:
    seqs.setdefault((r["ref"], r["distortion"]), {})[int(r["level"])] = float(r["mos"])
rising = sorted({k[1] for k, v in seqs.items() if any(v[b] > v[a] for a, b in zip(sorted(v), sorted(v)[1:]))})
n_rise = sum(any(v[b] > v[a] for a, b in zip(sorted(v), sorted(v)[1:])) for v in seqs.values())
print(f"{n_rise} of {len(seqs)} (crop, kind) sequences rise somewhere with the level; "
      f"kinds: {', '.join(rising) or 'none'}")
