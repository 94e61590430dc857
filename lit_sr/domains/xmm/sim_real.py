"""Simulated XMM fields against the real 20 ks EPIC-pn images: one table, one figure.

    python -m lit_sr.domains.xmm.sim_real --data ../shared/data/xmm_real \
        --sim default=data/xmm/sim_v1_seed0_400-50-50_0692e947 --sim wide=data/xmm_wide/<folder> \
        --out docs --name xmm_sim_to_real

Every image (real 20 ks slice or simulated 20 ks validation input) is measured the same way: counts on the
exposed pixels of its detector mask with a flat exposure T x mask (the real files carry no exposure map, so the
simulated exposure maps' vignetting is not used either). The mask: the real files' estimate
(:func:`lit_sr.domains.xmm.fits_io.estimate_detector_mask` on the whole observation); the simulated default's
``exposure > 0`` (its FOV edge and chip gaps); the ``epn_detxy`` layout's shipped pn mask (whose out-of-FOV
corners get particles only, as in the real images). Statistics (pooled over the images of a set):

* those of :func:`lit_sr.domains.xmm.real.image_statistics` (counts-per-pixel histogram, flat background by
  the source-clipped estimate, 5-sigma peaks against it and their net counts, area above 3x background,
  counts above the background);
* ``unexposed_fraction``: pixels of the image outside the mask (chip gaps, dead rows/columns, FOV edge);
* ``outside_fov_rate``: counts/s/arcmin^2 of the exposed pixels more than ``fov_radius_arcmin`` + 1' from the
  image centre (the particle background; NaN without such pixels);
* the point-source count distribution N(> C) per deg^2 of 5-sigma detections against a *local* background
  (the counts smoothed by a Gaussian of ``LOCAL_BKG_SIGMA_PX``, exposure-normalised), so that extended
  emission is background and its noise peaks are not counted as sources, for C = 20, 50, 200 net counts in a
  3-pixel radius.

The histogram distance of a simulated set to the real images is the mean over the real images of the total
variation distance 0.5 sum |p_sim - p_real| of the counts-per-pixel histograms (bins of :data:`COUNT_BINS`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.io import fits
from scipy import ndimage

from lit_sr.domains.xmm.photometry import detect_sources, point_source_fwhm
from lit_sr.domains.xmm.real import RealPair, image_statistics, load_pairs
from lit_sr.domains.xmm.sim import MARKER_NAME, XMMSimConfig, epn_detxy_mask, product_tags

LOCAL_BKG_SIGMA_PX = 10.0  # Gaussian width of the local background of the point-source counts (4 px sources)
NET_COUNT_LEVELS = (20, 50, 200)
FOV_RADIUS_ARCMIN = 13.75
HIST_LABELS = ("0", "1", "2", "3-5", "6-20", "21-40", ">40")
FWHM_MIN_COUNTS = 100.0
FWHM_COMPACT_ARCSEC = 20.0


def local_background_detections(
    counts: np.ndarray, live: np.ndarray, significance: float = 5.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(net counts, positions xy, local background) of the ``significance`` detections of a counts image against
    its local background (Gaussian-smoothed counts over the smoothed mask); net counts in a 3-pixel radius."""
    c = np.where(live, counts, 0.0).astype(np.float64)
    norm = ndimage.gaussian_filter(live.astype(np.float64), LOCAL_BKG_SIGMA_PX)
    bkg = np.where(live, ndimage.gaussian_filter(c, LOCAL_BKG_SIGMA_PX) / np.maximum(norm, 1e-6), 0.0)
    pos, _ = detect_sources(c, bkg, significance)
    disk = (np.hypot(*np.mgrid[-3:4, -3:4]) <= 3.0).astype(np.float64)
    net = ndimage.convolve(c - bkg, disk, mode="constant")
    return np.array([net[int(round(y)), int(round(x))] for x, y in pos]), np.asarray(pos).reshape(-1, 2), bkg


def compact_fwhm_arcsec(counts: np.ndarray, live: np.ndarray, pixel_arcsec: float) -> float:
    """Median FWHM (arcsec; King beta 1.5 fit, :func:`photometry.point_source_fwhm`) of the detections with
    >= ``FWHM_MIN_COUNTS`` net counts, >= 6 pixels from unexposed pixels, whose fit is < ``FWHM_COMPACT_ARCSEC``
    (point sources; knots of extended emission fit wider); NaN without any."""
    net, pos, _ = local_background_detections(counts, live)
    far = ndimage.minimum_filter(live.astype(np.uint8), 13) > 0
    sel = [(x, y) for (x, y), n in zip(pos, net) if n >= FWHM_MIN_COUNTS and far[int(round(y)), int(round(x))]]
    if not sel:
        return float("nan")
    fw = point_source_fwhm(np.where(live, counts, 0.0), np.array(sel), box=11, pixel_arcsec=pixel_arcsec)
    fw = fw[np.isfinite(fw) & (fw < FWHM_COMPACT_ARCSEC)]
    return float(np.median(fw)) if fw.size else float("nan")


def statistics(
    counts: Sequence[np.ndarray], live: Sequence[np.ndarray], exposure_s: float, pixel_arcsec: float
) -> dict:
    """The module doc's statistics of a set of images (pooled)."""
    exps = [m.astype(np.float64) * exposure_s for m in live]
    out: dict[str, Any] = dict(image_statistics(counts, exps, pixel_arcsec))
    pix_arcmin2 = (pixel_arcsec / 60.0) ** 2
    out["unexposed_fraction"] = float(np.mean([1.0 - m.mean() for m in live]))
    n_out = c_out = 0.0
    nets: list[np.ndarray] = []
    area_deg2 = 0.0
    for c, m in zip(counts, live):
        h, w = c.shape
        yy, xx = np.mgrid[:h, :w]
        r_arcmin = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2) * pixel_arcsec / 60.0
        far = m & (r_arcmin > FOV_RADIUS_ARCMIN + 1.0)
        n_out += far.sum()
        c_out += c[far].sum()
        nets.append(local_background_detections(c, m)[0])
        area_deg2 += m.sum() * pix_arcmin2 / 3600.0
    out["outside_fov_rate"] = float(c_out / (n_out * pix_arcmin2 * exposure_s)) if n_out else float("nan")
    net = np.concatenate(nets) if nets else np.zeros(0)
    for level in NET_COUNT_LEVELS:
        out[f"n_above_{level}_per_deg2"] = float((net >= level).sum() / area_deg2)
    out["histogram"] = [out[f"frac_pixels_{lab}"] for lab in HIST_LABELS]
    out["compact_fwhm_arcsec"] = (
        compact_fwhm_arcsec(counts[0], live[0], pixel_arcsec) if len(counts) == 1 else float("nan")
    )
    out["net_counts"] = np.sort(net).tolist()
    out["area_deg2"] = area_deg2
    return out


def per_image(counts: Sequence[np.ndarray], live: Sequence[np.ndarray], exposure_s: float, pixel_arcsec: float) -> dict:
    """{statistic: [value per image]} plus the pooled net counts and area (for N(> C) curves)."""
    rows = [statistics([c], [m], exposure_s, pixel_arcsec) for c, m in zip(counts, live)]
    out: dict[str, Any] = {k: [r[k] for r in rows] for k in rows[0] if k not in ("net_counts", "histogram")}
    out["histogram"] = np.mean([r["histogram"] for r in rows], axis=0).tolist()
    out["net_counts"] = np.sort(np.concatenate([r["net_counts"] for r in rows])).tolist()
    out["area_deg2_total"] = float(sum(r["area_deg2"] for r in rows))
    return out


def histogram_distance(a: dict, b: dict) -> float:
    """Total-variation distance 0.5 sum |p_a - p_b| of two sets' mean counts-per-pixel histograms."""
    return float(0.5 * np.abs(np.asarray(a["histogram"]) - np.asarray(b["histogram"])).sum())


def read_simulated(root: str | Path, split: str = "val", limit: int | None = None) -> tuple[list, list, float, float]:
    """(counts, masks, exposure s, pixel arcsec) of the 20 ks inputs of a simulated dataset's ``split``."""
    root = Path(root)
    meta = json.loads((root / MARKER_NAME).read_text())
    config = XMMSimConfig.from_json(meta["config"])
    folder = root / split / product_tags(config)["input"]
    files = sorted(folder.glob("*.fits"))[:limit]
    if not files:
        raise FileNotFoundError(f"{folder}: no simulated inputs (expected field_*.fits)")
    counts, masks = [], []
    for f in files:
        with fits.open(f) as h:
            c = np.asarray(h[0].data, np.float64)
            e = np.asarray(h["EXPOSURE"].data, np.float64)
        m = epn_detxy_mask(config.lr_size) if config.detector_layout == "epn_detxy" else e > 0
        counts.append(c)
        masks.append(m)
    return counts, masks, config.exposure_input_ks * 1e3, config.pixel_arcsec


ROWS = (  # label, key, format
    ("field (pixels a side)", "field_px", ".0f"),
    ("pixel (arcsec)", "pixel_arcsec", ".2f"),
    ("unexposed pixels (gaps, edges)", "unexposed_fraction", ".3f"),
    ("mean counts per exposed pixel", "mean_counts_per_pixel", ".3f"),
    *[(f"pixels with {lab} counts", f"frac_pixels_{lab}", ".3f") for lab in HIST_LABELS],
    ("background inside the FOV (counts/s/arcmin^2)", "background_per_arcmin2_s", ".2e"),
    ("rate outside the FOV (counts/s/arcmin^2)", "outside_fov_rate", ".2e"),
    *[
        (f"point sources >= {v} net counts per deg^2 (local bkg)", f"n_above_{v}_per_deg2", ".0f")
        for v in NET_COUNT_LEVELS
    ],
    ("5-sigma peaks per deg^2 (flat bkg)", "detections_per_deg2", ".0f"),
    (f"FWHM of compact detections >= {FWHM_MIN_COUNTS:.0f} net counts (arcsec)", "compact_fwhm_arcsec", ".1f"),
    ("area brighter than 3x background", "bright_area_fraction", ".3f"),
    ("fraction of counts above the background", "source_count_fraction", ".3f"),
)
LOG_KEYS = {"mean_counts_per_pixel", "background_per_arcmin2_s", "outside_fov_rate", "detections_per_deg2"} | {
    f"n_above_{v}_per_deg2" for v in NET_COUNT_LEVELS
}


def distance(key: str, value: float, reference: float) -> float:
    """Distance of a simulated set's median statistic to the real images' median: |log10 ratio| for rates and
    densities, the absolute difference for fractions and sizes."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return float("nan")
    if key in LOG_KEYS:
        return abs(math.log10(max(value, 1e-12) / max(reference, 1e-12)))
    return abs(value - reference)


def _median(values: Sequence[float]) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _cell(values: Sequence[float], fmt: str) -> str:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return "–"
    if v.min() == v.max():
        return format(v[0], fmt)
    return f"{format(float(np.median(v)), fmt)} ({format(v.min(), fmt)} - {format(v.max(), fmt)})"


def comparison_table(sims: dict[str, dict], real: dict) -> str:
    """Rows: statistics; columns: real and each simulated set as median (min - max) over the images, and,
    for two simulated sets, whether the second one's median is closer to the real median."""
    names = list(sims)
    head = ["statistic (20 ks, per image)", f"real ({len(real['field_px'])} ObsIDs)"]
    head += [f"{n} ({len(sims[n]['field_px'])} fields)" for n in names]
    if len(names) == 2:
        head.append(f"{names[1]} closer?")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in ROWS:
        cells = [label, _cell(real[key], fmt), *[_cell(sims[n][key], fmt) for n in names]]
        if len(names) == 2:
            ref = _median(real[key])
            d0, d1 = (distance(key, _median(sims[n][key]), ref) for n in names)
            if not (math.isfinite(d0) and math.isfinite(d1)):
                cells.append("–" if not math.isfinite(d1) else "yes (new)")
            else:
                cells.append("yes" if d1 < d0 else ("same" if d1 == d0 else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    dists = [histogram_distance(s, real) for s in sims.values()]
    cells = ["counts histogram (mean over images): TV distance to the real one", "0", *[f"{d:.3f}" for d in dists]]
    if len(names) == 2:
        cells.append("yes" if dists[1] < dists[0] else "**no**")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(sims: dict[str, dict], reals: dict[str, dict], examples: dict[str, np.ndarray], out_png: Path) -> Path:
    """Counts-per-pixel histograms, N(> net counts) of point sources, example images. ``reals``: one
    :func:`per_image` dict per ObsID (grey lines); ``sims``: one per simulated set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lit_sr.utils.atomic import atomic_path

    n_ex = len(examples)
    fig, axes = plt.subplots(1, 2 + n_ex, figsize=(4.2 * (2 + n_ex), 3.8))
    x = np.arange(len(HIST_LABELS))
    for name, st in reals.items():
        axes[0].plot(x, np.maximum(st["histogram"], 1e-6), color="0.6", lw=1)
        net = np.asarray(st["net_counts"])
        if net.size:
            axes[1].step(net[::-1], np.arange(1, net.size + 1) / st["area_deg2_total"], color="0.6", lw=1)
    colours = ["tab:blue", "tab:red", "tab:green"]
    for (name, st), col in zip(sims.items(), colours):
        axes[0].plot(x, np.maximum(st["histogram"], 1e-6), color=col, lw=2, label=f"simulated {name}")
        net = np.asarray(st["net_counts"])
        if net.size:
            axes[1].step(net[::-1], np.arange(1, net.size + 1) / st["area_deg2_total"], color=col, lw=2, label=name)
    axes[0].plot([], [], color="0.6", label="real 20 ks (6 ObsIDs)")
    axes[0].set_yscale("log")
    axes[0].set_xticks(x, HIST_LABELS)
    axes[0].set_xlabel("counts per exposed pixel (20 ks)")
    axes[0].set_ylabel("fraction of pixels")
    axes[0].legend(fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("net counts in 3 px (local background)")
    axes[1].set_ylabel("N(> counts) per deg$^2$")
    axes[1].set_title("5-sigma point-source detections", fontsize=9)
    for ax, (name, img) in zip(axes[2:], examples.items()):
        v = np.sqrt(np.clip(img, 0, None))
        ax.imshow(v, origin="lower", cmap="magma", vmin=0, vmax=max(float(np.percentile(v, 99.5)), 1.0))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out_png


def real_statistics(pairs: Sequence[RealPair]) -> tuple[dict, dict[str, dict]]:
    """(all six as one set, {ObsID: its own set}) of the real 20 ks slices."""
    per = {p.obsid: per_image([p.slice_counts], [p.mask], p.slice_exposure_s, p.pixel_arcsec) for p in pairs}
    together = {
        k: [v for st in per.values() for v in st[k]]
        for k in per[next(iter(per))]
        if isinstance(per[next(iter(per))][k], list) and k not in ("histogram", "net_counts")
    }
    together["histogram"] = np.mean([st["histogram"] for st in per.values()], axis=0).tolist()
    return together, per


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="real data folder (20ks/, full/)")
    ap.add_argument("--sim", action="append", required=True, help="label=simulated dataset folder (repeatable)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None, help="at most this many simulated fields per set")
    ap.add_argument("--out", default="docs", help="folder for <name>.md / .json and figures/<name>.png")
    ap.add_argument("--name", default="xmm_sim_to_real")
    ap.add_argument("--example", default="0781350101", help="real ObsID shown beside the simulated examples")
    args = ap.parse_args(argv)
    pairs = load_pairs(args.data)
    real, per_obsid = real_statistics(pairs)
    sims, examples = {}, {}
    ex_pair = next((p for p in pairs if p.obsid == args.example), pairs[0])
    examples[f"real {ex_pair.obsid} (20 ks)"] = ex_pair.slice_counts
    for spec in args.sim:
        label, _, root = spec.partition("=")
        counts, masks, t_s, pix = read_simulated(root, args.split, args.limit)
        sims[label] = per_image(counts, masks, t_s, pix)
        mean = np.array([c.sum() / max(m.sum(), 1) for c, m in zip(counts, masks)])
        typical = int(np.argsort(mean)[len(mean) // 2])
        examples[f"simulated {label}: median {args.split} field"] = counts[typical]
        if spec == args.sim[-1]:
            examples[f"simulated {label}: brightest {args.split} field"] = counts[int(np.argmax(mean))]
    table = comparison_table(sims, real)
    command = "python -m lit_sr.domains.xmm.sim_real " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:]
    )
    out = Path(args.out)
    png = figure(sims, per_obsid, examples, out / "figures" / f"{args.name}.png")
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    md = "\n".join([f"`{command}` ({date})", "", table, ""])
    (out / f"{args.name}.md").write_text(md)
    slim = lambda d: {k: v for k, v in d.items() if k != "net_counts"}  # noqa: E731
    (out / f"{args.name}.json").write_text(
        json.dumps(
            {
                "sims": {k: slim(v) for k, v in sims.items()},
                "real": {k: slim(v) for k, v in per_obsid.items()},
                "command": command,
                "date": date,
                "figure": str(png),
            },
            indent=1,
            default=float,
        )
    )
    print(md)
    return {"sims": sims, "real": real, "per_obsid": per_obsid, "table": table}


if __name__ == "__main__":
    main()
